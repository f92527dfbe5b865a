"""GPU inference, the first minutes of a lease: dense ONNX Runtime (CUDA EP, fp32 and fp16)
vs torch 2:4 semi-structured vs torch CSR, and a channel-shrunk ResNet-18 vs dense.

    python bench/gpu_deploy.py --out OUT --data CIFAR10_TAR            # on the GPU
    python bench/gpu_deploy.py --out OUT --data CIFAR10_TAR --dry-run  # CPU check of the script

Layers: ViT-B/16's attention linears (qkv 768→2304, proj 768→768), its MLP linears
(fc1 768→3072, fc2 3072→768) and the MLP block (fc1, GELU, fc2), on batch × 197 tokens at
batch 1/32/256. Candidates, interleaved in one run per layer and batch (ratios share the
load): ORT CUDA EP fp32 and fp16 (dense; I/O bound on the GPU), torch fp16 dense, torch fp16
2:4 semi-structured (`to_sparse_semi_structured` on a 2:4 mask), torch CSR fp32 at 90/98/99%.
ResNet-18: a channel ticket (`--granularity channel --target-scope structure`, a short real
search: speed does not depend on its accuracy) exported shrunk and unshrunk, timed with
`slt_deploy.bench` under ORT on the same device. The dry run does all of it on the CPU with
tiny sizes (fp32, no 2:4: torch's kernels need CUDA) so a lease never meets a broken script.
"""

from __future__ import annotations

import argparse
import io
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

LAYERS = {  # name: (in, hidden or None, out)
    "vit-qkv": (768, None, 2304),
    "vit-proj": (768, None, 768),
    "vit-fc1": (768, None, 3072),
    "vit-fc2": (3072, None, 768),
    "vit-mlp-block": (768, 3072, 768),
}
TOKENS = 197
CSR_SPARSITY = (0.9, 0.98, 0.99)


def module(spec: tuple, generator: torch.Generator) -> nn.Module:
    fan_in, hidden, fan_out = spec
    if hidden is None:
        net = nn.Linear(fan_in, fan_out)
    else:
        net = nn.Sequential(nn.Linear(fan_in, hidden), nn.GELU(), nn.Linear(hidden, fan_out))
    with torch.no_grad():
        for layer in net.modules():
            if isinstance(layer, nn.Linear):
                layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator) * 0.02)
                layer.bias.zero_()
    return net.eval()


def mask_24(weight: torch.Tensor) -> torch.Tensor:
    """The 2 largest of each 4 consecutive inputs kept (the pattern sparse tensor cores take)."""
    groups = weight.reshape(weight.shape[0], -1, 4)
    keep = groups.abs().topk(2, dim=-1).indices
    mask = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, keep, True)
    return (groups * mask).reshape_as(weight)


def mask_random(weight: torch.Tensor, sparsity: float, generator: torch.Generator):
    keep = torch.rand(weight.shape, generator=generator) >= sparsity
    return weight * keep


class Candidate:
    """What slt_deploy.bench.timing interleaves: infer(feed) and synchronize()."""

    def __init__(self, label: str, fn, feed, device: str) -> None:
        self.label, self.fn, self.feed, self.device = label, fn, feed, device

    def infer(self, feed) -> None:
        self.fn(feed)

    def synchronize(self) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()


def ort_candidate(label: str, net: nn.Module, x: torch.Tensor, device: str, half: bool):
    import onnxruntime as ort

    net = net.half() if half else net.float()
    example = x.half() if half else x.float()
    buffer = io.BytesIO()
    torch.onnx.export(
        net.cpu(),
        (example[:2].cpu(),),
        buffer,
        input_names=["x"],
        output_names=["y"],
        dynamic_axes={"x": {0: "rows"}, "y": {0: "rows"}},
        opset_version=17,
        dynamo=False,
    )
    provider = "CUDAExecutionProvider" if device == "cuda" else "CPUExecutionProvider"
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(buffer.getvalue(), options, providers=[provider])
    binding = session.io_binding()
    array = example.cpu().numpy()
    binding.bind_ortvalue_input("x", ort.OrtValue.ortvalue_from_numpy(array, device, 0))
    binding.bind_output("y", device)
    return Candidate(label, lambda b: session.run_with_iobinding(b), binding, device)


def torch_candidate(label: str, net: nn.Module, x: torch.Tensor, device: str):
    def run(feed):
        with torch.no_grad():
            net(feed)

    return Candidate(label, run, x, device)


def semi_structured(net: nn.Module) -> nn.Module:
    from torch.sparse import to_sparse_semi_structured

    for layer in net.modules():
        if isinstance(layer, nn.Linear):
            weight = mask_24(layer.weight.detach())
            layer.weight = nn.Parameter(to_sparse_semi_structured(weight), requires_grad=False)
    return net


def csr_candidate(label, net, x, sparsity, generator, device):
    """Each Linear as y = (W_csr @ xᵀ)ᵀ + b in fp32 (torch.sparse CSR on the device)."""
    layers = []
    for layer in net.modules():
        if isinstance(layer, nn.Linear):
            w = mask_random(layer.weight.detach().float().cpu(), sparsity, generator)
            layers.append((w.to_sparse_csr().to(device), layer.bias.detach().float().to(device)))
    gelu = isinstance(net, nn.Sequential)

    def run(feed):
        h = feed
        for i, (w, b) in enumerate(layers):
            h = torch.sparse.mm(w, h.t()).t() + b
            if gelu and i == 0:
                h = torch.nn.functional.gelu(h)

    return Candidate(label, run, x.float(), device)


def layer_rows(args, device: str) -> list[dict]:
    from slt_deploy.bench.timing import TimingPolicy, latency_summary, measure_interleaved

    policy = TimingPolicy(min_seconds=args.seconds, min_iterations=10)
    rows = []
    for name in args.layers.split(","):
        spec = LAYERS[name]
        for batch in args.batch_sizes:
            generator = torch.Generator().manual_seed(0)
            base = module(spec, generator)
            rows_in = batch * args.tokens
            x = torch.randn(rows_in, spec[0], generator=generator)
            half = device == "cuda"
            candidates = [ort_candidate("ort fp32", _copy(base), x, device, half=False)]
            if half:
                candidates.append(ort_candidate("ort fp16", _copy(base), x, device, half=True))
            dense = _copy(base).to(device, torch.float16 if half else torch.float32)
            xd = x.to(device, torch.float16 if half else torch.float32)
            candidates.append(
                torch_candidate(f"torch {'fp16' if half else 'fp32'}", dense, xd, device)
            )
            notes = []
            if half:
                try:
                    sparse = semi_structured(_copy(base).to(device, torch.float16))
                    candidates.append(torch_candidate("torch fp16 2:4", sparse, xd, device))
                except (RuntimeError, ValueError) as exc:
                    notes.append(f"2:4 not run: {str(exc).splitlines()[0]}")
            else:
                notes.append("2:4 not run: torch's semi-structured kernels need CUDA")
            for sparsity in CSR_SPARSITY:
                label = f"torch csr fp32 {round(100 * sparsity)}%"
                candidates.append(
                    csr_candidate(label, base, x.to(device), sparsity, generator, device)
                )
            samples = measure_interleaved([(c, c.feed) for c in candidates], policy)
            first = float(np.median(samples[0]))
            for candidate, times in zip(candidates, samples, strict=True):
                summary = latency_summary(times)
                rows.append(
                    {
                        "case": name,
                        "batch": batch,
                        "rows": rows_in,
                        "candidate": candidate.label,
                        "latency_ms": summary,
                        "speedup_vs_ort_fp32_p50": first / float(np.median(times)),
                        "notes": notes,
                    }
                )
            print(f"{name} batch {batch}: {len(candidates)} candidates", flush=True)
    return rows


def _copy(net: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(net)


def resnet_rows(args, device: str, work: Path) -> list[dict]:
    """A channel-shrunk ResNet-18 ticket vs its unshrunk (dense-shaped) export, ORT."""
    from slt_deploy.bench.run import BenchRequest, bench
    from slt_deploy.bench.runners import RunnerOptions
    from slt_deploy.bench.timing import TimingPolicy
    from slt_deploy.export import ExportRequest, export
    from slt_deploy.search.config import SearchConfig
    from slt_deploy.search.loop import search

    run = work / "resnet18-channel"
    config = SearchConfig(
        model="resnet18",
        data="cifar10",
        data_dir=str(args.data),
        granularity="channel",
        target_sparsity=0.5,
        target_scope="structure",
        epochs=1,
        subset=args.subset,
        max_steps=args.steps,
        device=device,
    )
    search(config, run, progress=False)
    dense, shrunk = work / "r18.unshrunk.onnx", work / "r18.shrunk.onnx"
    export(ExportRequest(run, "onnx", dense, shrink=False))
    report = export(ExportRequest(run, "onnx", shrunk))
    records = bench(
        BenchRequest(
            artifacts=(str(dense), str(shrunk)),
            batch_sizes=tuple(args.batch_sizes),
            device=device,
            options=RunnerOptions(device=device),
            policy=TimingPolicy(min_seconds=args.seconds, min_iterations=10),
            memory=not args.dry_run,
        )
    )
    for record in records:
        record["shrunk"] = report["shrunk"]
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True, help="cifar10-jpeg.tar")
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes")
    parser.add_argument("--seconds", type=float, default=1.0, help="timed per candidate")
    parser.add_argument("--layers", default=",".join(LAYERS), help="comma-separated subset")
    args = parser.parse_args()
    device = "cpu" if args.dry_run else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU visible to torch (use --dry-run on a CPU)")
    args.batch_sizes = [1] if args.dry_run else [1, 32, 256]
    args.tokens = 4 if args.dry_run else TOKENS
    args.subset, args.steps = (256, 2) if args.dry_run else (10000, 200)
    if args.dry_run:
        args.seconds = min(args.seconds, 0.05)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    machine = {
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu (dry run)",
        "torch": torch.__version__,
    }
    layers = layer_rows(args, device)
    resnet = resnet_rows(args, device, args.out / "work")
    result = {"machine": machine, "layers": layers, "resnet18_channel": resnet}
    (args.out / "gpu_deploy.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    lines = [
        f"# {machine['device']}, torch {machine['torch']}, {time.perf_counter() - started:.0f} s"
    ]
    lines += [
        "| case | batch | candidate | p50 ms | p90 ms | x ort fp32 (p50) |",
        "|---|---:|---|---:|---:|---:|",
    ]
    for row in layers:
        lat = row["latency_ms"]
        lines.append(
            f"| {row['case']} | {row['batch']} | {row['candidate']} | {lat['p50']:.3f} | "
            f"{lat['p90']:.3f} | {row['speedup_vs_ort_fp32_p50']:.2f}x |"
        )
    for record in resnet:
        lat, ratio = record["latency_ms"], (record.get("ratio") or {}).get("latency_p50")
        lines.append(
            f"| resnet18 channel | {record['batch_size']} | {Path(record['artifact']).name} | "
            f"{lat['p50']:.3f} | {lat['p90']:.3f} | "
            f"{'–' if ratio is None else f'{1 / ratio:.2f}x'} (vs unshrunk) |"
        )
    text = "\n".join(lines)
    (args.out / "gpu_deploy.txt").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
