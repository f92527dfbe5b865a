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


def child(model: str, method: str, batch: int, steps: int) -> dict:
    import torch

    from slt_deploy.data import DataSpec
    from slt_deploy.search.config import SearchConfig
    from slt_deploy.search.layers import masked_layers
    from slt_deploy.search.trainer import build_trainer

    torch.set_num_threads(torch.get_num_threads())
    baseline = _rss_kib("VmRSS")
    shape = (1, 28, 28) if model == "lenet-300-100" else (3, 32, 32)
    spec = DataSpec("bench", shape, 10, [0.5] * shape[0], [0.25] * shape[0])
    config = SearchConfig(model=model, method=method,
                          target_sparsity=None if method == "dense" else 0.9)  # fmt: skip
    trainer = build_trainer(config, spec, 1000, torch.device("cpu"))
    model_ = trainer.model
    layers = list(masked_layers(model_))
    gated = sum(layer.frozen_weight.numel() for _, layer in layers)
    trainable = sum(p.numel() for p in model_.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model_.parameters()) + sum(b.numel() for b in model_.buffers())
    x = torch.randn(batch, *shape)
    y = torch.randint(0, 10, (batch,))
    times = []
    for i in range(steps + 2):  # two warm-up steps: lazy initialisation, allocator growth
        started = time.perf_counter()
        trainer.step(x, y, i)
        times.append(time.perf_counter() - started)
    return {
        "model": model,
        "method": method,
        "gated_layers": len(layers),
        "gated_weights": gated,
        "trainable": trainable,
        "tensors_total": total,
        "step_seconds": statistics.median(times[2:]),
        "peak_training_mib": (_rss_kib("VmHWM") - baseline) / 1024,
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child", nargs=2, metavar=("MODEL", "METHOD"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*args.child, args.batch_size, args.steps)))
        return
    rows = []
    print(f"batch {args.batch_size}, median of {args.steps} steps after two warm-up steps, CPU")
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
                 str(args.batch_size), "--steps", str(args.steps)],
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
