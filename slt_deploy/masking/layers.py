"""Masked layers: a frozen weight `W` times the mask of its `mask_source`.

`W` is a buffer, never a parameter; the mask is a relaxed sample while training and the binary
mask in eval. `masking.surgery` installs these layers in a network.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from slt_deploy.masking.sources import ChannelSource, GateSource, MaskSource


class MaskedLayer(nn.Module):
    """Shared by MaskedLinear and MaskedConv2d: W ⊙ mask with W frozen."""

    frozen_weight: torch.Tensor

    def __init__(self, weight: torch.Tensor, source: MaskSource, bias: nn.Parameter | None) -> None:
        super().__init__()
        self.register_buffer("frozen_weight", weight)
        self.mask_source = source
        self.bias = bias

    def effective_weight(self) -> torch.Tensor:
        if self.training:
            return self.mask_source.masked_weight(self.frozen_weight)
        return self.frozen_weight * self.mask_source.binary_mask().to(self.frozen_weight.dtype)


class MaskedLinear(MaskedLayer):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.effective_weight(), self.bias)


class MaskedConv2d(MaskedLayer):
    def __init__(
        self, weight: torch.Tensor, source: MaskSource, bias: nn.Parameter | None, conv: nn.Conv2d
    ) -> None:
        super().__init__(weight, source, bias)
        self.stride, self.padding = conv.stride, conv.padding
        self.dilation, self.groups = conv.dilation, conv.groups
        if conv.padding_mode != "zeros":
            raise ValueError("only zero padding is supported in masked convolutions")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(
            x,
            self.effective_weight(),
            self.bias,
            self.stride,
            self.padding,
            self.dilation,
            self.groups,
        )


def masked_layers(model: nn.Module) -> Iterator[tuple[str, MaskedLayer]]:
    for name, module in model.named_modules():
        if isinstance(module, MaskedLayer):
            yield name, module


def gate_families(model: nn.Module) -> Iterator[nn.Module]:
    for _, layer in masked_layers(model):
        source = layer.mask_source
        if isinstance(source, GateSource) and source.gate is not None:
            yield source.gate
        if isinstance(source, ChannelSource):
            if source.weight_gate is not None:
                yield source.weight_gate
            if source.input_gate is not None:
                yield source.input_gate


def frozen_weights(model: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """(layer name, W) of every frozen weight, or every trainable weight for a dense model."""
    for name, module in model.named_modules():
        if isinstance(module, MaskedLayer):
            yield name, module.frozen_weight
