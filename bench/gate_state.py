"""Where a gate search ended up: per-epoch training fit and λ, and per-layer gate means.

    python bench/gate_state.py runs/g098 runs/ep098
    python bench/gate_state.py --paths runs/g098 runs/ep098

`--paths` (MLP tickets, any method): the network each ticket keeps, hidden unit by hidden
unit. A unit is live when a kept weight reaches it and a kept weight leaves it; kept weights
into or out of a dead unit change no output of a bias-free ReLU network.

For each run directory: the epoch records of metrics.jsonl (train loss and accuracy, validation
accuracy, sparsity, λ) and, for stg gates, per layer the quantiles of μ among pruned gates and
P(open) of the kept and pruned ones at the run's final σ and t. A pruned gate far below τ has
P(open) ≈ 0 and receives no gradient: it can never reopen (docs/search.md, "Dead gates").
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from slt_deploy.checkpoint import load_checkpoint
from slt_deploy.masking.gates import GateConfig, StochasticGate
from slt_deploy.masking.layers import masked_layers
from slt_deploy.search.config import SearchConfig
from slt_deploy.search.ticket import build_model, load_ticket


def report(run: Path) -> None:
    config = SearchConfig.from_dict(json.loads((run / "config.json").read_text()))
    print(f"## {run} ({config.method}, target {config.target_sparsity})")
    print("| epoch | train loss | train acc | val acc | sparsity | λ |")
    print("|---:|---:|---:|---:|---:|---:|")
    for line in (run / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        val = "–" if r.get("val_accuracy") is None else f"{100 * r['val_accuracy']:.2f}"
        print(
            f"| {r['epoch']} | {r['train_loss']:.4f} | {100 * r['train_accuracy']:.2f} | {val} "
            f"| {100 * r['sparsity']:.2f} | {r.get('lambda', 0.0):.3g} |"
        )
    if config.method != "gates" or config.gate != "stg":
        print()
        return
    sigma = config.sigma if config.sigma_final is None else config.sigma_final
    t = 1.0 if config.temperature_final is None else config.temperature_final
    tau = config.threshold
    print(f"\nfinal σ {sigma}, t {t}")
    print("| layer | gates | kept | μ of pruned: q1 / q10 / q50 / q90 | P(open) kept | pruned |")
    print("|---|---:|---:|---|---:|---:|")
    model = load_checkpoint(run / "checkpoint.safetensors")["model"]
    for name, mean in model.items():
        if not name.endswith("gate_mean"):
            continue
        # the gate's own P(open) and mask, at the run's final σ and t
        gate = StochasticGate(mean.shape, GateConfig(sigma=sigma, threshold=tau, compile=False))
        gate.gate_mean.data = mean.float()
        gate.temperature = t
        with torch.no_grad():
            kept, p_open = gate.binary_mask().flatten(), gate.open_probability().flatten()
        mean = mean.float().flatten()
        pruned = mean[~kept]
        sample = pruned[torch.randperm(len(pruned), generator=torch.Generator().manual_seed(0))]
        q = torch.quantile(sample[:100_000], torch.tensor([0.01, 0.1, 0.5, 0.9])).tolist()
        print(
            f"| {name.split('.')[0]} | {len(mean):,} | {int(kept.sum()):,} "
            f"| {' / '.join(f'{v:.2f}' for v in q)} | {p_open[kept].mean():.3f} "
            f"| {p_open[~kept].mean():.2e} |"
        )
    print()


@torch.no_grad()
def paths(run: Path) -> None:
    """Live hidden units and the kept weights on dead paths of a chain of Linear layers."""
    model = build_model(load_ticket(run))
    masks = [(name, layer.mask_source.binary_mask()) for name, layer in masked_layers(model)]
    if any(mask.dim() != 2 for _, mask in masks):
        raise SystemExit(f"{run}: --paths reads chains of Linear layers (an MLP ticket)")
    live = torch.ones(masks[0][1].shape[1], dtype=torch.bool)  # every input feature
    alive_rows = []
    for _, mask in masks:  # forward: a unit is reached when a kept weight comes from a live one
        live = mask[:, live].any(1)
        alive_rows.append(live)
    used = torch.ones(masks[-1][1].shape[0], dtype=torch.bool)  # every logit
    useful = [0] * len(masks)
    for i in range(len(masks) - 1, -1, -1):  # backward: keep units whose output is read
        mask = masks[i][1]
        rows = used & alive_rows[i]
        cols = mask[rows].any(0) if i else torch.ones(mask.shape[1], dtype=torch.bool)
        if i:
            cols &= alive_rows[i - 1]
        useful[i] = int(mask[rows][:, cols].sum())
        used = cols
        alive_rows[i] = rows
    print(f"## {run}: kept weights on live paths")
    print("| layer | kept | on live paths | live units out / total |")
    print("|---|---:|---:|---:|")
    for (name, mask), rows, n in zip(masks, alive_rows, useful, strict=True):
        print(f"| {name} | {int(mask.sum()):,} | {n:,} | {int(rows.sum())} / {mask.shape[0]} |")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories of slt-deploy search")
    parser.add_argument("--paths", action="store_true", help="live units per layer (MLP tickets)")
    args = parser.parse_args()
    for run in args.runs:
        if args.paths:
            paths(run)
        else:
            report(run)


if __name__ == "__main__":
    main()
