"""`bench(request)`: every (artifact, back-end) pair, measured interleaved per batch size,
with memory from a child process each, power on Jetson, and ratios against the first pair."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

import torch

from slt_deploy.bench.artifacts import inspect
from slt_deploy.bench.jetson import TegrastatsSampler, require_jetson, summarise
from slt_deploy.bench.machine import machine_record
from slt_deploy.bench.memory import peak_memory_bytes, probe_in_child
from slt_deploy.bench.runners import RUNNERS, RunnerOptions, runner_for
from slt_deploy.bench.timing import TimingPolicy, latency_summary, measure_interleaved, warm_up
from slt_deploy.errors import SltError
from slt_deploy.export.formats import default_backend

DEVICES = ("cpu", "cuda", "jetson")


@dataclass(frozen=True)
class BenchRequest:
    artifacts: tuple[str, ...]
    backends: tuple[str, ...] = ()  # empty: each artifact's default back-end
    batch_sizes: tuple[int, ...] = (1,)
    device: str = "cpu"
    options: RunnerOptions = field(default_factory=RunnerOptions)
    policy: TimingPolicy = field(default_factory=TimingPolicy)
    memory: bool = True
    power_seconds: float = 2.0  # Jetson: tegrastats sampling per pair
    ort_spinning: bool | None = None  # None: on when only ONNX Runtime pairs are measured

    def validate(self) -> None:
        if not self.artifacts:
            raise SltError("give at least one artifact to bench")
        if self.device not in DEVICES:
            raise SltError(f"--device must be one of {', '.join(DEVICES)}")
        if not self.batch_sizes or min(self.batch_sizes) < 1:
            raise SltError("--batch-size takes positive integers, e.g. 1,32")
        for backend in self.backends:
            RUNNERS.get(backend)

    def to_dict(self) -> dict:
        """JSON-ready: what `bench --remote` sends, so the host runs exactly this request."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> BenchRequest:
        try:
            nested = {"options": RunnerOptions, "policy": TimingPolicy}
            fields = {
                key: nested[key](**value)
                if key in nested
                else tuple(value)
                if isinstance(value, list)
                else value
                for key, value in data.items()
            }
            return cls(**fields)
        except (TypeError, ValueError, AttributeError) as exc:
            raise SltError(f"not a bench request of this slt-deploy version: {exc}") from None


def pairs(request: BenchRequest) -> tuple[list[tuple], list[str]]:
    """(artifact, back-end) pairs to measure and notes on the pairs skipped: with an explicit
    --backend list, a back-end that cannot run an artifact's type, or not on this device, is
    skipped for it."""
    chosen, skipped = [], []
    device = "cpu" if request.device == "cpu" else "cuda"
    for path in request.artifacts:
        artifact = inspect(path)
        for backend in request.backends or (default_backend(artifact.kind),):
            runner = RUNNERS.get(backend)
            if artifact.kind not in runner.kinds:
                skipped.append(f"{backend} cannot run {artifact.label} ({artifact.kind})")
            elif device not in runner.devices:
                skipped.append(f"{backend} does not run on {device} ({artifact.label})")
            else:
                chosen.append((artifact, backend))
    if not chosen:
        raise SltError("no back-end given can run these artifacts: " + "; ".join(skipped))
    return chosen, skipped


def bench(request: BenchRequest, say: Callable[[str], None] = lambda _: None) -> list[dict]:
    request.validate()
    jetson = require_jetson() if request.device == "jetson" else None
    options = request.options
    if jetson is not None:
        options = replace(options, device="cuda")
        if options.sparse_engine and not jetson["sparse_tensor_cores"]:
            raise SltError(f"{jetson['model']} has no sparse tensor cores: 2:4 engines need Orin")
    if options.threads:
        torch.set_num_threads(options.threads)
    chosen, skipped = pairs(request)
    mixed = any(not backend.startswith("ort") for _, backend in chosen)
    if mixed and request.ort_spinning is None:
        options = replace(options, ort_spinning=False)
    elif request.ort_spinning is not None:
        options = replace(options, ort_spinning=request.ort_spinning)
    machine = machine_record(options.threads)
    runners = []
    for artifact, backend in chosen:
        say(f"loading {artifact.label} ({backend})")
        runner = runner_for(artifact, backend, options)
        runner.activate()
        runners.append(runner)
    records = []
    try:
        for batch in request.batch_sizes:
            feeds = [r.feed(batch) for r in runners]
            say(f"timing batch {batch}: {len(runners)} artifact/back-end pairs, interleaved")
            samples = measure_interleaved(list(zip(runners, feeds, strict=True)), request.policy)
            for runner, feed, times in zip(runners, feeds, samples, strict=True):
                record = _record(runner, batch, times, request, options, machine)
                if request.memory:
                    say(f"memory of {runner.artifact.label} ({runner.backend}) in a child process")
                    record["memory"] = probe_in_child(
                        str(runner.artifact.path), runner.backend, asdict(options), batch
                    )
                    record["peak_memory_bytes"] = peak_memory_bytes(
                        record["memory"], runner.backend, options.device
                    )
                if jetson is not None:
                    record["tegrastats"] = _power(runner, feed, batch, request, times.mean())
                    ram = record["tegrastats"].get("ram_delta_mb")
                    record["peak_memory_bytes"] = None if ram is None else ram * 2**20
                records.append(record)
    finally:
        for runner in runners:
            runner.deactivate()
    add_ratios(records)
    for record in records:
        record["skipped_pairs"] = skipped
    return records


def _power(runner, feed, batch: int, request: BenchRequest, latency_s: float) -> dict:
    """Only this runner runs while tegrastats samples, so power belongs to it."""
    with TegrastatsSampler() as idle:
        time.sleep(0.5)
    baseline = [s.ram_used_mb for s in idle.samples if s.ram_used_mb is not None]
    with TegrastatsSampler() as sampler:
        warm_up(runner, feed, request.power_seconds)
    out = summarise(sampler.samples, latency_s, batch)
    if baseline and "ram_used_mb_max" in out:
        out["ram_delta_mb"] = out["ram_used_mb_max"] - min(baseline)
    return out


def _record(runner, batch, times, request, options, machine) -> dict:
    latency = latency_summary(times)
    return {
        "artifact": str(runner.artifact.path),
        "artifact_kind": runner.artifact.kind,
        "backend": runner.backend,
        "device": request.device,
        "precision": options.precision,
        "batch_size": batch,
        "input_shape": list(runner.input_shape),
        "iterations": len(times),
        "timed_seconds": float(times.sum()),
        "latency_ms": latency,
        "throughput_per_s": batch * 1e3 / latency["mean"],
        "peak_memory_bytes": None,
        "load_seconds": runner.load_seconds,
        "artifact_bytes": runner.artifact.nbytes,
        "threads": options.threads or torch.get_num_threads(),
        "notes": list(runner.notes),
        "machine": machine,
    }


def add_ratios(records: list[dict]) -> None:
    """Each record against the first pair's record at the same batch size (the baseline):
    latency ratios < 1 and throughput ratios > 1 mean faster than the baseline."""
    baselines: dict[int, dict] = {}
    for record in records:
        baselines.setdefault(record["batch_size"], record)
    for record in records:
        base = baselines[record["batch_size"]]
        record["baseline"] = {"artifact": base["artifact"], "backend": base["backend"]}
        record["ratio"] = {
            "latency_p50": _ratio(record["latency_ms"]["p50"], base["latency_ms"]["p50"]),
            "latency_mean": _ratio(record["latency_ms"]["mean"], base["latency_ms"]["mean"]),
            "throughput": _ratio(record["throughput_per_s"], base["throughput_per_s"]),
            "peak_memory": _ratio(record["peak_memory_bytes"], base["peak_memory_bytes"]),
            "artifact_bytes": _ratio(record["artifact_bytes"], base["artifact_bytes"]),
        }


def _ratio(value: float | None, base: float | None) -> float | None:
    if value is None or base is None or base <= 0:
        return None
    return value / base
