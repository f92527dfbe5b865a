"""What a mask looks like: per-layer kept/total, binary density, gate-value histogram."""

from __future__ import annotations

import torch
from torch import nn

from slt_deploy.search.layers import GateSource, masked_layers

HISTOGRAM_BINS = 10


@torch.no_grad()
def per_layer_sparsity(model: nn.Module) -> dict[str, dict]:
    """Binary-mask statistics per masked layer; a dense model reports its weights as kept."""
    layers = {}
    for name, layer in masked_layers(model):
        mask = layer.mask_source.binary_mask()
        total = mask.numel()
        kept = int(mask.sum())
        layers[name] = {"total": total, "kept": kept, "sparsity": 1.0 - kept / total}
    if not layers:  # dense training: every weight kept
        for name, module in model.named_modules():
            if isinstance(module, nn.Linear | nn.Conv2d):
                total = module.weight.numel()
                layers[name] = {"total": total, "kept": total, "sparsity": 0.0}
    return layers


def totals(layers: dict[str, dict]) -> tuple[int, int, float]:
    total = sum(v["total"] for v in layers.values())
    kept = sum(v["kept"] for v in layers.values())
    return total, kept, (1.0 - kept / total) if total else 0.0


@torch.no_grad()
def gate_histogram(model: nn.Module) -> dict | None:
    """How decided the gates are: fractions at exactly 0, exactly 1, in between, and a
    10-bin histogram of deterministic gate values ẑ over [0, 1]."""
    values = [layer.mask_source.gate.deterministic_gate().flatten()
              for _, layer in masked_layers(model) if isinstance(layer.mask_source, GateSource)]
    if not values:
        return None
    z = torch.cat(values).float()
    n = z.numel()
    closed = int((z <= 0).sum())
    opened = int((z >= 1).sum())
    counts = torch.histc(z, bins=HISTOGRAM_BINS, min=0.0, max=1.0)
    return {
        "closed": closed / n, "open": opened / n, "undecided": (n - closed - opened) / n,
        "bins": [int(c) for c in counts.tolist()],
    }


def penalty_and_density(model: nn.Module) -> tuple[torch.Tensor | None, float]:
    """Mean P(open) over all gates (differentiable: E[L0]/N, the penalty) and the binary
    density of the mask as it stands."""
    probs, kept, total = [], 0, 0
    for _, layer in masked_layers(model):
        terms = layer.mask_source.penalty_terms()
        if terms is None:
            continue
        probs.append(terms.sum())
        with torch.no_grad():
            kept += int(layer.mask_source.binary_mask().sum())
        total += terms.numel()
    if not probs:
        return None, 1.0
    return torch.stack(probs).sum() / total, kept / total
