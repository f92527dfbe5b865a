"""Deterministic thresholding: gate parameters → binary masks (docs/design.md: B = [ẑ > τ])."""

from __future__ import annotations

import torch
from torch import nn

from slt_deploy.errors import SltError
from slt_deploy.masking.layers import masked_layers
from slt_deploy.masking.sources import GateSource
from slt_deploy.masking.structure import is_24, keep_top2_of_4, supports_24


@torch.no_grad()
def binary_masks(
    model: nn.Module, threshold: float | None = None, sparsity: float | None = None
) -> dict[str, torch.Tensor]:
    """Per-layer boolean masks of a ticket's model (in eval mode).

    Default: the mask the search measured (ẑ > τ with the ticket's τ; edge-popup's top-k).
    `threshold` overrides τ; `sparsity` keeps exactly the top (1 − s) gates of the whole
    model by ẑ, ties broken by position (stable sort), so the result never varies.
    """
    if threshold is not None and sparsity is not None:
        raise SltError("give --threshold or --sparsity, not both")
    if threshold is not None and not 0.0 < threshold < 1.0:
        raise SltError("--threshold must lie in (0, 1)")
    if sparsity is not None and not 0.0 <= sparsity < 1.0:
        raise SltError("--sparsity must lie in [0, 1)")
    layers = list(masked_layers(model))
    if (threshold is not None or sparsity is not None) and not all(
        isinstance(layer.mask_source, GateSource) for _, layer in layers
    ):
        raise SltError("--threshold and --sparsity apply to gate tickets only")
    if sparsity is None:
        masks = {}
        for name, layer in layers:
            if threshold is None:
                masks[name] = layer.mask_source.binary_mask().bool()
            else:
                masks[name] = layer.mask_source.gate.deterministic_gate() > threshold
        return masks
    values = [layer.mask_source.gate.deterministic_gate().flatten() for _, layer in layers]
    flat = torch.cat(values)
    keep = round((1.0 - sparsity) * flat.numel())
    order = torch.sort(flat, descending=True, stable=True).indices
    chosen = torch.zeros_like(flat, dtype=torch.bool)
    chosen[order[:keep]] = True
    masks, start = {}, 0
    for (name, layer), v in zip(layers, values, strict=True):
        masks[name] = chosen[start : start + v.numel()].view(layer.frozen_weight.shape)
        start += v.numel()
    return masks


@torch.no_grad()
def gate_scores(model: nn.Module) -> dict[str, torch.Tensor]:
    """Per-layer ranking of weights: ẑ for gates, |score| for edge-popup."""
    scores = {}
    for name, layer in masked_layers(model):
        source = layer.mask_source
        if isinstance(source, GateSource):
            scores[name] = source.gate.parameter.detach().float()
        else:
            scores[name] = source.scores.detach().abs()
    return scores


def project_24(
    masks: dict[str, torch.Tensor], scores: dict[str, torch.Tensor]
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Keep, in each group of 4, the 2 kept weights with the largest scores. Returns the new
    masks and the layers that changed."""
    projected, changed = {}, []
    for name, mask in masks.items():
        if not supports_24(tuple(mask.shape)) or is_24(mask):
            projected[name] = mask
            continue
        ranked = torch.where(mask, scores[name], torch.full_like(scores[name], float("-inf")))
        projected[name] = mask & keep_top2_of_4(ranked)
        changed.append(name)
    return projected, changed
