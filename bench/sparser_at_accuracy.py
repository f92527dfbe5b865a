"""How much sparser is the gate ticket at the accuracy edge-popup reaches at 90%? (issue 19)

    python bench/sparser_at_accuracy.py \\
        --gates bench/results/gate_tuning/budget_shift_fashion_15ep_3seeds.json \\
                bench/results/gate_tuning/budget_shift_fashion_093_094_3seeds.json \\
        --reference bench/results/gate_tuning/fashion_gates20_vs_ep15_3seeds.json \\
        --reference-cell "ep 0.9"

Reads `bench/search_quality.py --json` rows. Every cell is the mean over its seeds. The
gates' curve (cells whose label starts with --gates-cell) runs through its means in order of the
fraction kept. The fraction at which it first reaches the reference cell's accuracy, coming from
the sparse end, is interpolated linearly in log(fraction kept) between the two measured cells
around the crossing. The ratio is the reference's fraction over that one: 2 is the paper's
"twice the sparsity", 1 is equal, below 1 means the gates need more weights. Validation decides;
test is reported beside it. The same is done for multiply-adds kept, which differ from weights
kept on convolutional networks, where the gates keep the convolutions denser.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
from pathlib import Path

COSTS = {
    "weights": lambda r: r["params_kept"] / r["params_total"],
    "multiply-adds": lambda r: r["macs_kept"] / r["macs_total"],
}


def cell_means(rows: list[dict], prefix: str) -> dict[str, dict[str, float]]:
    """Per cell label (seed suffix dropped) whose label starts with `prefix`: the means over
    its seeds of val and test accuracy and of each cost."""
    cells: dict[str, list[dict]] = {}
    for row in rows:
        label = re.sub(r" s\d+$", "", row["label"])
        if label.startswith(prefix):
            cells.setdefault(label, []).append(row)
    means = {}
    for label, runs in cells.items():
        means[label] = {
            "val": statistics.fmean(r["val_accuracy"] for r in runs),
            "test": statistics.fmean(r["test_accuracy"] for r in runs),
            "seeds": len(runs),
            **{name: statistics.fmean(f(r) for r in runs) for name, f in COSTS.items()},
        }
    return means


def fraction_at(curve: list[tuple[float, float]], level: float) -> tuple[float | None, str]:
    """The smallest fraction kept at which `curve` ((fraction, accuracy) points) reaches
    `level`, and how it was found."""
    points = sorted(curve)
    for i, (fraction, accuracy) in enumerate(points):
        if accuracy < level:
            continue
        if i == 0:
            return fraction, "at or below the sparsest cell measured"
        f0, a0 = points[i - 1]
        x = math.log(f0) + (level - a0) / (accuracy - a0) * (math.log(fraction) - math.log(f0))
        return math.exp(x), f"between {100 * f0:.2f}% and {100 * fraction:.2f}% kept"
    return None, "never, within the cells measured"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gates", nargs="+", type=Path, required=True)
    parser.add_argument("--gates-cell", default="defaults", help="label prefix of the gate cells")
    parser.add_argument("--reference", type=Path, required=True)
    parser.add_argument("--reference-cell", default="ep 0.9")
    args = parser.parse_args()

    gates = cell_means([r for p in args.gates for r in json.loads(p.read_text())], args.gates_cell)
    reference = cell_means(json.loads(args.reference.read_text()), args.reference_cell)
    if args.reference_cell not in reference:
        parser.error(f"no cell {args.reference_cell!r} in {args.reference}")
    ref = reference[args.reference_cell]
    listed = ", ".join(f"{k} ({v['seeds']} seeds)" for k, v in sorted(gates.items()))
    print(f"gate cells: {listed}")
    print(f"reference: {args.reference_cell} ({ref['seeds']} seeds) of {args.reference}\n")
    print("| split | reference accuracy | cost | reference kept | gates kept at that accuracy "
          "| reference / gates | found |")  # fmt: skip
    print("|---|---:|---|---:|---:|---:|---|")
    for split in ("val", "test"):
        for cost in COSTS:
            curve = [(g[cost], g[split]) for g in gates.values()]
            fraction, how = fraction_at(curve, ref[split])
            ratio = "–" if fraction is None else f"{ref[cost] / fraction:.2f}x"
            ratio = f"≥ {ratio}" if how.startswith("at or below") else ratio
            kept = "–" if fraction is None else f"{100 * fraction:.2f}%"
            print(f"| {split} | {100 * ref[split]:.2f}% | {cost} | {100 * ref[cost]:.2f}% "
                  f"| {kept} | {ratio} | {how} |")  # fmt: skip


if __name__ == "__main__":
    main()
