"""Folding: a masked network as plain layers holding W ⊙ B, the function every artifact computes."""

from __future__ import annotations

import copy

import torch
from torch import nn

from slt_deploy.masking.hooks import InputGateHook, remove_channel_hooks_
from slt_deploy.masking.layers import MaskedConv2d, masked_layers
from slt_deploy.masking.surgery import plain_layer


@torch.no_grad()
def _silence_closed_channels_(model: nn.Module) -> None:
    """Channel tickets: the gate that zeroed a closed channel after its BatchNorm is taken
    off, so the channel's bias and BN shift are zeroed instead (its weight row is masked):
    its output stays exactly zero, the same function without the gate."""
    for module_name, hook in remove_channel_hooks_(model):
        if isinstance(hook, InputGateHook):
            continue  # input features: their weight columns are masked, nothing else reads them
        closed = ~hook.source.row_mask()
        producer = model.get_submodule(hook.producer)
        if producer.bias is not None:
            producer.bias[closed] = 0.0
        module = model.get_submodule(module_name)
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.running_mean[closed] = 0.0
            if module.affine:
                module.bias[closed] = 0.0


def fold(model: nn.Module, masks: dict[str, torch.Tensor]) -> nn.Module:
    """A copy of a masked model with every masked layer replaced by a plain one (W ⊙ B)."""
    plain = copy.deepcopy(model).eval()
    _silence_closed_channels_(plain)
    for name, layer in list(masked_layers(plain)):
        weight = layer.frozen_weight * masks[name].to(layer.frozen_weight.dtype)
        conv = layer if isinstance(layer, MaskedConv2d) else None
        plain.set_submodule(name, plain_layer(weight, layer.bias, conv))
    for param in plain.parameters():
        param.requires_grad_(False)
    # eval() again: the new layers start in training mode, and torch.fx's conv-BN fusion skips
    # training-mode layers (the .slt rebuild then exported different bytes: measured)
    return plain.eval()
