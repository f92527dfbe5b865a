"""Search quality: test accuracy and sparsity of gates, edge-popup and dense training, one table.

    python bench/search_quality.py --data mnist --epochs 15 --jobs 2
    python bench/search_quality.py --data mnist --epochs 15 --grid defaults   # the tuning grid

Every cell is a real `slt_deploy.search` run on CPU; cells run in parallel processes (one torch
thread each). Prints a Markdown table; `--json` writes every summary.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

DATA_ROOT = Path(
    os.environ.get("SLT_DEPLOY_DATA", Path(__file__).parents[1] / ".." / "shared" / "data")
)

QUALITY = [  # (label, overrides): the table, every method at the tool's defaults
    ("gates 0.50", {"method": "gates", "target_sparsity": 0.5}),
    ("gates 0.80", {"method": "gates", "target_sparsity": 0.8}),
    ("gates 0.90", {"method": "gates", "target_sparsity": 0.9}),
    ("gates 0.95", {"method": "gates", "target_sparsity": 0.95}),
    ("gates 0.98", {"method": "gates", "target_sparsity": 0.98}),
    ("edge-popup 0.50", {"method": "edge-popup", "target_sparsity": 0.5}),
    ("edge-popup 0.90", {"method": "edge-popup", "target_sparsity": 0.9}),
    ("edge-popup 0.95", {"method": "edge-popup", "target_sparsity": 0.95}),
    ("edge-popup 0.98", {"method": "edge-popup", "target_sparsity": 0.98}),
    ("dense", {"method": "dense"}),
]

DEFAULTS_GRID = [  # candidates for each default, at the 0.9 target (0.5 too for edge-popup)
    ("gates stg adam0.01 uniform", {"target_sparsity": 0.9, "lr": 0.01}),
    ("gates stg adam0.03 uniform", {"target_sparsity": 0.9, "lr": 0.03}),
    ("gates stg adam0.003 uniform", {"target_sparsity": 0.9, "lr": 0.003}),
    (
        "gates stg adam0.01 signed-constant",
        {"target_sparsity": 0.9, "lr": 0.01, "init": "signed-constant"},
    ),
    (
        "gates stg adam0.01 uniform scale-fan",
        {"target_sparsity": 0.9, "lr": 0.01, "scale_fan": True},
    ),
    ("gates hard-concrete adam0.01", {"target_sparsity": 0.9, "lr": 0.01, "gate": "hard-concrete"}),
    ("gates hard-concrete adam0.03", {"target_sparsity": 0.9, "lr": 0.03, "gate": "hard-concrete"}),
    (
        "edge-popup 0.5 sgd0.1 signed-constant scale-fan",
        {"method": "edge-popup", "target_sparsity": 0.5},
    ),
    (
        "edge-popup 0.5 sgd0.1 signed-constant",
        {"method": "edge-popup", "target_sparsity": 0.5, "scale_fan": False},
    ),
    (
        "edge-popup 0.9 sgd0.1 signed-constant scale-fan",
        {"method": "edge-popup", "target_sparsity": 0.9},
    ),
    (
        "edge-popup 0.9 sgd0.1 uniform scale-fan",
        {"method": "edge-popup", "target_sparsity": 0.9, "init": "uniform"},
    ),
    (
        "edge-popup 0.9 adam0.01 signed-constant scale-fan",
        {
            "method": "edge-popup",
            "target_sparsity": 0.9,
            "optimizer": "adam",
            "lr": 0.01,
            "weight_decay": 0.0,
        },
    ),
    ("dense sgd0.05", {"method": "dense"}),
    ("dense adam0.001", {"method": "dense", "optimizer": "adam", "lr": 0.001, "weight_decay": 0.0}),
]


TEMPERATURE_GRID = [  # the learned loss temperature, for every mask method
    ("gates stg adam0.01 uniform T", {"target_sparsity": 0.9, "loss_temperature": "learned"}),
    (
        "gates stg adam0.01 signed-constant T",
        {"target_sparsity": 0.9, "init": "signed-constant", "loss_temperature": "learned"},
    ),
    (
        "gates stg adam0.03 uniform T",
        {"target_sparsity": 0.9, "lr": 0.03, "loss_temperature": "learned"},
    ),
    (
        "gates stg adam0.01 uniform T fresh-noise",
        {"target_sparsity": 0.9, "noise": "fresh", "loss_temperature": "learned"},
    ),
    (
        "gates hard-concrete adam0.03 T",
        {
            "target_sparsity": 0.9,
            "gate": "hard-concrete",
            "lr": 0.03,
            "loss_temperature": "learned",
        },
    ),
    (
        "edge-popup 0.9 sgd0.1 signed-constant scale-fan T",
        {"method": "edge-popup", "target_sparsity": 0.9, "loss_temperature": "learned"},
    ),
    (
        "edge-popup 0.9 adam0.01 signed-constant scale-fan T",
        {
            "method": "edge-popup",
            "target_sparsity": 0.9,
            "optimizer": "adam",
            "lr": 0.01,
            "weight_decay": 0.0,
            "loss_temperature": "learned",
        },
    ),
    (
        "edge-popup 0.5 adam0.01 signed-constant scale-fan",
        {
            "method": "edge-popup",
            "target_sparsity": 0.5,
            "optimizer": "adam",
            "lr": 0.01,
            "weight_decay": 0.0,
        },
    ),
]
EDGE_POPUP_SCALE_FAN_GRID = [  # scale-fan on/off at every target (both with the temperature)
    (
        f"edge-popup {s:.2f} scale-fan {'on' if on else 'off'}",
        {"method": "edge-popup", "target_sparsity": s, "scale_fan": on},
    )
    for s in (0.5, 0.9, 0.95, 0.98)
    for on in (False, True)
    if not (on and s == 0.98)
]
SEEDS_GRID = [  # is the 0.90 gap one seed's noise? and the extreme-sparsity end
    *[
        (f"{m} 0.90 seed {seed}", {"method": m, "target_sparsity": 0.9, "seed": seed})
        for seed in (1, 2)
        for m in ("gates", "edge-popup")
    ],
    ("gates 0.99", {"method": "gates", "target_sparsity": 0.99}),
    ("edge-popup 0.99", {"method": "edge-popup", "target_sparsity": 0.99}),
]
GRIDS = {
    "seeds": SEEDS_GRID,
    "quality": QUALITY,
    "defaults": DEFAULTS_GRID,
    "temperature": TEMPERATURE_GRID,
    "edge-popup-scale-fan": EDGE_POPUP_SCALE_FAN_GRID,
}


def run_cell(args: tuple[str, dict, dict]) -> dict:
    import torch

    torch.set_num_threads(1)
    from slt_deploy.search.config import SearchConfig
    from slt_deploy.search.loop import search

    label, base, overrides = args
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        summary = search(SearchConfig(**{**base, **overrides}), Path(out) / "run", progress=False)
    summary["label"] = label
    summary["elapsed"] = time.perf_counter() - started
    summary["overrides"] = overrides
    return summary


def print_table(results: list[dict]) -> None:
    macs = all(r.get("macs_total") for r in results)  # runs recorded since they exist
    print("| run | val accuracy | test accuracy | sparsity | undecided | kept / total | wall s |"
          + (" multiply-adds kept |" if macs else ""))  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|" + ("---:|" if macs else ""))
    for r in results:
        val = "–" if r.get("val_accuracy") is None else f"{100 * r['val_accuracy']:.2f}%"
        undecided = r.get("undecided_gates")
        undecided = "–" if undecided is None else f"{100 * undecided:.1f}%"
        print(
            f"| {r['label']} | {val} | {100 * r['test_accuracy']:.2f}% "
            f"| {100 * r['sparsity']:.2f}% | {undecided} "
            f"| {r['params_kept']:,} / {r['params_total']:,} | {r['wall_seconds']:.0f} |"
            + (f" {100 * r['macs_kept'] / r['macs_total']:.2f}% |" if macs else "")
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="mnist")
    parser.add_argument("--model", default="lenet-300-100")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--grid", choices=sorted(GRIDS), default="quality")
    parser.add_argument("--only", help="comma-separated labels to run")
    parser.add_argument(
        "--cell",
        action="append",
        default=[],
        metavar="LABEL=JSON",
        help="an ad-hoc cell instead of a grid: 'gates lr0.1={\"lr\": 0.1}' (repeatable)",
    )
    parser.add_argument("--seeds", help="comma-separated seeds: every cell once per seed")
    parser.add_argument("--val-split", type=int, help="training samples held out (validation)")
    parser.add_argument("--subset", type=int)
    parser.add_argument("--width", type=float, help="model width multiplier (model_kwargs)")
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--render", type=Path, help="print the table of a saved --json file and exit"
    )
    args = parser.parse_args()
    if args.render:
        print_table(json.loads(args.render.read_text()))
        return
    base = {
        "model": args.model,
        "data": args.data,
        "epochs": args.epochs,
        "seed": args.seed,
        "device": "cpu",
        "val_split": args.val_split,
        "subset": args.subset,
    }
    if args.width is not None:
        base["model_kwargs"] = {"width": args.width}
    if args.data in ("mnist", "fashion-mnist", "cifar10"):
        base["data_dir"] = str(
            DATA_ROOT / (args.data if args.data != "cifar10" else "cifar10-jpeg.tar")
        )
    grid = GRIDS[args.grid]
    if args.cell:
        grid = [(text.split("=", 1)[0], json.loads(text.split("=", 1)[1])) for text in args.cell]
    if args.only:
        wanted = set(args.only.split(","))
        grid = [cell for cell in grid if cell[0] in wanted]
    if args.seeds:
        if any("seed" in overrides for _, overrides in grid):
            parser.error("--seeds would override a cell's own seed: give one or the other")
        grid = [
            (f"{label} s{seed}", {**overrides, "seed": int(seed)})
            for label, overrides in grid
            for seed in args.seeds.split(",")
        ]
    started = time.perf_counter()
    with ProcessPoolExecutor(args.jobs) as pool:
        results = list(pool.map(run_cell, [(label, base, o) for label, o in grid]))
    print(
        f"\n{args.model} on {args.data}, {args.epochs} epochs, seed {args.seed}, CPU "
        f"({os.cpu_count()} cores, {args.jobs} jobs), {time.perf_counter() - started:.0f} s\n"
    )
    print_table(results)
    by_label = {r["label"]: r for r in results}
    if "gates 0.90" in by_label and "edge-popup 0.90" in by_label:
        gap = by_label["gates 0.90"]["test_accuracy"] - by_label["edge-popup 0.90"]["test_accuracy"]
        print(f"\ngates - edge-popup at 0.90: {100 * gap:+.2f} points")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
