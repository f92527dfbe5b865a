"""Accuracy against deployed cost: gates and edge-popup tickets, side by side, on this CPU.

    python bench/accuracy_cost.py --out bench/results/accuracy_cost/mnist \\
        --data mnist --epochs 15 --val-split 5000 --sparsities 0.5,0.9,0.95,0.98,0.99

Runs the real command line end to end: `slt-deploy sweep` (gates, edge-popup and dense
training at every target), `slt-deploy export` of the dense network to ONNX and of every
ticket to CSR, one interleaved `slt-deploy bench` of all of them at --batch-size (the dense
ONNX Runtime network first: every ratio is against it), and `slt-deploy report`. The report's
accuracy-vs-cost figure puts test accuracy against the fraction of weights kept, of
multiply-adds kept and of dense latency, each on a log axis, and its equal-cost table says where
each method wins. Gates set per-layer sparsity themselves; edge-popup keeps the same fraction in
every layer. A convolution's weight costs a multiply-add at every output pixel, a classifier's
once, so the two methods can rank differently by weights and by compute.

The sweep directory keeps its cells (tickets included) so a second call resumes; --keep-table
then reduces it to what bench/results holds: results.csv, sweep.json, the bench JSON and the
report.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from slt_deploy.export.report import report_path

DATA_ROOT = Path(os.environ.get("SLT_DEPLOY_DATA", Path(__file__).parents[2] / "shared/data"))
DATA_DIRS = {"mnist": "mnist", "fashion-mnist": "fashion-mnist", "cifar10": "cifar10-jpeg.tar"}


def cli(*args: str) -> None:
    command = [sys.executable, "-m", "slt_deploy", *args]
    print("$ slt-deploy " + " ".join(args), flush=True)
    done = subprocess.run(command, check=False)
    if done.returncode:
        sys.exit(f"slt-deploy {args[0]} failed (exit {done.returncode})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="sweep directory")
    parser.add_argument("--model", default="lenet-300-100")
    parser.add_argument("--width", help="--width of the model")
    parser.add_argument("--data", default="mnist")
    parser.add_argument("--subset")
    parser.add_argument("--epochs", default="15")
    parser.add_argument("--val-split", default="5000")
    parser.add_argument("--sparsities", default="0.5,0.9,0.95,0.98,0.99")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--batch-size", default="32")
    parser.add_argument("--min-seconds", default="2")
    parser.add_argument("--jobs", default="2")
    parser.add_argument("--keep-table", action="store_true", help="delete the cells at the end")
    args = parser.parse_args()
    args.out = args.out.resolve()  # bench records name artifacts by absolute path

    model = ["--model", args.model] + (["--width", args.width] if args.width else [])
    data = ["--data", args.data, "--data-dir", str(DATA_ROOT / DATA_DIRS[args.data])]
    data += ["--subset", args.subset] if args.subset else []
    cli("sweep", *model, *data, "--epochs", args.epochs, "--val-split", args.val_split,
        "--methods", "gates,edge-popup,dense", "--sparsities", args.sparsities,
        "--seeds", args.seeds, "--jobs", args.jobs, "--quiet", "--out", str(args.out))  # fmt: skip

    rows = list(csv.DictReader((args.out / "results.csv").open()))
    artifacts = args.out / "artifacts"
    artifacts.mkdir(exist_ok=True)
    sparse = [r["cell"] for r in rows if r["method"] != "dense"]
    # the baseline: a ticket run as a dense network by ONNX Runtime (its zeros cost as much as
    # any weight there, so every ticket of this architecture runs at this speed)
    # (--no-shrink: export would otherwise drop the units this ticket's dead paths leave empty)
    exports = [(sparse[0], "onnx", ".onnx")] + [(c, "csr", ".csr.safetensors") for c in sparse]
    paths = {}
    for cell, fmt, suffix in exports:
        path = artifacts / f"{cell}{suffix}"
        options = ["--format", fmt, "--out", str(path)] + (["--no-shrink"] if fmt == "onnx" else [])
        if not path.is_file():
            cli("export", str(args.out / "cells" / cell), *options)
        paths[str(path)] = cell
    (args.out / "bench").mkdir(exist_ok=True)
    records = args.out / "bench" / "cpu.json"
    cli("bench", *paths, "--batch-size", args.batch_size, "--min-seconds", args.min_seconds,
        "--no-memory", "--quiet", "--json", str(records))  # fmt: skip
    cli("report", str(args.out))

    by_cell = {r["cell"]: r for r in rows}
    print(f"\n{args.model} on {args.data}: p50 at batch {args.batch_size} over dense ONNX Runtime")
    print("| cell | test accuracy | weights kept | in the CSR file | multiply-adds kept "
          "| CSR p50 / dense |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|")
    for record in json.loads(records.read_text())[1:]:  # the CSR tickets
        cell = paths[record["artifact"]]
        row = by_cell[cell]
        kept = int(row["params_kept"]) / int(row["params_total"])
        macs = int(row["macs_kept"]) / int(row["macs_total"])
        # what export wrote: the searched mask less its weights on dead paths (docs/export.md)
        exported = json.loads(report_path(Path(record["artifact"])).read_text())["weights_kept"]
        print(f"| {cell} | {100 * float(row['test_accuracy']):.2f}% | {100 * kept:.2f}% "
              f"| {100 * exported / int(row['params_total']):.2f}% | {100 * macs:.2f}% "
              f"| {record['ratio']['latency_p50']:.3f} |")  # fmt: skip
    print("\n" + (args.out / "results.md").read_text())
    if args.keep_table:
        shutil.rmtree(args.out / "cells")
        shutil.rmtree(artifacts)


if __name__ == "__main__":
    main()
