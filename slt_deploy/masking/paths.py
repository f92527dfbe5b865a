"""Dead paths: kept weights that cannot change any output, taken out of the mask before export.

A search chooses each weight on its own, so a ticket can keep weights that lead nowhere: into a
hidden unit that no kept weight reads, or out of one that nothing reaches. On the 90%
`fc --width 4096` tickets, 42% of edge-popup's and 19% of the gates' kept second-layer weights
feed units that the classifier never reads (docs/export.md, "Dead paths"). Removing them changes
no output and shrinks every sparse artifact: fewer CSR non-zeros, fewer bits set in an `.slt`.

Two rules, applied until neither changes anything, along the channel plan's producer → consumer
edges (masking/channels.py: only channel-wise, zero-preserving operations lie between them):
- a channel is *silent* when its mask row is empty and its bias and BatchNorm map zero to zero:
  its output is exactly zero, so the weights that read it multiply zero and can go;
- a channel is *unread* when every consumer's weights that read it are masked out: whatever it
  computes reaches nothing, so the weights that compute it can go.
"""

from __future__ import annotations

import torch
from torch import nn

from slt_deploy.errors import SltError
from slt_deploy.masking.channels import ChannelGroup, channel_plan


@torch.no_grad()
def constant_output(model: nn.Module, producer: str, norm: str | None) -> torch.Tensor:
    """Per channel of `producer`: its output (after `norm`) when its weights are all zero."""
    layer = model.get_submodule(producer)
    channels = layer.weight.shape[0]
    constant = torch.zeros(channels) if layer.bias is None else layer.bias.detach().float()
    if norm is not None:
        bn = model.get_submodule(norm)
        constant = (constant - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps)
        if bn.affine:
            constant = constant * bn.weight.detach() + bn.bias.detach()
    return constant


def _read_by(mask: torch.Tensor, channels: int) -> torch.Tensor:
    """Per channel: does any kept weight of a consumer read it? Dim 1 of the consumer's mask
    holds its inputs: Conv2d channels, or Linear features, `repeat` consecutive ones per
    channel after a flatten."""
    return mask.transpose(0, 1).reshape(channels, -1).any(1)


def _clear_read_(mask: torch.Tensor, channels: torch.Tensor, repeat: int) -> None:
    index = (channels[:, None] * repeat + torch.arange(repeat)[None, :]).flatten()
    mask[:, index] = False


def remove_dead_paths(
    model: nn.Module, masks: dict[str, torch.Tensor], input_shape: tuple[int, ...]
) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """New masks without dead-path weights, and the weights removed per layer (layers that lost
    none are left out). `model` is the plain (folded) network, for its graph, biases and
    BatchNorm; a network torch.fx cannot trace keeps its masks unchanged."""
    try:
        plan = channel_plan(model, input_shape)
    except SltError:
        return masks, {}
    groups = [
        g
        for g in plan.groups.values()
        if g.attention is None and g.producer in masks and all(c in masks for c, _ in g.consumers)
    ]
    new = {name: mask.clone(memory_format=torch.contiguous_format) for name, mask in masks.items()}
    silent_when_empty = {
        g.producer: constant_output(model, g.producer, g.norm) == 0 for g in groups
    }
    while any([_prune_group_(new, g, silent_when_empty[g.producer]) for g in groups]):
        pass
    lost = {
        name: int(torch.count_nonzero(m)) - int(torch.count_nonzero(new[name]))
        for name, m in masks.items()
    }
    return new, {name: n for name, n in lost.items() if n}


def _prune_group_(
    masks: dict[str, torch.Tensor], group: ChannelGroup, zero_when_empty: torch.Tensor
) -> bool:
    """One pass of both rules over one producer and its consumers; whether anything changed."""
    rows = masks[group.producer].view(group.channels, -1)  # writes below reach the mask
    changed = False
    silent = (~rows.any(1) & zero_when_empty).nonzero().flatten()
    read = torch.zeros(group.channels, dtype=torch.bool)
    for consumer, repeat in group.consumers:
        mask = masks[consumer]
        if silent.numel() and bool(_read_by(mask, group.channels)[silent].any()):
            _clear_read_(mask, silent, repeat)
            changed = True
        read |= _read_by(mask, group.channels)
    unread = ~read & rows.any(1)
    if bool(unread.any()):
        rows[unread] = False  # a view of the producer's mask
        changed = True
    return changed
