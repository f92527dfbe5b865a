"""The timing loop, written once for every back-end (trtexec's conventions).

Warm-up for at least `warmup_seconds`, then rounds in which every runner settles (a few
untimed runs) and executes a timed chunk of about `chunk_seconds`, until each has at least
`min_iterations` and `min_seconds` of timed work. Several artifacts are therefore measured
interleaved, under the same machine load, which is what makes their ratios trustworthy on a
shared, noisy machine. Each iteration is timed on
the host around `infer` + device synchronisation, so GPU work is inside the measurement. No
sample is dropped: outliers stay in the percentiles.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from slt_deploy.errors import SltError


@dataclass(frozen=True)
class TimingPolicy:
    warmup_seconds: float = 0.2
    min_iterations: int = 50
    min_seconds: float = 3.0
    chunk_seconds: float = 0.1
    # Untimed runs at the start of every chunk: the previous runner's worker threads keep
    # spinning for a while after it stops (ONNX Runtime's and OpenMP's do, by design) and
    # would otherwise land in the first timed iterations of the next (measured: torch CSR
    # p99 0.14 -> 4.3 ms after ORT chunks, and 0.14 ms again with this settle).
    settle_seconds: float = 0.01

    def __post_init__(self) -> None:
        if self.warmup_seconds < 0 or self.min_seconds < 0 or self.chunk_seconds <= 0:
            raise SltError("timing durations must be non-negative")
        if self.min_iterations < 1:
            raise SltError("--min-iterations must be at least 1")


def _timed(runner, feed) -> float:
    start = time.perf_counter()
    runner.infer(feed)
    runner.synchronize()
    return time.perf_counter() - start


def warm_up(runner, feed, seconds: float) -> float:
    """Run for `seconds` (at least twice); the mean iteration time sizes the chunks."""
    spent, count = 0.0, 0
    while count < 2 or spent < seconds:
        spent += _timed(runner, feed)
        count += 1
    return spent / count


def measure_interleaved(
    entries: list[tuple[object, object]], policy: TimingPolicy
) -> list[np.ndarray]:
    """Per entry (runner, feed): every iteration's latency in seconds."""
    estimates = [warm_up(r, f, policy.warmup_seconds) for r, f in entries]
    chunks = [max(1, int(policy.chunk_seconds / max(t, 1e-9))) for t in estimates]
    samples: list[list[float]] = [[] for _ in entries]

    def done(i: int) -> bool:
        return len(samples[i]) >= policy.min_iterations and sum(samples[i]) >= policy.min_seconds

    while not all(done(i) for i in range(len(entries))):
        for i, (runner, feed) in enumerate(entries):
            warm_up(runner, feed, policy.settle_seconds)
            samples[i].extend(_timed(runner, feed) for _ in range(chunks[i]))
    return [np.asarray(s) for s in samples]


def latency_summary(samples: np.ndarray) -> dict:
    """Milliseconds; percentiles by linear interpolation over all samples."""
    ms = samples * 1e3
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return {
        "mean": float(ms.mean()),
        "p50": float(p50),
        "p90": float(p90),
        "p99": float(p99),
        "min": float(ms.min()),
        "max": float(ms.max()),
        "std": float(ms.std()),
    }
