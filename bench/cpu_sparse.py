"""Dense ONNX Runtime vs the CSR runtime on a real 90%-sparse ticket, CPU, batch 1 and 32.

    python bench/cpu_sparse.py --data-dir ../shared/data/mnist [--model fc --width 4096]

Searches a short gate ticket (the speed of a mask does not depend on how long it was
searched), exports it at exactly --sparsity as dense ONNX (zeros folded in) and as CSR, and
benches both with `slt-deploy bench`'s library: interleaved timing, peak memory in a child
process each. Prints the table and the two figures issue 4 asks for: CSR throughput at batch 32
over dense ORT, and CSR peak memory over dense ORT.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from slt_deploy.bench.run import BenchRequest, bench
from slt_deploy.bench.runners import RunnerOptions
from slt_deploy.bench.timing import TimingPolicy
from slt_deploy.export import ExportRequest, export
from slt_deploy.search.config import SearchConfig
from slt_deploy.search.loop import search


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="mnist")
    parser.add_argument("--data-dir")
    parser.add_argument("--model", default="fc")
    parser.add_argument("--width", type=float, help="fc: neurons [4096]; convN: multiplier [1]")
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--steps", type=int, default=40, help="search steps (mask quality only)")
    parser.add_argument("--sparsity", type=float, default=0.9)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--json", type=Path, help="write the bench records here")
    args = parser.parse_args()
    if args.model == "fc":
        kwargs = {"width": int(args.width or 4096), "depth": args.depth}
    else:
        kwargs = {"width": args.width or 1.0}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        config = SearchConfig(
            model=args.model, model_kwargs=kwargs, data=args.data, data_dir=args.data_dir,
            max_steps=args.steps, target_sparsity=args.sparsity,
        )  # fmt: skip
        search(config, out / "run", progress=False)
        dense = out / "dense.onnx"
        sparse = out / "sparse.csr.safetensors"
        for path, fmt in ((dense, "onnx"), (sparse, "csr")):  # the dense network at full shape
            export(ExportRequest(out / "run", fmt, path, sparsity=args.sparsity, shrink=False))
        request = BenchRequest(
            artifacts=(str(dense), str(sparse)),
            batch_sizes=(1, 32),
            options=RunnerOptions(threads=args.threads),
            policy=TimingPolicy(min_seconds=args.seconds),
        )
        records = bench(request)
    print(f"{args.model} {kwargs} on {args.data}, sparsity {args.sparsity}, "
          f"{records[0]['threads']} threads, {records[0]['machine']['cpu']}")  # fmt: skip
    for r in records:
        lat = r["latency_ms"]
        print(
            f"  {r['backend']:<13} batch {r['batch_size']:>2}: p50 {lat['p50']:.3f} ms  "
            f"p99 {lat['p99']:.3f} ms  {r['throughput_per_s']:.0f}/s  "
            f"peak {r['peak_memory_bytes'] / 2**20:.1f} MiB  "
            f"file {r['artifact_bytes'] / 2**20:.1f} MiB"
            f"  | p50 x{r['ratio']['latency_p50']:.2f}  throughput x{r['ratio']['throughput']:.2f}"
            f"  memory x{r['ratio']['peak_memory']:.2f}"
        )
    csr32 = next(r for r in records if r["backend"] == "torch-sparse" and r["batch_size"] == 32)
    ratio = csr32["ratio"]
    print(
        f"CSR / dense ORT at batch 32: throughput x{ratio['throughput']:.2f} (target >= 1.5), "
        f"peak memory x{ratio['peak_memory']:.2f} (target <= 0.5)"
    )
    if args.json:
        args.json.write_text(json.dumps(records, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
