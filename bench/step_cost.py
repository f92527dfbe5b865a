"""Cost of a training step: gates (and edge-popup) vs ordinary dense training, same model/batch.

    python bench/step_cost.py --model lenet-300-100 --batch-size 128

One process, the methods interleaved round by round so machine noise hits all alike; each
step is the search loop's own `Trainer.step` (forward, backward, penalty gradient, optimizer,
sparsity control), on in-memory MNIST-shaped batches. Prints median ms per step and the
ratios to dense.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from slt_deploy.data import DataSpec
from slt_deploy.search.config import SearchConfig
from slt_deploy.search.defaults import resolve
from slt_deploy.search.trainer import build_trainer

VARIANTS = {  # label -> SearchConfig overrides
    "dense": {"method": "dense"},
    "gates": {"method": "gates", "compile": True},  # --budget shift, the default
    "gates --budget penalty": {"method": "gates", "compile": True, "budget": "penalty"},
    # the default's second half from the first step measured: sharpening, σ annealing and the
    # bound on the means (the bound applies throughout by default)
    "gates, sharpening": {
        "method": "gates",
        "compile": True,
        "temperature_final": 0.05,
        "sharpen_start": 0.0,
        "sigma_start": 0.0,
    },
    "gates --noise fresh": {"method": "gates", "noise": "fresh", "compile": True},
    "gates --no-compile": {"method": "gates", "compile": False},
    "edge-popup": {"method": "edge-popup"},
}


def make_step(
    variant: str, model_name: str, kwargs: dict, spec: DataSpec, total: int, start: int = 0
):
    """The search loop's own Trainer.step, for one variant on `model_name`."""
    overrides = VARIANTS[variant]
    target = None if overrides["method"] == "dense" else 0.9
    config = SearchConfig(
        model=model_name, model_kwargs=kwargs, target_sparsity=target, **overrides
    )
    config = resolve(config, total)  # every default explicit, as the search loop runs it
    trainer = build_trainer(config, spec, total, torch.device("cpu"))
    counter = iter(range(start, 10**9))

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        trainer.step(x, y, next(counter))

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="lenet-300-100")
    parser.add_argument("--width", type=float)
    parser.add_argument("--depth", type=int)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--input", default="1,28,28", help="C,H,W of the input")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--steps", type=int, default=10, help="steps per method per round")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument(
        "--run-steps",
        type=int,
        default=7035,
        help="length of the run being modelled (15 MNIST epochs at batch 128)",
    )
    parser.add_argument(
        "--at",
        type=float,
        default=0.0,
        help="fraction of the run at which the steps are timed (0.5: past the sparsity ramp, "
        "where the target is held, sharpening and σ annealing under way)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    shape = tuple(int(v) for v in args.input.split(","))
    spec = DataSpec("bench", shape, 10, (0.0,) * shape[0], (1.0,) * shape[0])
    kwargs = {k: v for k, v in (("width", args.width), ("depth", args.depth)) if v is not None}
    if args.model == "fc" and "width" in kwargs:
        kwargs["width"] = int(kwargs["width"])
    methods = list(VARIANTS)
    # The run length sets the control cadence: measure at that of a real 15-epoch MNIST run.
    total = args.run_steps
    first_step = int(args.at * total)
    steps = {m: make_step(m, args.model, kwargs, spec, total, first_step) for m in methods}
    x = torch.randn(args.batch_size, *shape)
    y = torch.randint(0, 10, (args.batch_size,))
    for m in methods:  # warm-up
        for _ in range(5):
            steps[m](x, y)
    times: dict[str, list[float]] = {m: [] for m in methods}
    for _ in range(args.rounds):
        for m in methods:
            start = time.perf_counter()
            for _ in range(args.steps):
                steps[m](x, y)
            times[m].append((time.perf_counter() - start) / args.steps)
    dense = statistics.median(times["dense"])
    print(
        f"{args.model} {kwargs or ''} batch {args.batch_size}, {args.threads} threads, "
        f"median of {args.rounds} rounds x {args.steps} steps, from step {first_step} of {total}"
    )
    print("| variant | ms / step | ratio to dense |")
    print("|---|---:|---:|")
    for m in methods:
        median = statistics.median(times[m])
        print(f"| {m} | {1000 * median:.3f} | {median / dense:.2f}x |")


if __name__ == "__main__":
    main()
