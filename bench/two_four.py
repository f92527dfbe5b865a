"""2:4 tickets: searched with --granularity 2:4 vs an unstructured ticket projected to 2:4 vs
the unstructured ticket itself, same model, data, epochs and sparsity target (0.5).

    python bench/two_four.py --data mnist --epochs 15
"""

from __future__ import annotations

import argparse
import os
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from slt_deploy.export import ExportRequest, export
from slt_deploy.search.config import SearchConfig
from slt_deploy.search.loop import search

DATA_ROOT = Path(
    os.environ.get("SLT_DEPLOY_DATA", Path(__file__).parents[1] / ".." / "shared" / "data")
)


def _search(args: tuple[dict, str]) -> dict:
    import torch

    torch.set_num_threads(1)
    settings, out = args
    return search(SearchConfig(**settings), out, progress=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="mnist")
    parser.add_argument("--model", default="lenet-300-100")
    parser.add_argument("--epochs", type=int, default=15)
    args = parser.parse_args()
    base = {
        "model": args.model,
        "data": args.data,
        "epochs": args.epochs,
        "device": "cpu",
        "target_sparsity": 0.5,
    }
    if args.data in ("mnist", "fashion-mnist"):
        base["data_dir"] = str(DATA_ROOT / args.data)
    with tempfile.TemporaryDirectory() as tmp:
        runs = {"unstructured": str(Path(tmp) / "u"), "2:4 searched": str(Path(tmp) / "s")}
        cells = [
            ({**base}, runs["unstructured"]),
            ({**base, "granularity": "2:4"}, runs["2:4 searched"]),
        ]
        with ProcessPoolExecutor(2) as pool:
            summaries = dict(zip(runs, pool.map(_search, cells), strict=True))
        projected = export(ExportRequest(runs["unstructured"], "2:4", Path(tmp) / "p.onnx"))
        searched = export(ExportRequest(runs["2:4 searched"], "2:4", Path(tmp) / "s.onnx"))
    change = projected["projection"]
    print(f"{args.model} on {args.data}, {args.epochs} epochs, target sparsity 0.5\n")
    print("| ticket | test accuracy | sparsity | 2:4 layers |")
    print("|---|---:|---:|---|")
    u, s = summaries["unstructured"], summaries["2:4 searched"]
    print(
        f"| unstructured 50% | {100 * u['test_accuracy']:.2f}% | {100 * u['sparsity']:.2f}% | – |"
    )
    print(
        f"| unstructured, projected to 2:4 at export | {100 * change['accuracy_after']:.2f}% | "
        f"{100 * projected['sparsity']:.2f}% | {', '.join(projected['pattern_24_layers'])} |"
    )
    print(
        f"| searched with --granularity 2:4 | {100 * s['test_accuracy']:.2f}% | "
        f"{100 * s['sparsity']:.2f}% | {', '.join(searched['pattern_24_layers'])} |"
    )
    print(
        f"\nprojection changed accuracy by {100 * change['accuracy_change']:+.2f} points; "
        f"searching in 2:4 instead: {100 * (s['test_accuracy'] - change['accuracy_after']):+.2f}"
    )


if __name__ == "__main__":
    main()
