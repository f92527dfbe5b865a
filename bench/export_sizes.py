"""Artifact sizes and parity of one ticket, every format side by side, ratios to dense ONNX.

    python bench/export_sizes.py runs/lenet-gates --data-dir ../shared/data/mnist

Exports ONNX (dense, mask folded), CSR and .slt from the same ticket, rebuilds ONNX from the
.slt, and evaluates every artifact on the full test split through its own runtime.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from slt_deploy.evaluate import evaluate_artifact
from slt_deploy.export import ExportRequest, export
from slt_deploy.search.ticket import load_ticket


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="run directory or ticket")
    parser.add_argument("--data-dir", help="data folder for parity and accuracy")
    args = parser.parse_args()
    ticket = load_ticket(args.run)
    data = ticket.config.data
    data_dir = args.data_dir or ticket.config.data_dir
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        reports = {
            "onnx (dense, mask folded)": export(
                ExportRequest(args.run, "onnx", out / "m.onnx", data=data, data_dir=data_dir)
            ),
            "csr": export(
                ExportRequest(
                    args.run, "csr", out / "m.csr.safetensors", data=data, data_dir=data_dir
                )
            ),
            "slt": export(
                ExportRequest(args.run, "slt", out / "m.slt", data=data, data_dir=data_dir)
            ),
        }
        rebuilt = export(
            ExportRequest(out / "m.slt", "onnx", out / "rebuilt.onnx", data=data, data_dir=data_dir)
        )
        artifacts = {
            "onnx (dense, mask folded)": out / "m.onnx",
            "csr": out / "m.csr.safetensors",
            "slt": out / "m.slt",
            "onnx rebuilt from slt": out / "rebuilt.onnx",
        }
        reports["onnx rebuilt from slt"] = rebuilt
        accuracy = {
            k: evaluate_artifact(p, data, data_dir)["accuracy"] for k, p in artifacts.items()
        }
    dense = reports["onnx (dense, mask folded)"]["bytes"]
    print(
        f"{ticket.config.model} on {data}: sparsity {100 * reports['slt']['sparsity']:.2f}%, "
        f"search test accuracy {100 * ticket.metrics['test_accuracy']:.2f}%\n"
    )
    print("| artifact | bytes | ratio to dense ONNX | max abs diff vs PyTorch | test accuracy |")
    print("|---|---:|---:|---:|---:|")
    for name, report in reports.items():
        print(
            f"| {name} | {report['bytes']:,} | 1/{dense / report['bytes']:.1f} | "
            f"{report['parity']['max_abs_diff']:.1e} | {100 * accuracy[name]:.2f}% |"
        )
    same = rebuilt["sha256"] == reports["onnx (dense, mask folded)"]["sha256"]
    print(f"\nONNX rebuilt from .slt is byte-identical to the direct export: {same}")
    bits = 8 * reports["slt"]["bytes"] / reports["slt"]["weights_total"]
    print(f".slt: {bits:.3f} bits per gated weight")


if __name__ == "__main__":
    main()
