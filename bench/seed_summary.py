"""Mean and spread over seeds of `bench/search_quality.py --seeds ... --json` results.

    python bench/seed_summary.py bench/results/gate_tuning/mnist_15ep_sc_lr_3seeds.json

    python bench/seed_summary.py --pool seed0.json seeds12.json   # one table over both

One row per cell (the label without its " sN" seed suffix): validation and test accuracy as
mean ± standard deviation (sample, n − 1), the range of sparsity reached and the seeds counted.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from pathlib import Path


def _mean_sd(values: list[float]) -> str:
    if not values:
        return "–"
    mean = 100 * statistics.fmean(values)
    sd = 100 * statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.2f} ± {sd:.2f}"


def summarise(results: list[dict]) -> list[str]:
    cells: dict[str, list[dict]] = {}
    for r in results:
        cells.setdefault(re.sub(r" s\d+$", "", r["label"]), []).append(r)
    lines = [
        "| cell | seeds | val accuracy (mean ± sd) | test accuracy (mean ± sd) | sparsity |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, runs in cells.items():
        val = [r["val_accuracy"] for r in runs if r.get("val_accuracy") is not None]
        test = [r["test_accuracy"] for r in runs]
        sparsity = [100 * r["sparsity"] for r in runs]
        reached = f"{min(sparsity):.2f}–{max(sparsity):.2f}%"
        lines.append(f"| {label} | {len(runs)} | {_mean_sd(val)} | {_mean_sd(test)} | {reached} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", type=Path, help="--json outputs of search_quality")
    parser.add_argument(
        "--pool",
        action="store_true",
        help="one table over all files (seed 0 of a cell in one run, seeds 1, 2 in another); "
        "a (cell, seed) pair seen twice is an error",
    )
    args = parser.parse_args()
    if args.pool:
        runs = [r for path in args.results for r in json.loads(path.read_text())]
        seen = [(re.sub(r" s\d+$", "", r["label"]), r["seed"]) for r in runs]
        if len(set(seen)) != len(seen):
            parser.error("a cell has the same seed twice in the pooled files")
        print("# pooled: " + " ".join(str(path) for path in args.results))
        print("\n".join(summarise(runs)))
        return
    for path in args.results:
        print(f"# {path}")
        print("\n".join(summarise(json.loads(path.read_text()))))
        print()


if __name__ == "__main__":
    main()
