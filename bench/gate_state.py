"""Where a gate search ended up: per-epoch training fit and λ, and per-layer gate means.

    python bench/gate_state.py runs/g098 runs/ep098
    python bench/gate_state.py --paths runs/g098 runs/ep098

`--paths` (any method): the network each ticket keeps, unit by unit (neurons, or channels of a
convolution). A unit is live when a kept weight reaches it and a kept weight leaves it; kept
weights into or out of a dead unit change no output, and `export` leaves them out
(masking/paths.py).

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
from slt_deploy.export.network import from_ticket
from slt_deploy.masking.gates import GateConfig, StochasticGate
from slt_deploy.search.config import SearchConfig
from slt_deploy.search.ticket import load_ticket


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


def paths(run: Path) -> None:
    """Per layer: the kept weights, those left once dead paths are removed (the ones `export`
    keeps, masking/paths.py), and the units that still compute something."""
    net = from_ticket(load_ticket(run))
    removed = net.source["dead_path_weights_removed"]
    print(f"## {run}: kept weights on live paths")
    print("| layer | kept | on live paths | live units out / total |")
    print("|---|---:|---:|---:|")
    for name, mask in net.masks.items():
        rows = mask.reshape(mask.shape[0], -1).any(1)
        on_live = int(mask.sum())
        print(
            f"| {name} | {on_live + removed.get(name, 0):,} | {on_live:,} "
            f"| {int(rows.sum())} / {mask.shape[0]} |"
        )
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories of slt-deploy search")
    parser.add_argument("--paths", action="store_true", help="live units, dead-path weights")
    args = parser.parse_args()
    for run in args.runs:
        if args.paths:
            paths(run)
        else:
            report(run)


if __name__ == "__main__":
    main()
