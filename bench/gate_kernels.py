"""Eager against compiled gate kernels, per size: where the compiled kernel starts to pay.

    python bench/gate_kernels.py --threads 2

A compiled call costs a fixed overhead (guards, dispatch) that fusion must earn back; below
the crossover the kernels stay compiled all the same (slt_deploy/masking/kernels.py says
why). Both variants run interleaved round by round in one process; prints the median
microseconds per call and the eager/compiled ratio (above 1: compiled is faster).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from slt_deploy.masking.kernels import EAGER, compiled

SIZES = (1_000, 4_000, 16_384, 30_000, 131_072, 235_200, 1_000_000, 4_000_000)


def arguments(name: str, n: int) -> tuple:
    generator = torch.Generator().manual_seed(0)
    grad, other = torch.randn(n, generator=generator), torch.randn(n, generator=generator)
    if name == "backward":  # grad, weight, pre-clip sample, 1/t
        return grad, other, torch.rand(n, generator=generator) * 1.6 - 0.3, 2.0
    return grad, other, torch.tensor(0.3), 0.5, -0.1  # grad, μ, λ, σ, τ(t − 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument(
        "--sizes", default=",".join(map(str, SIZES)), help="gate counts, comma-separated"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)  # before compiling: inductor plans its threads then
    fused = compiled()
    print(f"{args.threads} threads, median of {args.rounds} rounds")
    print("| kernel | elements | eager us | compiled us | eager / compiled |")
    print("|---|---:|---:|---:|---:|")
    for name in EAGER:
        for n in (int(v) for v in args.sizes.split(",")):
            inputs = arguments(name, n)
            times: dict[str, list[float]] = {"eager": [], "compiled": []}
            reps = max(5, 1_000_000 // n)
            with torch.no_grad():
                for _ in range(args.rounds + 1):  # the first round warms up
                    for kind, fn in (("eager", EAGER[name]), ("compiled", fused[name])):
                        start = time.perf_counter()
                        for _ in range(reps):
                            fn(*inputs)
                        times[kind].append((time.perf_counter() - start) / reps * 1e6)
            eager, comp = (statistics.median(times[k][1:]) for k in ("eager", "compiled"))
            print(f"| {name} | {n:,} | {eager:.1f} | {comp:.1f} | {eager / comp:.2f}x |")


if __name__ == "__main__":
    main()
