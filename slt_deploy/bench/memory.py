"""Peak memory of one artifact, measured in a fresh child process so that what other
artifacts allocated (and the allocator kept) cannot hide or inflate it.

CPU: peak resident set size (VmHWM, reset through /proc/self/clear_refs after the imports)
minus the RSS just before loading. CUDA: torch's allocator peak for the torch back-ends and
the NVML device-memory delta for the others (ORT and TensorRT allocate outside torch).
Run as `python -m slt_deploy.bench.memory '<json>'`; it prints one JSON line.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

PROBE_ITERATIONS = 5


def _status_kib(field: str) -> int | None:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    match = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) if match else None


def reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _nvml_used() -> int | None:
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        return int(pynvml.nvmlDeviceGetMemoryInfo(handle).used)
    except Exception:  # pynvml raises NVMLError subclasses; no NVML on Jetson
        return None


def _preload(backend: str) -> None:
    """Import the runtimes and touch torch's thread pool before the baseline: library code is
    not the artifact's memory."""
    import torch

    import slt_deploy.export.csr_format
    import slt_deploy.export.onnx_format  # noqa: F401

    if backend.startswith("ort"):
        from slt_deploy.runtimes import import_onnxruntime

        import_onnxruntime()
    torch.ones(64, 64) @ torch.ones(64, 64)


def probe(artifact: str, backend: str, options: dict, batch: int) -> dict:
    """Load and run one artifact here; the memory it took."""
    import torch

    from slt_deploy.bench.artifacts import inspect
    from slt_deploy.bench.runners import RunnerOptions, runner_for

    runner_options = RunnerOptions(**options)
    if runner_options.threads:
        torch.set_num_threads(runner_options.threads)
    runner = runner_for(inspect(artifact), backend, runner_options)
    _preload(backend)
    cuda = runner_options.device == "cuda"
    if cuda:
        torch.cuda.init()
        torch.cuda.reset_peak_memory_stats()
    nvml_before = _nvml_used() if cuda else None
    allocated_before = torch.cuda.memory_allocated() if cuda else 0
    exact = reset_peak_rss()
    rss_before = _status_kib("VmRSS")
    runner.activate()
    feed = runner.feed(batch)
    for _ in range(PROBE_ITERATIONS):
        runner.infer(feed)
    runner.synchronize()
    peak = _status_kib("VmHWM") if exact else None
    out = {
        "host_rss_peak_delta_bytes": None if peak is None else 1024 * (peak - rss_before),
        "method": "VmHWM - VmRSS (clear_refs)" if exact else "unavailable",
    }
    if cuda:
        out["cuda_allocator_peak_bytes"] = torch.cuda.max_memory_allocated() - allocated_before
        nvml_after = _nvml_used()
        if nvml_before is not None and nvml_after is not None:
            out["nvml_used_delta_bytes"] = nvml_after - nvml_before
    runner.deactivate()
    return out


def peak_memory_bytes(memory: dict, backend: str, device: str) -> int | None:
    """The one number the table shows; the record keeps every reading."""
    if device == "cpu":
        return memory.get("host_rss_peak_delta_bytes")
    if backend.startswith("torch"):
        return memory.get("cuda_allocator_peak_bytes")
    return memory.get("nvml_used_delta_bytes")


def probe_in_child(
    artifact: str, backend: str, options: dict, batch: int, timeout: float = 600
) -> dict:
    request = json.dumps(
        {"artifact": artifact, "backend": backend, "options": options, "batch": batch}
    )
    try:
        done = subprocess.run(
            [sys.executable, "-m", "slt_deploy.bench.memory", request],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"memory probe timed out after {timeout:.0f} s"}
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"memory probe failed: {tail}"}
    return json.loads(lines[-1])


def main(argv: list[str]) -> int:
    from slt_deploy.errors import SltError

    request = json.loads(argv[0])
    try:
        result = probe(
            request["artifact"], request["backend"], request["options"], request["batch"]
        )
    except SltError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
