"""Forward hooks that gate channels, heads and input features of a network in training.

A channel gate acts on a layer's output after its BatchNorm (which would normalise a gate on the
weights away), so it is a hook, not a factor on the weight; a folded network drops the hooks.
"""

from __future__ import annotations

import torch
from torch import nn

from slt_deploy.masking.channels import apply_gate
from slt_deploy.masking.sources import ChannelSource


class ChannelGateHook:
    """A forward hook that multiplies a module's output channels by a ChannelSource's gates
    (installed on the gated layer's BatchNorm, or on the layer when none follows it)."""

    def __init__(self, source: ChannelSource, conv: bool, producer: str) -> None:
        self.source, self.conv, self.producer = source, conv, producer

    def __call__(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        return apply_gate(output, self.source.gate_value(), self.conv)


class HeadGateHook(ChannelGateHook):
    """A forward pre-hook on an attention's output projection: each head's slice of the
    projection's input multiplied by the head's gate."""

    def __init__(self, source: ChannelSource, head_dim: int, producer: str) -> None:
        super().__init__(source, False, producer)
        self.head_dim = head_dim

    def __call__(self, module: nn.Module, inputs: tuple) -> tuple:
        gate = self.source.gate_value().repeat_interleave(self.head_dim)
        return (apply_gate(inputs[0], gate, False), *inputs[1:])


class InputGateHook(ChannelGateHook):
    """A forward pre-hook on the layer that reads the network's input: each input feature
    multiplied by its gate (the layer's `input_gate`)."""

    def __init__(self, source: ChannelSource, producer: str) -> None:
        super().__init__(source, False, producer)

    def __call__(self, module: nn.Module, inputs: tuple) -> tuple:
        gate = self.source.input_gate
        value = gate.sample() if self.source.training else gate.binary_mask().float()
        return (apply_gate(inputs[0], value, False), *inputs[1:])


def remove_channel_hooks_(model: nn.Module) -> list[tuple[str, ChannelGateHook]]:
    """Take the channel and head gate hooks off (a folded network has its closed channels in
    its weights); returns (module name, hook) of each removed one."""
    removed = []
    for name, module in model.named_modules():
        for hooks in (module._forward_hooks, module._forward_pre_hooks):
            for key, hook in list(hooks.items()):
                if isinstance(hook, ChannelGateHook):
                    del hooks[key]
                    removed.append((name, hook))
    return removed
