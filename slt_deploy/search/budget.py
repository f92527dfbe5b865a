"""The mask keeps exactly the weights `--target-sparsity` asks for: all along the run
(`--budget shift`, `shift_to_density_`) or once at the end (`--exact-target`).

`--exact-target`:

The controller steers λ, and sharpened gates freeze well before the end, so a run can finish
a few tenths of a point off its target (98.15% for a 98% target, docs/search.md). Edge-popup
keeps exactly round((1 − s) · n) weights by construction; this brings the gates' final mask to
the same count: the closed gates nearest to opening are opened (or the open gates nearest to
closing closed), ranked globally by their gate parameter. Off by default, because it measured
worse: on MNIST at 98% the ~400 gates it opened cost 0.9 points (3 seeds), so "nearest to τ"
is not "most useful" once the search has closed a gate. Each moved gate is set just across
the threshold, so the ticket keeps its meaning `B = [ẑ > τ]` and nothing downstream changes.
Ties are broken by position (stable sort), so the result is deterministic.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from slt_deploy.masking.layers import masked_layers
from slt_deploy.masking.sources import GateSource

# How far across the threshold a moved gate is placed: far enough to survive float rounding in
# ẑ = clip(τ + (μ − τ)/t) at any temperature ≥ 0.01, near enough to stay the weakest gate.
MARGIN = 1e-4


def applies(config) -> bool:
    """Whether `--exact-target` acts on this search: unstructured gates with a target."""
    return (
        config.exact_target
        and config.method == "gates"
        and config.target_sparsity is not None
        and config.granularity == "unstructured"
    )


def unstructured_gates(model: nn.Module) -> list[nn.Module]:
    """The gate families of unstructured gate sources: the ones a global top-k may move."""
    return [
        layer.mask_source.gate
        for _, layer in masked_layers(model)
        if isinstance(layer.mask_source, GateSource)
        and layer.mask_source.pattern == "unstructured"
        and layer.mask_source.gate is not None
    ]


@torch.no_grad()
def meet_target_(model: nn.Module, target_sparsity: float) -> int:
    """Move the fewest gates across τ so that exactly round((1 − s) · n) are open; returns the
    number moved (positive: opened, negative: closed)."""
    gates = unstructured_gates(model)
    if not gates:
        return 0
    margins = torch.cat(
        [(g.parameter.detach() - g.parameter_at_threshold()).reshape(-1).cpu() for g in gates]
    )
    total = margins.numel()
    want = round((1.0 - target_sparsity) * total)
    is_open = margins > 0
    have = int(is_open.sum())
    if have == want:
        return 0
    if have < want:  # open the closed gates with the largest parameters
        candidates = torch.nonzero(~is_open).squeeze(1)
        order = torch.sort(margins[candidates], descending=True, stable=True).indices
        chosen, sign = candidates[order[: want - have]], 1.0
    else:  # close the open gates with the smallest parameters
        candidates = torch.nonzero(is_open).squeeze(1)
        order = torch.sort(margins[candidates], stable=True).indices
        chosen, sign = candidates[order[: have - want]], -1.0
    offset = 0
    for gate in gates:
        param = gate.parameter
        n = param.numel()
        local = chosen[(chosen >= offset) & (chosen < offset + n)] - offset
        if local.numel():  # unravel: channels-last parameters have no flat view
            where = torch.unravel_index(local.to(param.device), param.shape)
            param.data[where] = gate.parameter_at_threshold() + sign * MARGIN
        offset += n
    return want - have


@torch.no_grad()
def shift_to_density_(model: nn.Module, density: float) -> None:
    """--budget shift: move every stg mean by one common offset so that exactly
    round(density · n) of them lie above τ. One offset for all layers keeps the order of the
    means, so what the loss learned decides which gates are open, in every layer at once
    (per-layer counts, as edge-popup keeps, were 2.3 points worse on the Conv-4 proxy at 90%,
    one seed); the exact count replaces the penalty's controller, which overshot the target
    and left the sharpened gates frozen past it (docs/search.md, "The budget held by a
    shift")."""
    gates = unstructured_gates(model)
    means = [gate.gate_mean.detach().reshape(-1) for gate in gates]
    count = sum(m.numel() for m in means)
    keep = min(count - 1, max(1, round(density * count)))
    tau = gates[0].config.threshold
    kept_last, closed_first = _boundary(means, keep, tau)
    # the threshold goes midway between the last gate kept and the first one closed
    offset = tau - 0.5 * float(kept_last + closed_first)
    for gate in gates:
        gate.gate_mean.add_(offset)


def _boundary(means: list[torch.Tensor], keep: int, tau: float) -> tuple[Any, Any]:
    """The keep-th and (keep + 1)-th largest of all layers' means. The last shift put the
    boundary at τ and a few steps move it little, so it is looked for among the means near τ
    first, layer by layer (no copy of all n). With a top-k of all means (a sort, for keep
    near n/2) a LeNet step cost 3.43x a dense one, with the band 1.96x
    (bench/results/step_cost_budget_shift*.txt). Same values either way, so the result does
    not depend on which path found them."""
    for width in (0.01, 0.04, 0.16):
        above = sum(int(torch.count_nonzero(m > tau + width)) for m in means)
        if above >= keep:
            continue
        inside = torch.cat([m[(m > tau - width) & (m <= tau + width)] for m in means])
        if above + inside.numel() > keep:
            return _kth_largest_pair(inside, keep - above)
    return _kth_largest_pair(torch.cat(means), keep)


def _kth_largest_pair(values: torch.Tensor, k: int) -> tuple[Any, Any]:
    """The k-th and (k + 1)-th largest of `values` (1 ≤ k < n), in its dtype. On a CPU a
    partial partition (introselect, numpy's; torch has none) instead of a top-k: on the 20M
    means of `fc --width 4096` the top-k made the shift 384 ms of an 854 ms step
    (bench/results/step_cost_fc4096.txt)."""
    if values.device.type == "cpu":
        return _partition_pair(values, k)
    return _topk_pair(values, k)


def _partition_pair(values: torch.Tensor, k: int) -> tuple[Any, Any]:
    n = values.numel()
    parted = np.partition(values.numpy(), (n - k - 1, n - k))
    return parted[n - k], parted[n - k - 1]


def _topk_pair(values: torch.Tensor, k: int) -> tuple[Any, Any]:
    largest = torch.topk(values, k + 1).values
    return largest[-2], largest[-1]
