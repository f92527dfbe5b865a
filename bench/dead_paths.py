"""Dead paths: what `export` gains by leaving out kept weights that reach no output.

    python bench/dead_paths.py runs/ep90 runs/g90 --batch-size 1,32,256

For each ticket, two CSR artifacts of the same network: the searched mask whole, and the mask
`export` writes now, with the weights on dead paths removed (masking/paths.py). It prints per
layer the kept weights of each, checks that the two compute the same logits, and times all the
artifacts in one interleaved `bench` run (CSR back-end, this machine's threads), so every ratio
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
from slt_deploy.export.network import from_ticket
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
        images = torch.randn(
            256, *live.data.input_shape, generator=torch.Generator().manual_seed(0)
        )
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
        stem = f"{len(pairs)}-{run.name}"  # tickets of different sweeps share cell names
        paths = (
            folder / f"{stem}-whole.csr.safetensors",
            folder / f"{stem}-live.csr.safetensors",
        )
        write_file(whole, paths[0])
        write_file(live, paths[1])
        pairs.append((run, *paths))

    request = BenchRequest(
        tuple(str(p) for _, *ps in pairs for p in ps),
        batch_sizes=batches,
        policy=TimingPolicy(min_seconds=args.min_seconds),
        memory=False,
    )
    records = bench(request)
    p50 = {(r["artifact"], r["batch_size"]): r["latency_ms"]["p50"] for r in records}
    print(f"CSR latency p50 (ms), {records[0]['threads']} threads, one interleaved run")
    print("| ticket | batch | searched mask | dead paths removed | ratio |")
    print("|---|---:|---:|---:|---:|")
    for run, whole, live in pairs:
        for batch in batches:
            a, b = p50[(str(whole), batch)], p50[(str(live), batch)]
            print(f"| {run} | {batch} | {a:.3f} | {b:.3f} | {b / a:.3f} |")


if __name__ == "__main__":
    main()
