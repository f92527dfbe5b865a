"""Structured tickets: accuracy of neuron gates on LeNet-300-100, and CPU latency of shrunk
networks against their unshrunk originals through ONNX Runtime.

    python bench/structured.py lenet --data-dir ../shared/data/mnist --epochs 15 --seeds 0,1,2
    python bench/structured.py lenet --variants channel-tuned,channel+unstructured --seeds 0,1,2
    python bench/structured.py latency runs/conv6-channel-50 runs/conv6-channel-70

`lenet` searches each of `--variants` at several targets (and, with --ablation, once with
the classifier left without per-weight gates, to measure why it has them) and prints accuracy,
the weights physically removed and the neurons kept. Variants: `channel` (defaults),
`channel-tuned` (lr 0.03, signed-constant weights: the best neuron-only setting found),
`channel+unstructured` (per-weight gates inside the kept neurons, --target-scope structure:
the target is the fraction physically removed) and `channel+unstructured-all` (the target
counts every zero). `latency` exports each channel run unshrunk
(--no-shrink: the same network at its original shapes, what a dense runtime runs without this
feature) and shrunk with kept channel counts rounded to each of `--multiples`, measures them
interleaved in one `slt-deploy bench` run at batch 1 and 32, and prints each latency ratio
beside its MACs ratio.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from unittest import mock

from slt_deploy.export import ExportRequest, export
from slt_deploy.masking import channels
from slt_deploy.search import methods
from slt_deploy.search.config import SearchConfig
from slt_deploy.search.loop import search


def _without_classifier_gates(model, input_shape):
    return replace(channels.channel_plan(model, input_shape), outputs=frozenset())


VARIANTS = {
    "channel": {"granularity": "channel"},
    "channel-tuned": {"granularity": "channel", "lr": 0.03, "init": "signed-constant"},
    "channel+unstructured": {"granularity": "channel+unstructured", "target_scope": "structure"},
    "channel+unstructured-all": {"granularity": "channel+unstructured"},
}


def lenet(args: argparse.Namespace) -> None:
    rows: dict[str, list[dict]] = {}
    variants = args.variants.split(",")
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        raise SystemExit(f"unknown variant(s) {', '.join(unknown)}; known: {', '.join(VARIANTS)}")
    cases = [(f"{v} {t:.2f}", v, t, False) for t in args.targets for v in variants]
    if args.ablation:
        cases.append(("channel 0.77, classifier ungated", "channel", 0.77, True))
    seeds = [int(s) for s in args.seeds.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        for label, variant, target, ablate in cases:
            for seed in seeds:
                config = SearchConfig(
                    model="lenet-300-100",
                    data=args.data,
                    data_dir=args.data_dir,
                    target_sparsity=target,
                    epochs=args.epochs,
                    seed=seed,
                    **VARIANTS[variant],
                )
                patch = (
                    mock.patch.object(methods, "channel_plan", _without_classifier_gates)
                    if ablate
                    else mock.patch.object(methods, "channel_plan", channels.channel_plan)
                )
                with patch:
                    summary = search(config, Path(tmp) / f"{label}-{seed}", progress=False)
                rows.setdefault(label, []).append(summary)
                print(
                    f"{label} seed {seed}: acc {summary['test_accuracy']:.4f} "
                    f"sparsity {summary['sparsity']:.4f} kept {summary['shrunk_channels_kept']}",
                    flush=True,
                )
    print(f"\nLeNet-300-100 on {args.data}, {args.epochs} epochs, seeds {args.seeds}, CPU")
    print(
        "| setting | test accuracy % | weights removed % | physically removed % | neurons kept "
        "| pixels kept |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for label, runs in rows.items():
        acc = [100 * r["test_accuracy"] for r in runs]
        removed = [100 * r["sparsity"] for r in runs]
        physical = [100 * (1 - r["shrunk_params_ratio"]) for r in runs]
        kept = [r["shrunk_channels_kept"] for r in runs]
        neurons = [k.get("fc1", 300) + k.get("fc2", 100) for k in kept]  # absent: all kept
        pixels = [k.get("fc1 inputs", 784) for k in kept]
        print(
            f"| {label} | {_ms(acc, 2)} | {_ms(removed, 2)} | {_ms(physical, 2)} | "
            f"{sum(neurons) / len(runs):.0f} of 400 | {statistics.mean(pixels):.0f} of 784 |"
        )


def _ms(values: list[float], digits: int) -> str:
    mean = statistics.mean(values)
    if len(values) < 2:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def latency(args: argparse.Namespace) -> None:
    multiples = [int(m) for m in args.multiples.split(",")]
    print(
        "| run | variant | MACs ratio | params ratio | batch | p50 ms | latency ratio to unshrunk |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for run in args.runs:
            full = Path(tmp) / f"{run.name}.onnx"
            export(ExportRequest(run, "onnx", full, shrink=False, data_dir=args.data_dir))
            variants = {"unshrunk": (full, 1.0, 1.0)}
            for multiple in multiples:
                path = Path(tmp) / f"{run.name}-x{multiple}.onnx"
                report = export(
                    ExportRequest(
                        run, "onnx", path, data_dir=args.data_dir, channel_multiple=multiple
                    )
                )["shrunk"]
                label = f"shrunk, counts to a multiple of {multiple}"
                variants[label] = (path, report["macs_ratio"], report["params_ratio"])
            records = Path(tmp) / f"{run.name}.json"
            paths = [str(v[0]) for v in variants.values()]
            subprocess.run(
                [sys.executable, "-m", "slt_deploy", "bench", *paths,
                 "--batch-size", "1,32", "--min-seconds", str(args.seconds), "--no-memory",
                 "--json", str(records)],
                check=True, capture_output=True, text=True,
            )  # fmt: skip
            timed = json.loads(records.read_text())
            for batch in (1, 32):
                by_name = {Path(r["artifact"]).name: r for r in timed if r["batch_size"] == batch}
                for label, (path, macs, params) in variants.items():
                    record = by_name[path.name]
                    print(
                        f"| {run.name} | {label} | {macs:.3f} | {params:.3f} | {batch} | "
                        f"{record['latency_ms']['p50']:.3f} | "
                        f"{record['ratio']['latency_p50']:.3f} |",
                        flush=True,
                    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("lenet")
    p.add_argument("--data", default="mnist")
    p.add_argument("--data-dir", default="../shared/data/mnist")
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--seeds", default="0")
    p.add_argument("--targets", type=lambda s: [float(v) for v in s.split(",") if v],
                   default=[0.5, 0.77, 0.9])  # fmt: skip
    p.add_argument("--variants", default="channel", help=f"comma-separated: {', '.join(VARIANTS)}")
    p.add_argument("--ablation", action="store_true")
    p = sub.add_parser("latency")
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--data-dir")
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--multiples", default="1,8", help="channel multiples to compare")
    args = parser.parse_args()
    {"lenet": lenet, "latency": latency}[args.command](args)


if __name__ == "__main__":
    main()
