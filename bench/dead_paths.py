"""Dead paths: what `export` gains by leaving out kept weights that reach no output.

    python bench/dead_paths.py runs/ep90 runs/g90 --batch-size 1,32,256

For each ticket, the same network twice in two formats: as `export` wrote it before (the
searched mask whole; ONNX at full shapes) and as it writes it now (the weights on dead paths
removed, masking/paths.py; ONNX with the units they left empty shrunk away, the input features
kept whole, masking/shrink.py). It prints per layer the kept weights of each, checks that the
two compute the same logits, and times all the artifacts in one interleaved `bench` run (CSR
under torch's sparse kernels, ONNX under ONNX Runtime, this machine's threads), so every ratio
comes from one run.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from slt_deploy.api import BenchRequest, bench
from slt_deploy.bench.timing import TimingPolicy
from slt_deploy.export.csr_format import write_file
from slt_deploy.export.network import from_ticket, runtime_network
from slt_deploy.export.onnx_format import write_model
from slt_deploy.masking.shrink import measure
from slt_deploy.search.ticket import load_ticket


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories or tickets")
    parser.add_argument("--batch-size", default="32", help="comma-separated")
    parser.add_argument("--min-seconds", type=float, default=2.0, help="per pair and round")
    args = parser.parse_args()
    batches = tuple(int(b) for b in args.batch_size.split(","))

    folder = Path(tempfile.mkdtemp(prefix="dead-paths-"))
    pairs = []
    for run in args.runs:
        ticket = load_ticket(run)
        whole, live = from_ticket(ticket, keep_dead_paths=True), from_ticket(ticket)
        shape = tuple(live.data.input_shape)
        images = torch.randn(256, *shape, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            diff = float((whole.model(images) - live.model(images)).abs().max())
        removed = sum(live.source["dead_path_weights_removed"].values())
        total = sum(int(m.sum()) for m in whole.masks.values())
        share = 100 * removed / total
        print(f"## {run}: {removed:,} of {total:,} kept weights on dead paths ({share:.1f}%)")
        print(f"max |Δ logits| between the two networks on 256 random inputs: {diff:.1e}")
        print("| layer | kept (searched) | kept (exported) |")
        print("|---|---:|---:|")
        for name, mask in whole.masks.items():
            print(f"| {name} | {int(mask.sum()):,} | {int(live.masks[name].sum()):,} |")
        print()
        small = runtime_network(live)[0]
        full, shrunk = measure(whole.model, shape), measure(small, shape)
        print(f"dense network: {full.macs:,} -> {shrunk.macs:,} multiply-adds per sample "
              f"({shrunk.macs / full.macs:.3f})\n")  # fmt: skip
        stem = folder / f"{len(pairs)}-{run.name}"  # tickets of different sweeps share names
        parts = ("whole.csr.safetensors", "live.csr.safetensors", "whole.onnx", "live.onnx")
        files = [Path(f"{stem}-{part}") for part in parts]
        write_file(whole, files[0])
        write_file(live, files[1])
        write_model(whole.model, shape, files[2])
        write_model(small, shape, files[3])
        pairs.append((run, files))

    request = BenchRequest(
        tuple(str(f) for _, files in pairs for f in files),
        batch_sizes=batches,
        policy=TimingPolicy(min_seconds=args.min_seconds),
        memory=False,
    )
    records = bench(request)
    p50 = {(r["artifact"], r["batch_size"]): r["latency_ms"]["p50"] for r in records}
    print(f"latency p50 (ms), {records[0]['threads']} threads, one interleaved run")
    print("| ticket | batch | CSR before | CSR now | ratio | dense ORT before | ORT now | ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for run, files in pairs:
        for batch in batches:
            t = [p50[(str(f), batch)] for f in files]
            print(f"| {run} | {batch} | {t[0]:.3f} | {t[1]:.3f} | {t[1] / t[0]:.3f} "
                  f"| {t[2]:.3f} | {t[3]:.3f} | {t[3] / t[2]:.3f} |")  # fmt: skip


if __name__ == "__main__":
    main()
