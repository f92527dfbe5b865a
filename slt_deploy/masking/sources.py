"""Mask sources: where a masked layer's mask comes from.

Gate families (stg, hard-concrete) give a relaxed sample while training and the binary mask in
eval; edge-popup's scores give a top-k mask with a straight-through gradient. Channel sources
cover whole rows and columns, and count the kept weights the sparsity penalty needs.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from slt_deploy.masking.structure import keep_top2_of_4


class MaskSource(nn.Module):
    """Where a masked layer's mask comes from: gate families and edge-popup scores."""

    def training_mask(self) -> torch.Tensor:
        raise NotImplementedError

    def binary_mask(self) -> torch.Tensor:
        raise NotImplementedError

    def masked_weight(self, weight: torch.Tensor) -> torch.Tensor:
        """W ⊙ training mask; a source may fuse the two."""
        return weight * self.training_mask().to(weight.dtype)


class _TopKStraightThrough(torch.autograd.Function):
    """Edge-popup's subnet: 1 for the k largest values, gradient passed straight through.
    Callers pass |scores| so that autograd applies the sign of abs (as the reference does)."""

    @staticmethod
    def forward(ctx, magnitudes: torch.Tensor, kept: int) -> torch.Tensor:
        # in logical order, so any memory format (channels-last) picks the same k
        mask = magnitudes.new_zeros(magnitudes.numel())
        mask[torch.topk(magnitudes.reshape(-1), kept, sorted=False).indices] = 1.0
        return mask.view(magnitudes.shape)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None


class EdgePopupScores(MaskSource):
    """Ramanujan et al. 2020: a score per weight, per-layer top-k, straight-through gradient."""

    def __init__(self, shape: tuple[int, ...], density: float) -> None:
        super().__init__()
        self.scores = nn.Parameter(torch.empty(shape))
        nn.init.kaiming_uniform_(self.scores, a=5**0.5)  # as the reference implementation
        self.kept = max(1, round(density * self.scores.numel()))

    def training_mask(self) -> torch.Tensor:
        return _TopKStraightThrough.apply(self.scores.abs(), self.kept)

    def binary_mask(self) -> torch.Tensor:
        return _TopKStraightThrough.apply(self.scores.detach().abs(), self.kept) > 0


class GateSource(MaskSource):
    """Wraps a gate family (stg, hard-concrete) as a mask source.

    With `pattern="2:4"` only the 2 gates with the largest parameter in each group of 4 are
    eligible: a selection recomputed every step, not differentiated (the eligible gates'
    values are, exactly; no straight-through estimator), and part of the deployed mask.
    """

    def __init__(
        self, gate: nn.Module, pattern: str = "unstructured", cost_weight: float = 1.0
    ) -> None:
        super().__init__()
        self.gate = gate
        self.pattern = pattern
        # what one kept weight costs: 1, or its output positions under --cost flops
        self.cost_weight = cost_weight

    def eligible(self) -> torch.Tensor | None:
        if self.pattern != "2:4":
            return None
        return keep_top2_of_4(self.gate.parameter.detach())

    def training_mask(self) -> torch.Tensor:
        sample = self.gate.sample()
        eligible = self.eligible()
        return sample if eligible is None else sample * eligible

    def binary_mask(self) -> torch.Tensor:
        mask = self.gate.binary_mask()
        eligible = self.eligible()
        return mask if eligible is None else mask & eligible

    def masked_weight(self, weight: torch.Tensor) -> torch.Tensor:
        eligible = self.eligible()
        return self.gate.masked_weight(weight if eligible is None else weight * eligible)


class ChannelSource(GateSource):
    """`--granularity channel`: one gate per output channel (or none, where the channel
    cannot be removed), the input columns its producer's gates remove, and optionally a
    gate per weight as well (`weight_gate`: channel+unstructured).

    In training the channel gate multiplies the channel's output after its BatchNorm (a
    `ChannelGateHook`; BN would normalise a gate on the weights away). The binary mask is
    the weights the deployed network drops: rows of closed channels, columns of closed input
    channels and closed weights. `structure_only` (--target-scope structure) leaves the
    per-weight gates out of the counts, so they carry no penalty.
    """

    def __init__(
        self,
        gate: nn.Module | None,
        shape: tuple[int, ...],
        cost_weight: float,
        weight_gate: nn.Module | None = None,
        input_gate: nn.Module | None = None,
        structure_only: bool = False,
    ) -> None:
        super().__init__(gate, "channel")
        self.structure_only = structure_only
        self.weight_gate = weight_gate
        self.input_gate = input_gate  # one per input feature, for a layer reading the input
        self.shape = shape
        self.kernel = math.prod(shape[2:])  # weights per (output, input) pair
        self.cost_weight = cost_weight  # 1 per weight, or output positions for --cost flops
        self.producer: tuple[ChannelSource, int] | None = None  # plain attribute: not a child
        self.rows_per_gate: Callable[[torch.Tensor], torch.Tensor] | None = None  # heads
        self.register_buffer("anchor", torch.empty(0), persistent=False)  # follows .to(device)

    def link(self, producer: ChannelSource, repeat: int) -> None:
        object.__setattr__(self, "producer", (producer, repeat))

    def expand_rows(self, per_gate: torch.Tensor) -> torch.Tensor:
        """Per-gate values to per-row values (a head gate covers 3·head_dim qkv rows)."""
        return per_gate if self.rows_per_gate is None else self.rows_per_gate(per_gate)

    def unit_mask(self) -> torch.Tensor:
        """The binary gates themselves: one per channel or head."""
        return self.gate.binary_mask()

    def eligible(self) -> torch.Tensor | None:
        return None

    def row_mask(self) -> torch.Tensor:
        if self.gate is None:
            return torch.ones(self.shape[0], dtype=torch.bool, device=self.anchor.device)
        return self.expand_rows(self.gate.binary_mask())

    def column_mask(self) -> torch.Tensor:
        if self.input_gate is not None:
            return self.input_gate.binary_mask()
        if self.producer is None:
            return torch.ones(self.shape[1], dtype=torch.bool, device=self.anchor.device)
        source, repeat = self.producer
        return source.unit_mask().repeat_interleave(repeat)

    def gate_value(self) -> torch.Tensor:
        """What the hook multiplies the channels by: a relaxed sample or the binary gate."""
        if self.training:
            return self.gate.sample()
        return self.gate.binary_mask().float()

    def training_mask(self) -> torch.Tensor:
        if self.weight_gate is None:
            return torch.ones(self.shape, device=self.anchor.device)
        return self.weight_gate.sample()

    def masked_weight(self, weight: torch.Tensor) -> torch.Tensor:
        # the channel gate acts on the output (ChannelGateHook)
        return weight if self.weight_gate is None else self.weight_gate.masked_weight(weight)

    def binary_mask(self) -> torch.Tensor:
        rows, cols = self.row_mask(), self.column_mask()
        pairs = rows[:, None] & cols[None, :]
        mask = pairs.view(*pairs.shape, *([1] * (len(self.shape) - 2))).expand(self.shape)
        return mask if self.weight_gate is None else mask & self.weight_gate.binary_mask()

    def counts(self, kind: str, structure_only: bool | None = None) -> tuple[torch.Tensor, float]:
        """(kept weights as a tensor, total weights), each × cost_weight. `kind`: "expected"
        (P(open): differentiable, the penalty), "soft" (ẑ) or "binary" (the mask). Gates
        are independent, so the expected kept weights of a layer are rowsᵀ · Q · columns,
        Q the weights per (output, input) pair kept by the weight gates — or every weight
        of the pair when counting structure only (default: the source's own setting)."""
        if structure_only is None:
            structure_only = self.structure_only
        rows = _gate_values(self.gate, kind, self.shape[0], self.anchor.device)
        if self.gate is not None:
            rows = self.expand_rows(rows)
        cols = torch.ones(self.shape[1], device=self.anchor.device)
        if self.input_gate is not None:
            cols = _gate_values(self.input_gate, kind, 0, self.anchor.device)
        elif self.producer is not None:
            source, repeat = self.producer
            cols = _gate_values(source.gate, kind, source.shape[0], self.anchor.device)
            cols = cols.repeat_interleave(repeat)
        total = float(self.cost_weight * math.prod(self.shape))
        if self.weight_gate is None or structure_only:
            return self.cost_weight * self.kernel * rows.sum() * cols.sum(), total
        per_pair = _gate_values(self.weight_gate, kind, 0, self.anchor.device)
        per_pair = per_pair.reshape(self.shape[0], self.shape[1], -1).sum(-1)
        return self.cost_weight * (rows @ per_pair @ cols), total


def _gate_values(gate: nn.Module | None, kind: str, size: int, device) -> torch.Tensor:
    if gate is None:
        return torch.ones(size, device=device)
    if kind == "expected":
        return gate.open_probability()
    if kind == "soft":
        return gate.deterministic_gate()
    return gate.binary_mask().float()
