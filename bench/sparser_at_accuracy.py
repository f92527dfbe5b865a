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

Three seeds are few, and where a curve is flat a small change of its means moves the crossing
far. So the ratio comes with an interval from a bootstrap over seeds: every cell (gates' and
reference) draws its seeds again with replacement, the ratio is recomputed, and the 10th and
90th percentiles of --resamples such ratios are printed. A draw whose gates never reach the
reference counts as a ratio of 0; one already reached at the sparsest cell counts at that cell,
a lower bound. The draws use a fixed seed, so the interval is the same every run.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import statistics
from pathlib import Path

SPLITS = ("val", "test")
COSTS = {
    "weights": lambda r: r["params_kept"] / r["params_total"],
    "multiply-adds": lambda r: r["macs_kept"] / r["macs_total"],
}


def cells_of(rows: list[dict], prefix: str) -> dict[str, list[dict]]:
    """The runs of every cell (label less its seed suffix) whose label starts with `prefix`."""
    cells: dict[str, list[dict]] = {}
    for row in rows:
        label = re.sub(r" s\d+$", "", row["label"])
        if label.startswith(prefix):
            cells.setdefault(label, []).append(row)
    return cells


def _seeds(count: int) -> str:
    return f"{count} seed" if count == 1 else f"{count} seeds"


def splits_of(runs: list[dict]) -> tuple[str, ...]:
    """Validation and test, or test alone where a run held no validation split out (the
    issue's own protocol: all training images, test once)."""
    return SPLITS if all(r.get("val_accuracy") is not None for r in runs) else ("test",)


def means_of(runs: list[dict], splits: tuple[str, ...]) -> dict[str, float]:
    """The means over a cell's seeds of the accuracy on each split and of each cost."""
    return {
        **{s: statistics.fmean(r[f"{s}_accuracy"] for r in runs) for s in splits},
        "seeds": len(runs),
        **{name: statistics.fmean(f(r) for r in runs) for name, f in COSTS.items()},
    }


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


def ratio_of(gates: list[dict], ref: dict, split: str, cost: str) -> float:
    """The reference's fraction kept over the gates' at the reference's accuracy; 0 where the
    gates never reach it, a lower bound where their sparsest cell already does."""
    fraction, _ = fraction_at([(g[cost], g[split]) for g in gates], ref[split])
    return 0.0 if fraction is None else ref[cost] / fraction


def bootstrap_intervals(
    gates: dict[str, list[dict]], reference: list[dict], resamples: int, splits: tuple[str, ...]
) -> dict[tuple[str, str], tuple[float, float]]:
    """Per (split, cost): 10th and 90th percentiles of the ratio over draws of every cell's
    seeds. One set of draws serves every split and cost."""
    draw = random.Random(0)
    ratios: dict[tuple[str, str], list[float]] = {(s, c): [] for s in splits for c in COSTS}
    for _ in range(resamples):
        drawn = [means_of(draw.choices(runs, k=len(runs)), splits) for runs in gates.values()]
        ref = means_of(draw.choices(reference, k=len(reference)), splits)
        for (split, cost), values in ratios.items():
            values.append(ratio_of(drawn, ref, split, cost))
    low, high = int(0.1 * (resamples - 1)), int(0.9 * (resamples - 1))
    ordered = {key: sorted(values) for key, values in ratios.items()}
    return {key: (values[low], values[high]) for key, values in ordered.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gates", nargs="+", type=Path, required=True)
    parser.add_argument("--gates-cell", default="defaults", help="label prefix of the gate cells")
    parser.add_argument("--reference", type=Path, required=True)
    parser.add_argument("--reference-cell", default="ep 0.9")
    parser.add_argument("--resamples", type=int, default=2000, help="bootstrap draws")
    args = parser.parse_args()

    gate_runs = cells_of(
        [r for p in args.gates for r in json.loads(p.read_text())], args.gates_cell
    )
    reference = cells_of(json.loads(args.reference.read_text()), args.reference_cell)
    if args.reference_cell not in reference:
        parser.error(f"no cell {args.reference_cell!r} in {args.reference}")
    ref_runs = reference[args.reference_cell]
    splits = splits_of([r for runs in (*gate_runs.values(), ref_runs) for r in runs])
    gates = {label: means_of(runs, splits) for label, runs in gate_runs.items()}
    ref = means_of(ref_runs, splits)
    listed = ", ".join(f"{k} ({_seeds(v['seeds'])})" for k, v in sorted(gates.items()))
    print(f"gate cells: {listed}")
    print(f"reference: {args.reference_cell} ({_seeds(ref['seeds'])}) of {args.reference}\n")
    print("| split | reference accuracy | cost | reference kept | gates kept at that accuracy "
          "| reference / gates | 80% interval over seeds | found |")  # fmt: skip
    print("|---|---:|---|---:|---:|---:|---|---|")
    intervals = bootstrap_intervals(gate_runs, ref_runs, args.resamples, splits)
    for split in splits:
        for cost in COSTS:
            curve = [(g[cost], g[split]) for g in gates.values()]
            fraction, how = fraction_at(curve, ref[split])
            ratio = "–" if fraction is None else f"{ref[cost] / fraction:.2f}x"
            ratio = f"≥ {ratio}" if how.startswith("at or below") else ratio
            kept = "–" if fraction is None else f"{100 * fraction:.2f}%"
            low, high = intervals[split, cost]
            print(f"| {split} | {100 * ref[split]:.2f}% | {cost} | {100 * ref[cost]:.2f}% "
                  f"| {kept} | {ratio} | {low:.2f}x–{high:.2f}x | {how} |")  # fmt: skip


if __name__ == "__main__":
    main()
