"""SHA-256 of every export format from fixed tickets, through the CLI as a user runs it.

    python bench/export_hashes.py --out /tmp/hashes > before.txt   # on the old tree
    python bench/export_hashes.py --out /tmp/hashes > after.txt    # on the new tree
    diff before.txt after.txt

A refactor of export must leave every artifact byte-identical: run this before and after and
diff the two outputs. Three short searches on the embedded digits set (seeded, CPU, so the
tickets repeat on one machine; their hashes are printed too) give an unstructured, a channel
and a searched 2:4 ticket; each is exported to every format that applies to it. Export reports
are hashed without their `source_path`, which names the folder given as --out.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

SEARCH = ["--data", "digits", "--max-steps", "40", "--seed", "0", "--device", "cpu"]
TICKETS = {
    "unstructured": ["--model", "lenet-300-100", "--target-sparsity", "0.9"],
    "channel": ["--model", "conv2", "--granularity", "channel", "--target-sparsity", "0.5"],
    "2:4": ["--model", "lenet-300-100", "--granularity", "2:4", "--target-sparsity", "0.5"],
}
EXPORTS = {
    "unstructured": {
        "m.onnx": ["--format", "onnx"],
        "m.int8.onnx": ["--format", "onnx-int8"],
        "m.int8-dynamic.onnx": ["--format", "onnx-int8", "--int8-activations", "dynamic"],
        "m.csr.safetensors": ["--format", "csr"],
        "m.slt": ["--format", "slt"],
        "m.24.onnx": ["--format", "2:4"],
        "m.x86.onnx": ["--target", "x86-vnni"],
    },
    "channel": {
        "m.onnx": ["--format", "onnx"],
        "m.full.onnx": ["--format", "onnx", "--no-shrink"],
        "m.int8.onnx": ["--format", "onnx-int8"],
        "m.csr.safetensors": ["--format", "csr"],
        "m.slt": ["--format", "slt"],
    },
    "2:4": {
        "m.24.onnx": ["--format", "2:4"],
        "m.slt": ["--format", "slt"],
    },
}


def slt_deploy(*args: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "slt_deploy", *args], capture_output=True, text=True
    )
    if done.returncode != 0:
        sys.exit(f"slt-deploy {' '.join(args)} failed:\n{done.stderr}")


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def report_digest(path: Path) -> str:
    report = json.loads(path.read_text())
    report.pop("source_path", None)
    return hashlib.sha256(json.dumps(report, sort_keys=True).encode()).hexdigest()[:16]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="work folder (emptied first)")
    args = parser.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    print("| ticket | artifact | sha256 (16 hex) | report sha256 (16 hex) |")
    print("|---|---|---|---|")
    for name, options in TICKETS.items():
        run = args.out / name.replace(":", "") / "run"
        slt_deploy("search", *SEARCH, *options, "--out", str(run))
        print(f"| {name} | ticket.safetensors | {digest(run / 'ticket.safetensors')} | – |")
        for artifact, flags in EXPORTS[name].items():
            out = run.parent / artifact
            slt_deploy("export", str(run), "--out", str(out), *flags)
            report = out.with_name(out.name + ".json")
            print(f"| {name} | {artifact} | {digest(out)} | {report_digest(report)} |")


if __name__ == "__main__":
    main()
