"""Channel plans: which output channels (conv) or neurons (linear) can be removed, and where.

A channel of a layer can be removed physically when everything between the layer and the
layers that read it is channel-wise (BatchNorm, activations, pooling, dropout, flatten): then
the channel's removal takes the matching input slice of every consumer with it, and nothing
else changes. A channel that reaches an addition (a residual join), a concatenation, a
reshape into heads or the network's output is left ungated. The plan is read off the
network's graph by torch.fx, so the same rule covers LeNet, Conv-N, ResNets (the channels
inside a residual block are gated, those joined by the addition are not) and ViT/Swin MLPs
(hidden units gated).

With non-affine BatchNorm after a layer, a gate on the layer's weights would be normalised
away (BN is scale-invariant: ∂BN(z·y)/∂z = 0). The gate therefore sits after the layer's
BatchNorm when one follows it directly, and on the layer's output otherwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from slt_deploy.errors import SltError

CHANNEL_WISE_MODULES = (
    nn.ReLU,
    nn.ReLU6,
    nn.GELU,
    nn.SiLU,
    nn.LeakyReLU,
    nn.Hardswish,
    nn.Tanh,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
    nn.Dropout,
    nn.Identity,
)
CHANNEL_WISE_FUNCTIONS = {
    F.relu,
    torch.relu,
    F.gelu,
    F.silu,
    F.max_pool2d,
    F.avg_pool2d,
    F.adaptive_avg_pool2d,
    F.adaptive_max_pool2d,
    F.dropout,
}
CHANNEL_WISE_METHODS = {"relu", "contiguous"}


@dataclass(frozen=True)
class ChannelGroup:
    """The removable channels of one layer: `gate_after` is where the gate multiplies (the
    layer's BatchNorm or the layer itself); each consumer reads every channel as `repeat`
    consecutive input features (> 1 after a flatten).

    Attention heads are a group too (`attention` names the module): one gate per head of its
    qkv layer, whose rows are [q | k | v] × heads × head_dim, applied to the head's output
    where the projection reads it (`gate_after` is the projection, gated on its input)."""

    producer: str
    gate_after: str
    norm: str | None
    channels: int
    consumers: tuple[tuple[str, int], ...]
    attention: str | None = None
    head_dim: int = 1

    def expand_rows(self, per_gate: torch.Tensor) -> torch.Tensor:
        """Per-gate values → per-row values of the producer's weight."""
        if self.attention is None:
            return per_gate
        return per_gate.repeat_interleave(self.head_dim).repeat(3)


def output_positions(conv: bool, out_shape: tuple[int, ...]) -> int:
    """How many output positions each weight of a layer is applied at for one sample: H·W
    for a convolution, tokens for a linear layer on a sequence, 1 otherwise (its multiply-adds
    per weight). `out_shape` is the layer's output shape, batch first."""
    return math.prod(out_shape[2:]) if conv else math.prod(out_shape[1:-1])


@dataclass(frozen=True)
class LayerShape:
    """What a gated layer costs: its weight count and the output positions each weight is
    applied at (H·W for a conv, tokens for a linear on a sequence), for `--cost flops`."""

    weights: int
    positions: int


@dataclass(frozen=True)
class ChannelPlan:
    groups: dict[str, ChannelGroup]  # by producer
    shapes: dict[str, LayerShape]  # every gateable layer
    outputs: frozenset[str]  # layers whose channels are the network's outputs (classifiers)
    inputs: frozenset[str] = frozenset()  # linear layers reading the flattened input itself

    def producer_of(self, consumer: str) -> tuple[str, int] | None:
        for group in self.groups.values():
            for name, repeat in group.consumers:
                if name == consumer:
                    return group.producer, repeat
        return None


def _is_gateable(module: nn.Module) -> bool:
    if isinstance(module, nn.Conv2d):
        return module.groups == 1
    return isinstance(module, nn.Linear)


def _channel_dim(module: nn.Module) -> int:
    return 1 if isinstance(module, nn.Conv2d) else -1


def _trace(model: nn.Module):
    from torch import fx

    try:
        return fx.symbolic_trace(model)
    except Exception as exc:  # fx raises many kinds for untraceable Python control flow
        raise SltError(
            f"--granularity channel cannot read this model's graph (torch.fx: {type(exc).__name__})"
        ) from None


def _flatten_start(node) -> int | None:
    """start_dim of a flatten node, or None when the node is not a flatten."""
    if node.op == "call_function" and node.target is torch.flatten:
        return node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
    if node.op == "call_method" and node.target == "flatten":
        return node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
    return None


def channel_plan(model: nn.Module, input_shape: tuple[int, ...]) -> ChannelPlan:
    """The removable channel groups of a plain (un-gated) model, for one input shape."""
    from torch.fx.passes.shape_prop import ShapeProp

    graph_module = _trace(model)
    modules = dict(graph_module.named_modules())
    ShapeProp(graph_module).propagate(torch.zeros(1, *input_shape))
    shapes: dict[str, LayerShape] = {}
    groups: dict[str, ChannelGroup] = {}
    outputs: set[str] = set()
    for node in graph_module.graph.nodes:
        if node.op != "call_module" or not _is_gateable(modules[node.target]):
            continue
        module = modules[node.target]
        out_shape = node.meta["tensor_meta"].shape
        positions = output_positions(isinstance(module, nn.Conv2d), tuple(out_shape))
        shapes[node.target] = LayerShape(module.weight.numel(), int(positions))
        group = _follow(node, module, modules)
        if isinstance(group, ChannelGroup):
            groups[node.target] = group
        elif group == "output":
            outputs.add(node.target)
    for group in _attention_heads(model):
        groups[group.producer] = group
    return ChannelPlan(groups, shapes, frozenset(outputs), _input_readers(graph_module, modules))


def _input_readers(graph_module, modules: dict) -> frozenset[str]:
    """A Linear that reads the network's (flattened) input directly, as LeNet's first layer
    does: its input features (pixels) can be gated and removed like neurons."""
    placeholders = [n for n in graph_module.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        return frozenset()
    node, readers = placeholders[0], []
    while len(node.users) == 1:
        (node,) = node.users
        module = modules.get(node.target) if node.op == "call_module" else None
        if isinstance(module, nn.Linear):
            readers.append(node.target)
            break
        flatten = isinstance(module, nn.Flatten) or _flatten_start(node) is not None
        if not (flatten or isinstance(module, nn.Identity | nn.Dropout)):
            break
    return frozenset(readers)


def is_head_attention(module: nn.Module) -> bool:
    """timm's `Attention` (ViT, DeiT, ...): qkv → heads → proj, sized by `num_heads` and
    `attn_dim`, with nothing per head between (no q/k norm, no output norm or gate)."""
    return (
        type(module).__name__ == "Attention"
        and isinstance(getattr(module, "qkv", None), nn.Linear)
        and isinstance(getattr(module, "proj", None), nn.Linear)
        and hasattr(module, "num_heads")
        and hasattr(module, "attn_dim")
        and all(
            isinstance(getattr(module, n, nn.Identity()), nn.Identity)
            for n in ("q_norm", "k_norm", "norm")
        )
        and getattr(module, "gate", None) is None
    )


def _attention_heads(model: nn.Module) -> list[ChannelGroup]:
    groups = []
    for name, module in model.named_modules():
        if is_head_attention(module):
            head_dim = module.attn_dim // module.num_heads
            groups.append(
                ChannelGroup(
                    f"{name}.qkv",
                    f"{name}.proj",
                    None,
                    module.num_heads,
                    ((f"{name}.proj", head_dim),),
                    attention=name,
                    head_dim=head_dim,
                )
            )
    return groups


def _follow(start, producer: nn.Module, modules: dict) -> ChannelGroup | str:
    """Walk from a layer's output through channel-wise nodes to the layers that read it.
    Returns the group, or why there is none: "output" (the channels are the network's
    outputs) or "joined" (an addition, concatenation, reshape, ...)."""
    channels = producer.weight.shape[0]
    dim = _channel_dim(producer)
    norm = None
    users = list(start.users)
    if len(users) == 1 and users[0].op == "call_module":
        first = modules[users[0].target]
        if isinstance(first, nn.BatchNorm2d | nn.BatchNorm1d):
            norm = users[0].target
    consumers: list[tuple[str, int]] = []
    frontier = [(user, 1) for user in users]
    seen = set()
    while frontier:
        node, repeat = frontier.pop()
        if (node, repeat) in seen:
            continue
        seen.add((node, repeat))
        if node.op == "call_module":
            module = modules[node.target]
            if _is_gateable(module):
                if isinstance(module, nn.Linear) and dim == 1 and repeat == 1:
                    return "joined"  # a conv's channels read along the wrong axis by a linear
                consumers.append((node.target, repeat))
                continue
            if isinstance(module, nn.BatchNorm2d | nn.BatchNorm1d) and node.target != norm:
                return "joined"  # a later BatchNorm would normalise the gate away
            if isinstance(module, nn.Flatten):
                repeat = _flattened(node, module.start_dim, dim, repeat)
                if repeat is None:
                    return "joined"
            elif not isinstance(module, (*CHANNEL_WISE_MODULES, nn.BatchNorm2d, nn.BatchNorm1d)):
                return "joined"
        elif node.op == "call_function" and node.target in CHANNEL_WISE_FUNCTIONS:
            pass
        elif (start_dim := _flatten_start(node)) is not None:
            repeat = _flattened(node, start_dim, dim, repeat)
            if repeat is None:
                return "joined"
        elif node.op == "call_method" and node.target in CHANNEL_WISE_METHODS:
            pass
        elif node.op == "output":
            return "output"
        else:
            return "joined"  # an addition, concatenation, reshape, ...
        frontier += [(user, repeat) for user in node.users]
    if not consumers:
        return "joined"
    return ChannelGroup(start.target, norm or start.target, norm, channels, tuple(consumers))


def _flattened(node, start_dim: int, dim: int, repeat: int) -> int | None:
    """A flatten from the channel axis on turns each channel into H·W consecutive features."""
    source = node.args[0].meta["tensor_meta"].shape
    if dim != 1 or start_dim != 1 or len(source) < 2:
        return None
    return repeat * math.prod(source[2:])


def apply_gate(output: torch.Tensor, gate: torch.Tensor, conv: bool) -> torch.Tensor:
    """Multiply each channel (conv: dim 1; linear: the last dim) by its gate value."""
    if conv:
        return output * gate.view(1, -1, *([1] * (output.dim() - 2))).to(output.dtype)
    return output * gate.to(output.dtype)
