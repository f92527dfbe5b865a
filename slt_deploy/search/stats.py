"""What a mask looks like: per-layer kept/total, binary density, gate-value histogram."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
from torch import nn

from slt_deploy.masking import channels
from slt_deploy.masking.fold import fold
from slt_deploy.masking.layers import MaskedConv2d, gate_families, masked_layers
from slt_deploy.masking.paths import remove_dead_paths
from slt_deploy.masking.sources import ChannelSource, GateSource

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


@torch.no_grad()
def output_positions(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, int]:
    """Per weight layer (masked, or Linear/Conv2d of a dense model): the output positions each
    of its weights is applied at for one sample (channels.output_positions), from the shapes
    of one real forward pass."""
    layers = dict(masked_layers(model)) or {
        name: m for name, m in model.named_modules() if isinstance(m, nn.Linear | nn.Conv2d)
    }
    positions: dict[str, int] = {}

    def record(name: str, conv: bool):
        def hook(module, inputs, output) -> None:
            positions[name] = channels.output_positions(conv, tuple(output.shape))

        return hook

    handles = [
        layer.register_forward_hook(record(name, isinstance(layer, nn.Conv2d | MaskedConv2d)))
        for name, layer in layers.items()
    ]
    was_training = model.training
    anchor = next(itertools.chain(model.parameters(), model.buffers()), None)
    try:
        model.eval()(torch.zeros(1, *input_shape, device=None if anchor is None else anchor.device))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return positions


def multiply_adds(layers: dict[str, dict]) -> tuple[int, int]:
    """(kept, total) multiply-adds per sample of the weight layers in `layers`, each weight
    counted at its output positions: what a sparse kernel that skips zeros still computes.
    Gates choose per-layer sparsity, so equal weight counts can cost very different MACs."""
    kept = sum(v["kept"] * v.get("positions", 1) for v in layers.values())
    total = sum(v["total"] * v.get("positions", 1) for v in layers.values())
    return kept, total


@torch.no_grad()
def searched_network(model: nn.Module) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """The plain network the search's binary masks define (folded where the model lives, then
    on the CPU), and those masks on the CPU: what export starts from. A dense model has no
    masks and nothing to fold: it comes back as it is, where it is, not copied."""
    masks = {name: layer.mask_source.binary_mask().bool() for name, layer in masked_layers(model)}
    plain = fold(model, masks).cpu() if masks else model
    return plain, {name: mask.cpu() for name, mask in masks.items()}


def live_counts(
    plain: nn.Module,
    masks: dict[str, torch.Tensor],
    layers: dict[str, dict],
    input_shape: tuple[int, ...],
) -> tuple[int, int]:
    """(weights, multiply-adds) that `export` ships: the kept ones less those on dead paths
    (masking/paths.py). A ticket can keep weights that change no output, and the search's own
    count includes them, so equal sparsity need not be equal deployed cost (docs/export.md,
    "Dead paths"). `plain` and `masks` as from searched_network; `layers` as from
    per_layer_sparsity, with "positions" where known."""
    removed = remove_dead_paths(plain, masks, input_shape)[1] if masks else {}
    live = {name: v["kept"] - removed.get(name, 0) for name, v in layers.items()}
    macs = sum(n * layers[name].get("positions", 1) for name, n in live.items())
    return sum(live.values()), macs


def totals(layers: dict[str, dict]) -> tuple[int, int, float]:
    total = sum(v["total"] for v in layers.values())
    kept = sum(v["kept"] for v in layers.values())
    return total, kept, (1.0 - kept / total) if total else 0.0


@torch.no_grad()
def gate_histogram(model: nn.Module) -> dict | None:
    """How decided the gates are: fractions at exactly 0, exactly 1, in between, and a
    10-bin histogram of deterministic gate values ẑ over [0, 1]."""
    values = [gate.deterministic_gate().flatten() for gate in gate_families(model)]
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

    expected_density: float | None  # mean P(open) = E[L0]/N: what the penalty weighs
    binary_density: float  # fraction of gates with ẑ > τ: the mask as deployed
    soft_density: float  # mean ẑ: moves smoothly with every μ in (0, 1)
    gates: int


def channel_sources(model: nn.Module) -> list[ChannelSource]:
    return [
        layer.mask_source
        for _, layer in masked_layers(model)
        if isinstance(layer.mask_source, ChannelSource)
    ]


def channel_density(
    sources: list[ChannelSource], kind: str, structure_only: bool | None = None
) -> torch.Tensor:
    """Fraction of weights (or of multiply-adds, --cost flops) the channel gates keep, over
    every layer they touch (rows and input columns): `kind` and `structure_only` as
    ChannelSource.counts."""
    kept, total = zip(*(source.counts(kind, structure_only) for source in sources), strict=True)
    return torch.stack([k.float().reshape(()) for k in kept]).sum() / sum(total)


@torch.no_grad()
def structured_sparsity(model: nn.Module) -> float | None:
    """Fraction of the gated layers' weights (MACs with --cost flops) that closed channels,
    neurons, heads and inputs remove — what the shrunk dense network no longer has; per-weight
    zeros inside kept channels do not count. None without channel gates."""
    sources = channel_sources(model)
    if not sources:
        return None
    return 1.0 - float(channel_density(sources, "binary", structure_only=True))


@torch.no_grad()
def mask_state(model: nn.Module, expected: bool = False) -> MaskState | None:
    """`expected` adds E[L0]/N, which only the per-epoch record reads: the controller steers
    by the binary and soft densities, and P(open) costs an erf per gate (the largest part of
    a control step on a CPU)."""
    sources = channel_sources(model)
    if sources:
        return MaskState(
            float(channel_density(sources, "expected")) if expected else None,
            float(channel_density(sources, "binary")),
            float(channel_density(sources, "soft")),
            n_gate_params(model),
        )
    open_sum, kept, soft, total, gates = 0.0, 0.0, 0.0, 0.0, 0
    for _, layer in masked_layers(model):
        source = layer.mask_source
        if not isinstance(source, GateSource):
            continue
        z_hat = source.gate.deterministic_gate()
        eligible = source.eligible()
        if eligible is not None:  # 2:4: only eligible gates can be open
            z_hat = z_hat * eligible
        weight = source.cost_weight  # 1, or the weight's multiply-adds under --cost flops
        if expected:
            open_sum += weight * float(source.gate.open_probability().sum())
        # τ > 0, so ẑ·eligible > τ is exactly binary_mask(), without a second ẑ and sort
        kept += weight * int(torch.count_nonzero(z_hat > source.gate.config.threshold))
        soft += weight * float(z_hat.sum())
        total += weight * z_hat.numel()
        gates += z_hat.numel()
    if total == 0:
        return None
    return MaskState(open_sum / total if expected else None, kept / total, soft / total, gates)


def n_gate_params(model: nn.Module) -> int:
    return sum(gate.parameter.numel() for gate in gate_families(model))


def _channel_penalty_grads(model: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(parameter, ∂ expected density/∂parameter) for channel gates. The expected kept
    weights of a layer are k · Σ P(open rows) · Σ P(open input columns): the producer's and
    the consumer's gates both count, so a gate is weighed by everything it removes. Taken
    with autograd.grad, which leaves .grad (and DDP's hooks) alone. Gates the density does
    not count (per-weight gates under --target-scope structure) get no penalty."""
    gates = list(gate_families(model))
    with torch.enable_grad():
        density = channel_density(channel_sources(model), "expected")
        grads = torch.autograd.grad(density, [g.parameter for g in gates], allow_unused=True)
    return [(g.parameter, grad) for g, grad in zip(gates, grads, strict=True) if grad is not None]


@torch.no_grad()
def add_penalty_grad_(model: nn.Module, lam: float) -> None:
    """Add the gradient of λ · E[L0]/N to every gate parameter: unstructured gates apply it
    analytically (the same gradient autograd would give, at a fraction of the cost;
    tests/test_gates.py checks the formulas against autograd); channel gates use the expected
    density of the weights they remove."""
    if channel_sources(model):
        for param, grad in _channel_penalty_grads(model):
            grad = grad.mul(lam).to(param.dtype)
            param.grad = grad if param.grad is None else param.grad.add_(grad)
        return
    sources = _gate_sources(model)
    total = _weighted_count(sources)
    for source in sources:  # λ · Σ w · P(open) / Σ w: w = 1, or multiply-adds (--cost flops)
        source.gate.add_penalty_grad_(lam * source.cost_weight / total)


def _gate_sources(model: nn.Module) -> list[GateSource]:
    return [
        layer.mask_source
        for _, layer in masked_layers(model)
        if isinstance(layer.mask_source, GateSource) and layer.mask_source.gate is not None
    ]


def _weighted_count(sources: list[GateSource]) -> float:
    """Σ w over every gate: the penalty's normaliser (the number of gates when every w = 1)."""
    return sum(s.cost_weight * s.gate.parameter.numel() for s in sources)


def penalty_balance(model: nn.Module) -> float:
    """‖∇CE‖ / ‖∇(penalty at λ = 1)‖ over the gate parameters, with ∇CE already in .grad:
    the λ at which the two forces balance, the controller's natural scale."""
    gates = list(gate_families(model))
    ce = sum(
        float(g.parameter.grad.float().square().sum())
        for g in gates
        if g.parameter.grad is not None
    )
    if channel_sources(model):
        pen = sum(float(grad.float().square().sum()) for _, grad in _channel_penalty_grads(model))
        return (ce**0.5) / max(pen**0.5, 1e-30)
    sources = _gate_sources(model)
    pen = sum(
        s.cost_weight**2 * float(s.gate.open_probability_grad().square().sum()) for s in sources
    )
    return (ce**0.5) / max((pen**0.5) / _weighted_count(sources), 1e-30)
