"""int8 tickets on this CPU: fp32 ONNX Runtime vs int8 ONNX Runtime (QDQ) vs torch CSR.

    python bench/int8.py --out bench/results/int8 [--cases lenet-sc,conv4-channel-sc]

For each case a short real search makes a ticket (signed-constant or uniform weights; the
search length only sets accuracy, not speed), `export` writes fp32 ONNX, int8 ONNX (static,
uint8 activations: the x86-vnni profile) and CSR, and `slt_deploy.bench` times them
interleaved in one run at batch 1/32/256 with peak memory from child processes. Ratios are
against the first artifact of the row: the fp32 ONNX of the ticket (a dense session, zeros
folded in); for channel tickets the *unshrunk* fp32 ONNX, so the ratio shows int8 and
shrinking together. CSR is timed in a second interleaved run against the same fp32 baseline
(its own ratio), at batch 1 only for the CIFAR convolutions (unfold + CSR matmul takes seconds
per batch of 256; channel tickets get no CSR row: their CSR holds the unshrunk weights).
Accuracy: every artifact through its own runtime on the full test split.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

DATA_ROOT = Path(
    os.environ.get("SLT_DEPLOY_DATA", Path(__file__).parents[1] / ".." / "shared" / "data")
)

MNIST = {"data": "mnist", "target_sparsity": 0.9}
CIFAR = {"data": "cifar10", "target_sparsity": 0.9}
CHANNEL = {"granularity": "channel", "target_sparsity": 0.5, "target_scope": "structure"}
CASES = {  # name: SearchConfig fields
    "lenet-sc": {**MNIST, "init": "signed-constant"},
    "lenet-uniform": {**MNIST, "init": "uniform"},
    "fc4096-sc": {
        **MNIST,
        "model": "fc",
        "model_kwargs": {"width": 4096, "depth": 2},
        "init": "signed-constant",
    },
    "fc4096-uniform": {
        **MNIST,
        "model": "fc",
        "model_kwargs": {"width": 4096, "depth": 2},
        "init": "uniform",
    },
    "conv4-sc": {**CIFAR, "model": "conv4", "init": "signed-constant"},
    "conv4-uniform": {**CIFAR, "model": "conv4", "init": "uniform"},
    "conv4-channel-sc": {**CIFAR, **CHANNEL, "model": "conv4", "init": "signed-constant"},
    "conv6-sc": {**CIFAR, "model": "conv6", "init": "signed-constant"},
    "conv6-channel-sc": {**CIFAR, **CHANNEL, "model": "conv6", "init": "signed-constant"},
}
DATA_DIRS = {"mnist": "mnist", "cifar10": "cifar10-jpeg.tar"}


def ticket(name: str, fields: dict, work: Path, epochs: int, subset: int) -> Path:
    from slt_deploy.search.config import SearchConfig
    from slt_deploy.search.loop import search

    run = work / name
    if (run / "ticket.safetensors").is_file():
        return run
    config = SearchConfig(
        **fields,
        data_dir=str(DATA_ROOT / DATA_DIRS[fields["data"]]),
        epochs=epochs,
        subset=subset,
        seed=0,
    )
    search(config, run, progress=False)
    return run


def artifacts(run: Path, work: Path, name: str, channel: bool) -> dict[str, Path]:
    from slt_deploy.export import ExportRequest, export
    from slt_deploy.export.targets import load_target

    out = {}
    if channel:
        out["fp32 unshrunk"] = work / f"{name}.unshrunk.onnx"
        export(ExportRequest(run, "onnx", out["fp32 unshrunk"], shrink=False))
    out["fp32"] = work / f"{name}.onnx"
    export(ExportRequest(run, "onnx", out["fp32"]))
    out["int8"] = work / f"{name}.int8.onnx"
    export(ExportRequest(run, "onnx-int8", out["int8"], target=load_target("x86-vnni")))
    if not channel:  # a channel ticket's CSR holds the unshrunk weights: not a fair row
        out["csr"] = work / f"{name}.csr.safetensors"
        export(ExportRequest(run, "csr", out["csr"]))
    return out


def accuracy(path: Path, data: str) -> float:
    from slt_deploy.evaluate import evaluate_artifact

    # CSR convolutions unfold their input: small batches keep the columns in memory
    batch = 100 if path.name.endswith(".csr.safetensors") else 1000
    return evaluate_artifact(path, data, str(DATA_ROOT / DATA_DIRS[data]), batch)["accuracy"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for tickets + results")
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--subset", type=int, default=10000, help="training images searched")
    parser.add_argument("--batch-sizes", default="1,32,256")
    parser.add_argument("--seconds", type=float, default=1.5, help="timed per pair and batch")
    args = parser.parse_args()

    from slt_deploy.bench.run import BenchRequest, bench
    from slt_deploy.bench.timing import TimingPolicy

    work = args.out / "work"
    work.mkdir(parents=True, exist_ok=True)
    rows, raw = [], {}
    batches = tuple(int(b) for b in args.batch_sizes.split(","))
    started = time.perf_counter()
    for name in args.cases.split(","):
        fields = CASES[name]
        channel = fields.get("granularity") == "channel"
        run = ticket(name, fields, work, args.epochs, args.subset)
        paths = artifacts(run, work, name, channel)
        policy = TimingPolicy(min_seconds=args.seconds, min_iterations=10)
        dense = tuple(str(p) for label, p in paths.items() if label != "csr")
        records = bench(BenchRequest(artifacts=dense, batch_sizes=batches, policy=policy))
        if "csr" in paths:
            # CSR convolutions go through unfold + CSR matmul (docs/export.md): seconds per
            # batch of 256 CIFAR images, so convolutional CSR rows are batch 1 only
            small = batches if fields["data"] == "mnist" else batches[:1]
            request = BenchRequest(
                artifacts=(str(paths["fp32"]), str(paths["csr"])),
                batch_sizes=small,
                policy=policy,
            )
            records += [r for r in bench(request) if r["artifact"] == str(paths["csr"])]
        accuracies = {label: accuracy(p, fields["data"]) for label, p in paths.items()}
        reports = {label: json.loads(Path(f"{p}.json").read_text()) for label, p in paths.items()}
        raw[name] = {"config": fields, "records": records, "accuracy": accuracies}
        raw[name]["int8_report"] = reports["int8"]["int8"]
        for record in records:
            label = next(k for k, p in paths.items() if str(p) == record["artifact"])
            rows.append((name, label, record, accuracies[label], reports[label]))
        print(f"{name}: done at {time.perf_counter() - started:.0f} s", flush=True)
    table = render(rows)
    given = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items())
    header = [
        "# command:",
        f"python bench/int8.py {given}",
        f"# {int(time.perf_counter() - started)} s; ratios against the first artifact of each case "
        "(fp32 ONNX; unshrunk for channel tickets), measured interleaved in one run",
    ]
    text = "\n".join(header) + "\n\n" + table
    print(text)
    (args.out / "int8.txt").write_text(text + "\n")
    (args.out / "int8.json").write_text(json.dumps(raw, indent=1, sort_keys=True) + "\n")


def render(rows: list) -> str:
    lines = [
        "| case | artifact | batch | p50 ms | p90 ms | throughput/s | x fp32 (throughput) | "
        "peak MiB | file KiB | test accuracy | exact int8 layers |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, label, record, acc, report in rows:
        latency = record["latency_ms"]
        ratio = (record.get("ratio") or {}).get("throughput")
        memory = record.get("peak_memory_bytes")
        quantized = report.get("int8")
        exact = f"{quantized['layers_exact']}/{quantized['layers_quantized']}" if quantized else "–"
        lines.append(
            f"| {name} | {label} | {record['batch_size']} | {latency['p50']:.3f} | "
            f"{latency['p90']:.3f} | {record['throughput_per_s']:,.0f} | "
            f"{'–' if ratio is None else f'{ratio:.2f}x'} | "
            f"{'–' if memory is None else f'{memory / 2**20:.1f}'} | "
            f"{record['artifact_bytes'] / 1024:,.0f} | {100 * acc:.2f}% | {exact} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
