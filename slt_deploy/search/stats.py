"""What a mask looks like: per-layer kept/total, binary density, gate-value histogram."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from slt_deploy.search.layers import GateSource, gate_families, masked_layers

HISTOGRAM_BINS = 10


@torch.no_grad()
def per_layer_sparsity(model: nn.Module) -> dict[str, dict]:
    """Binary-mask statistics per masked layer; a dense model reports its weights as kept."""
    layers = {}
    for name, layer in masked_layers(model):
        mask = layer.mask_source.binary_mask()
        total = mask.numel()
        kept = int(mask.sum())
        layers[name] = {
            "total": total,
            "kept": kept,
            "sparsity": 1.0 - kept / total,
            "pattern": getattr(layer.mask_source, "pattern", "unstructured"),
        }
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
    values = [
        layer.mask_source.gate.deterministic_gate().flatten()
        for _, layer in masked_layers(model)
        if isinstance(layer.mask_source, GateSource)
    ]
    if not values:
        return None
    z = torch.cat(values).float()
    n = z.numel()
    closed = int((z <= 0).sum())
    opened = int((z >= 1).sum())
    counts = torch.histc(z, bins=HISTOGRAM_BINS, min=0.0, max=1.0)
    return {
        "closed": closed / n,
        "open": opened / n,
        "undecided": (n - closed - opened) / n,
        "bins": [int(c) for c in counts.tolist()],
    }


@dataclass
class MaskState:
    """The quantities sparsity control needs, computed in one pass over the gates."""

    expected_density: float  # mean P(open) = E[L0]/N: what the penalty weighs
    binary_density: float  # fraction of gates with ẑ > τ: the mask as deployed
    soft_density: float  # mean ẑ: moves smoothly with every μ in (0, 1)
    gates: int


@torch.no_grad()
def mask_state(model: nn.Module) -> MaskState | None:
    expected, kept, soft, total = 0.0, 0, 0.0, 0
    for _, layer in masked_layers(model):
        source = layer.mask_source
        if not isinstance(source, GateSource):
            continue
        z_hat = source.gate.deterministic_gate()
        eligible = source.eligible()
        if eligible is not None:  # 2:4: only eligible gates can be open
            z_hat = z_hat * eligible
        expected += float(source.gate.open_probability().sum())
        # τ > 0, so ẑ·eligible > τ is exactly binary_mask(), without a second ẑ and sort
        kept += int((z_hat > source.gate.config.threshold).sum())
        soft += float(z_hat.sum())
        total += z_hat.numel()
    if total == 0:
        return None
    return MaskState(expected / total, kept / total, soft / total, total)


def n_gate_params(model: nn.Module) -> int:
    return sum(gate.parameter.numel() for gate in gate_families(model))


@torch.no_grad()
def add_penalty_grad_(model: nn.Module, coefficient: float) -> None:
    """Add ∂(coefficient · Σ P(open))/∂θ to every gate parameter's gradient: the expected-L0
    penalty, applied analytically (the same gradient autograd would give, at a fraction of
    the cost; tests/test_gates.py checks the formulas against autograd)."""
    for gate in gate_families(model):
        gate.add_penalty_grad_(coefficient)


def penalty_balance(model: nn.Module) -> float:
    """‖∇CE‖ / ‖∇(E[L0]/N)‖ over the gate parameters, with ∇CE already in .grad: the λ at which
    the two forces balance, the controller's natural scale."""
    ce, pen, total = 0.0, 0.0, 0
    for gate in gate_families(model):
        if gate.parameter.grad is not None:
            ce += float(gate.parameter.grad.float().square().sum())
        pen += float(gate.open_probability_grad().square().sum())
        total += gate.parameter.numel()
    return (ce**0.5) / max((pen**0.5) / total, 1e-30)
