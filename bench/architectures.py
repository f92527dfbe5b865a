"""The paper's architectures at CIFAR resolution: what is gated, how many weights, training step
time and training memory of gates vs dense, side by side on this machine.

    python bench/architectures.py --batch-size 16 --steps 3 --json bench/results/architectures.json

Each (model, method) runs in its own child process so that peak memory (VmHWM, the kernel's
high-water mark of resident memory, minus what the process held after importing torch and
building nothing) is that of one training setup alone. Each child runs the search loop's own
`Trainer.step` on random CIFAR-shaped batches: two warm-up steps, then `--steps` timed steps;
the median is reported. Gates and dense of one model run back to back, so the ratio compares
like with like on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

MODELS = ["lenet-300-100", "conv4", "conv6", "resnet18", "resnet50", "wide_resnet50_2",
          "wrn-28-10", "vit_tiny", "vit_small", "vit_base", "swin_tiny"]  # fmt: skip


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def child(
    model: str, method: str, batch: int, steps: int, device_name: str = "cpu", variant: str = "bf16"
) -> dict:
    """One training setup. On CUDA, `variant` is fp32, bf16 (autocast) or bf16-cl (autocast +
    channels-last); memory is torch's peak allocation, time is synchronised per step."""
    import torch

    from slt_deploy.data import DataSpec
    from slt_deploy.masking.layers import masked_layers
    from slt_deploy.search.config import SearchConfig
    from slt_deploy.search.trainer import build_trainer

    torch.set_num_threads(torch.get_num_threads())
    baseline = _rss_kib("VmRSS")
    shape = (1, 28, 28) if model == "lenet-300-100" else (3, 32, 32)
    spec = DataSpec("bench", shape, 10, [0.5] * shape[0], [0.25] * shape[0])
    device = torch.device(device_name)
    config = SearchConfig(model=model, method=method,
                          target_sparsity=None if method == "dense" else 0.9,
                          amp=variant != "fp32", channels_last=variant == "bf16-cl")  # fmt: skip
    trainer = build_trainer(config, spec, 1000, device)
    cuda = device.type == "cuda"
    model_ = trainer.model
    layers = list(masked_layers(model_))
    gated = sum(layer.frozen_weight.numel() for _, layer in layers)
    trainable = sum(p.numel() for p in model_.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model_.parameters()) + sum(b.numel() for b in model_.buffers())
    x = torch.randn(batch, *shape, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    times = []
    for i in range(steps + 2):  # two warm-up steps: lazy initialisation, allocator growth
        if cuda:
            torch.cuda.synchronize()
        started = time.perf_counter()
        trainer.step(x, y, i)
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    peak = (
        torch.cuda.max_memory_allocated() / 2**20 if cuda else (_rss_kib("VmHWM") - baseline) / 1024
    )
    return {
        "model": model,
        "method": method,
        "gated_layers": len(layers),
        "gated_weights": gated,
        "trainable": trainable,
        "tensors_total": total,
        "step_seconds": statistics.median(times[2:]),
        "peak_training_mib": peak,
        "threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "variant": variant if cuda else "fp32",
        "batch": batch,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument(
        "--variant",
        default="bf16",
        help="CUDA only: fp32, bf16 (autocast) or bf16-cl (autocast + channels-last)",
    )
    parser.add_argument("--child", nargs=2, metavar=("MODEL", "METHOD"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        result = child(*args.child, args.batch_size, args.steps, args.device, args.variant)
        print(json.dumps(result))
        return
    rows = []
    where = "CPU" if args.device == "cpu" else f"{args.device} {args.variant}"
    print(f"batch {args.batch_size}, median of {args.steps} steps after two warm-up steps, {where}")
    columns = ["model", "gated layers", "gated weights", "other frozen tensors", "dense s/step",
               "gates s/step", "gates / dense time", "dense MiB", "gates MiB",
               "gates / dense memory"]  # fmt: skip
    print("| " + " | ".join(columns) + " |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for model in args.models.split(","):
        result = {}
        for method in ("dense", "gates"):
            done = subprocess.run(
                [sys.executable, __file__, "--child", model, method, "--batch-size",
                 str(args.batch_size), "--steps", str(args.steps), "--device", args.device,
                 "--variant", args.variant],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            result[method] = json.loads(done.stdout.strip().splitlines()[-1])
        d, g = result["dense"], result["gates"]
        other = g["tensors_total"] - g["gated_weights"] - g["trainable"]
        print(f"| {model} | {g['gated_layers']} | {g['gated_weights']:,} | {other:,} | "
              f"{d['step_seconds']:.3f} | {g['step_seconds']:.3f} | "
              f"{g['step_seconds'] / d['step_seconds']:.2f}x | {d['peak_training_mib']:.0f} | "
              f"{g['peak_training_mib']:.0f} | "
              f"{g['peak_training_mib'] / d['peak_training_mib']:.2f}x |", flush=True)  # fmt: skip
        rows.extend([d, g])
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
