"""Physically smaller networks: closed channels removed, with their consumers' input slices.

A channel is removed only when its output is exactly zero for every input: its weight row is
all zero, and bias and BatchNorm map zero to zero (`fold` makes this so for channel tickets,
where the gate sat after the BatchNorm). Removal is then exact: the consumers' dropped input
columns only ever multiplied zeros. Which channels may go at all is the channel plan's
(masking/channels.py): the same torch.fx analysis the search used.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from slt_deploy.masking.channels import channel_plan
from slt_deploy.masking.paths import constant_output
from slt_deploy.masking.surgery import plain_layer

# Kept channel counts are rounded up to this by default: ONNX Runtime's CPU convolutions work on
# blocks of 8 channels, and a Conv-6 with odd counts ran at 0.88x of the dense latency for 0.44x
# of its MACs; rounded to 8 it ran at 0.53x (docs/structured.md).
DEFAULT_CHANNEL_MULTIPLE = 8


@dataclass(frozen=True)
class Size:
    """Parameters, multiply-adds per sample and fp32 weight bytes of a network."""

    params: int
    macs: int

    @property
    def bytes(self) -> int:
        return 4 * self.params

    def to_dict(self) -> dict:
        return {"params": self.params, "macs": self.macs, "bytes_fp32": self.bytes}


@torch.no_grad()
def measure(model: nn.Module, input_shape: tuple[int, ...]) -> Size:
    """Parameters of the layers, and multiply-accumulates for one sample, from torch's own
    FlopCounterMode (a multiply-accumulate is 2 of its FLOPs): every matmul and convolution
    counts, attention's included, with the shapes a real forward pass produces."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        model.eval()(torch.zeros(1, *input_shape))
    params = sum(p.numel() for p in model.parameters())
    return Size(params, counter.get_total_flops() // 2)


class SelectFeatures(nn.Module):
    """The input features a shrunk first layer still reads (one Gather in ONNX)."""

    def __init__(self, index: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("index", index.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.index_select(-1, self.index)


def _zero_output_channels(model: nn.Module, producer: str, norm: str | None) -> torch.Tensor:
    """Channels of `producer` whose output (after `norm`) is zero for every input."""
    weight = model.get_submodule(producer).weight.detach()
    dead = ~weight.reshape(weight.shape[0], -1).any(dim=1)
    return dead & (constant_output(model, producer, norm) == 0)


def _slice_layer(layer: nn.Module, rows: torch.Tensor | None, cols: torch.Tensor | None):
    weight = layer.weight.detach()
    bias = None if layer.bias is None else layer.bias.detach()
    if rows is not None:
        weight = weight[rows]
        bias = None if bias is None else bias[rows]
    if cols is not None:
        weight = weight[:, cols]
    return plain_layer(weight, bias, layer if isinstance(layer, nn.Conv2d) else None)


def _slice_norm(bn: nn.Module, rows: torch.Tensor) -> nn.Module:
    new = type(bn)(int(rows.numel()), eps=bn.eps, momentum=bn.momentum, affine=bn.affine)
    new.running_mean.copy_(bn.running_mean[rows])
    new.running_var.copy_(bn.running_var[rows])
    if bn.affine:
        new.weight = nn.Parameter(bn.weight.detach()[rows].clone(), requires_grad=False)
        new.bias = nn.Parameter(bn.bias.detach()[rows].clone(), requires_grad=False)
    return new.eval()


def _round_up(alive: torch.Tensor, multiple: int) -> torch.Tensor:
    """Keep closed channels too (lowest index first) until the count is a multiple of
    `multiple`: their output is zero, so the function is unchanged."""
    need = min(alive.numel(), -(-int(alive.sum()) // multiple) * multiple) - int(alive.sum())
    if need > 0:
        alive = alive.clone()
        alive[(~alive).nonzero().flatten()[:need]] = True
    return alive


@torch.no_grad()
def shrink(
    model: nn.Module,
    input_shape: tuple[int, ...],
    multiple: int = DEFAULT_CHANNEL_MULTIPLE,
    gather_inputs: bool = True,
) -> tuple[nn.Module, dict[str, int]]:
    """A copy of a plain eval-mode network with every always-zero removable channel removed.
    Returns the network and the channels kept per layer that lost any. A layer keeps at least
    one channel (its output is zero anyway) so that every runtime accepts the shapes; with
    `multiple` > 1 every kept count is rounded up to a multiple of it (vectorised kernels
    process channels in blocks: docs/structured.md measures the effect). `gather_inputs`
    removes the input features no weight reads too, with a Gather before the first layer: worth
    it where pixel gates close many of them, a loss where few are unread (an unstructured
    LeNet ticket reading 761 of 784 pixels ran at 0.97–2.33x of its full-shape ONNX's latency
    with the Gather, 0.45–0.76x without: bench/results/dead_paths/lenet_gather.txt)."""
    plan = channel_plan(model, input_shape)
    rows: dict[str, torch.Tensor] = {}
    cols: dict[str, torch.Tensor] = {}
    norms: dict[str, str] = {}
    kept: dict[str, int] = {}
    heads: dict[str, int] = {}
    for producer, group in plan.groups.items():
        if group.attention is None:
            alive = ~_zero_output_channels(model, producer, group.norm)
        else:
            alive = ~_zero_heads(model.get_submodule(producer), group.channels)
        if bool(alive.all()):
            continue
        if not bool(alive.any()):
            alive[0] = True
        if multiple > 1 and group.attention is None:  # heads: head_dim is the block
            alive = _round_up(alive, multiple)
            if bool(alive.all()):
                continue
        keep = alive.nonzero().flatten()
        kept[producer] = int(keep.numel())
        if group.attention is None:
            rows[producer] = keep
        else:  # q, k and v rows of every kept head
            per_head = (keep[:, None] * group.head_dim + torch.arange(group.head_dim)).flatten()
            width = group.channels * group.head_dim
            rows[producer] = torch.cat([part * width + per_head for part in range(3)])
            heads[group.attention] = int(keep.numel())
        if group.norm is not None:
            norms[group.norm] = producer
        for consumer, repeat in group.consumers:
            expanded = (keep[:, None] * repeat + torch.arange(repeat)[None, :]).flatten()
            cols[consumer] = expanded
    selects: dict[str, torch.Tensor] = {}
    for name in plan.inputs if gather_inputs else ():  # unread input features: gathered away
        used = model.get_submodule(name).weight.detach().any(dim=0)
        if not bool(used.all()):
            if not bool(used.any()):
                used[0] = True
            selects[name] = cols[name] = used.nonzero().flatten()
            kept[f"{name} inputs"] = int(used.sum())
    small = copy.deepcopy(model).eval()
    for name in sorted(set(rows) | set(cols)):
        layer = small.get_submodule(name)
        new = _slice_layer(layer, rows.get(name), cols.get(name))
        if name in selects:
            new = nn.Sequential(SelectFeatures(selects[name]), new)
        small.set_submodule(name, new)
    for norm, producer in norms.items():
        small.set_submodule(norm, _slice_norm(small.get_submodule(norm), rows[producer]))
    for name, count in heads.items():
        attention = small.get_submodule(name)
        head_dim = attention.attn_dim // attention.num_heads
        attention.num_heads, attention.attn_dim = count, count * head_dim
    return small.eval(), kept


def _zero_heads(qkv: nn.Module, num_heads: int) -> torch.Tensor:
    """Heads whose q, k and v rows (and biases) are all zero: their output is zero."""
    weight = qkv.weight.detach().reshape(3, num_heads, -1)
    dead = ~weight.any(dim=2).any(dim=0)
    if qkv.bias is not None:
        dead &= ~qkv.bias.detach().reshape(3, num_heads, -1).any(dim=2).any(dim=0)
    return dead
