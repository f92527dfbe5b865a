"""What the numbers were measured on: CPU, cores, GPU, driver, clocks, library versions and,
on a Jetson, the L4T release. Every field is read, never assumed; missing ones are None."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

LIBRARIES = ("slt-deploy", "torch", "onnxruntime", "onnxruntime-gpu", "onnx", "numpy", "tensorrt")


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text(errors="replace").strip("\x00 \n")
    except OSError:
        return None


def cpu_model() -> str | None:
    text = _read("/proc/cpuinfo") or ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Hardware", "Model"):
            return value.strip()
    return platform.processor() or None


def cpu_max_mhz() -> float | None:
    raw = _read("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")
    return int(raw) / 1000 if raw and raw.isdigit() else None


def library_versions() -> dict[str, str]:
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def gpu_record() -> dict | None:
    import torch

    if not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(0)
    record = {
        "name": props.name,
        "compute_capability": f"{props.major}.{props.minor}",
        "memory_bytes": props.total_memory,
        "cuda_runtime": torch.version.cuda,
    }
    record.update(_nvidia_smi())
    return record


def _nvidia_smi() -> dict:
    """Driver and clocks; absent on Jetson (no nvidia-smi there) and without the driver tools."""
    fields = "driver_version,clocks.sm,clocks.max.sm,clocks.mem,power.limit"
    try:
        out = subprocess.run(
            ["nvidia-smi", f"--query-gpu={fields}", "--format=csv,noheader,nounits", "-i", "0"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return {}
    if out.returncode != 0:
        return {}
    values = [v.strip() for v in out.stdout.strip().split(",")]
    keys = ("driver", "sm_clock_mhz", "sm_clock_max_mhz", "mem_clock_mhz", "power_limit_w")
    return dict(zip(keys, values, strict=False))


def machine_record(threads: int | None = None) -> dict:
    import torch

    from slt_deploy.bench.jetson import detect_jetson

    return {
        "hostname": platform.node(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu_model(),
        "cpu_max_mhz": cpu_max_mhz(),
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch_threads": threads or torch.get_num_threads(),
        "gpu": gpu_record(),
        "jetson": detect_jetson(),
        "libraries": library_versions(),
    }
