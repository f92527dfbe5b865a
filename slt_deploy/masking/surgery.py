"""Module surgery: install masked layers in a network, and the plain layers that replace them.

`gate_(model, make_source, init_spec, filter_fn)` swaps Linear/Conv2d in place (torchao's
`sparsify_` pattern); `freeze_all_but_masks_` freezes what a pure strong ticket must not learn.
`plain_layer` is the one way back: a Linear/Conv2d holding a given weight.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from slt_deploy.init import InitSpec, frozen_weight
from slt_deploy.masking.layers import MaskedConv2d, MaskedLinear, masked_layers
from slt_deploy.masking.sources import MaskSource

FilterFn = Callable[[nn.Module, str], bool]
SourceFactory = Callable[[str, tuple[int, ...]], MaskSource]  # (layer name, weight shape)


def gateable(module: nn.Module, name: str) -> bool:
    """The default filter: every Linear and Conv2d."""
    return isinstance(module, nn.Linear | nn.Conv2d)


def plain_layer(
    weight: torch.Tensor, bias: torch.Tensor | None, conv: nn.Module | None
) -> nn.Module:
    """A frozen Linear (`conv` None) or Conv2d with `conv`'s stride, padding, dilation and
    groups, holding copies of `weight` and `bias`: what a folded or shrunk layer becomes."""
    if conv is None:
        layer: nn.Module = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    else:
        layer = nn.Conv2d(
            weight.shape[1] * conv.groups,
            weight.shape[0],
            tuple(weight.shape[2:]),
            stride=conv.stride,
            padding=conv.padding,
            dilation=conv.dilation,
            groups=conv.groups,
            bias=bias is not None,
        )
    layer.weight = nn.Parameter(weight.detach().clone(), requires_grad=False)
    if bias is not None:
        layer.bias = nn.Parameter(bias.detach().clone(), requires_grad=False)
    return layer.eval()


def _new_bias(module: nn.Module, learn_bias: bool) -> nn.Parameter | None:
    out = module.out_features if isinstance(module, nn.Linear) else module.out_channels
    return nn.Parameter(torch.zeros(out)) if learn_bias else None


def gate_(
    model: nn.Module,
    make_source: SourceFactory,
    init: InitSpec,
    filter_fn: FilterFn = gateable,
    learn_bias: bool = False,
) -> nn.Module:
    """Replace every Linear/Conv2d that `filter_fn` accepts with its masked version in place.

    Frozen weights come from (init.seed, qualified layer name); biases are dropped (or, with
    `learn_bias`, start at zero and are learned).
    """
    targets = [(n, m) for n, m in model.named_modules() if n and filter_fn(m, n)]
    for name, module in targets:
        weight = frozen_weight(init, name, tuple(module.weight.shape))
        bias = _new_bias(module, learn_bias)
        source = make_source(name, tuple(weight.shape))
        if isinstance(module, nn.Linear):
            new: nn.Module = MaskedLinear(weight, source, bias)
        else:
            new = MaskedConv2d(weight, source, bias, module)
        model.set_submodule(name, new)
    return model


def init_dense_(
    model: nn.Module, init: InitSpec, filter_fn: FilterFn = gateable, learn_bias: bool = False
) -> nn.Module:
    """Dense training baseline: the same weights the tickets start from, but trainable."""
    for name, module in model.named_modules():
        if name and filter_fn(module, name):
            module.weight = nn.Parameter(frozen_weight(init, name, tuple(module.weight.shape)))
            module.bias = _new_bias(module, learn_bias)
    return model


def normalisation_(model: nn.Module, affine_bn: bool) -> nn.Module:
    """BatchNorm non-affine (running statistics only) unless `affine_bn`; LayerNorm frozen."""
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.affine != affine_bn:
            replacement = type(module)(
                module.num_features, eps=module.eps, momentum=module.momentum, affine=affine_bn
            )
            model.set_submodule(name, replacement)
        elif isinstance(module, nn.LayerNorm):
            for param in module.parameters():
                param.requires_grad_(False)
    return model


def freeze_all_but_masks_(model: nn.Module, affine_bn: bool) -> nn.Module:
    """A ticket learns its mask and nothing else: parameters outside the masked layers
    (LayerNorm, position embeddings, class tokens, Swin's relative-position tables) stay at
    their seeded init and travel in the ticket; affine BN is learned only with --affine-bn."""
    keep = {id(p) for _, layer in masked_layers(model) for p in layer.parameters()}
    if affine_bn:
        keep |= {
            id(p)
            for m in model.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm)
            for p in m.parameters()
        }
    for param in model.parameters():
        if id(param) not in keep:
            param.requires_grad_(False)
    return model
