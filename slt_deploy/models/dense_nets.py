"""Fully connected nets and the Conv-2/4/6/8 CNNs of Frankle & Carbin and edge-popup.

Every layer is built without bias and every BatchNorm without affine parameters: the search
learns nothing but the mask (docs/design.md, "Method"). `--learn-bias`/`--affine-bn` add them back.
"""

from __future__ import annotations

import math
from collections import OrderedDict

from torch import nn

from slt_deploy.errors import SltError
from slt_deploy.models.registry import register_model


def _mlp(in_features: int, hidden: list[int], num_classes: int) -> list[tuple[str, nn.Module]]:
    """Named layers fc1, relu1, …: names key the frozen weights, so they are part of the format."""
    layers: list[tuple[str, nn.Module]] = []
    for i, width in enumerate(hidden, start=1):
        layers += [
            (f"fc{i}", nn.Linear(in_features, width, bias=False)),
            (f"fc_relu{i}", nn.ReLU()),
        ]
        in_features = width
    layers.append((f"fc{len(hidden) + 1}", nn.Linear(in_features, num_classes, bias=False)))
    return layers


def _sequential(layers: list[tuple[str, nn.Module]]) -> nn.Sequential:
    return nn.Sequential(OrderedDict(layers))


@register_model("lenet-300-100")
def lenet_300_100(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return _sequential(
        [("flatten", nn.Flatten()), *_mlp(math.prod(input_shape), [300, 100], num_classes)]
    )


@register_model("fc")
def fully_connected(
    input_shape: tuple[int, ...], num_classes: int, width: int = 1024, depth: int = 2
) -> nn.Module:
    """`depth` hidden layers of `width` neurons."""
    if width < 1 or depth < 0:
        raise SltError("fc needs --width >= 1 and --depth >= 0")
    return _sequential(
        [("flatten", nn.Flatten()), *_mlp(math.prod(input_shape), [width] * depth, num_classes)]
    )


CONV_PLANS = {  # channels per 3x3 conv, "M" = 2x2 max-pool (Frankle & Carbin, table 1)
    "conv2": [64, 64, "M"],
    "conv4": [64, 64, "M", 128, 128, "M"],
    "conv6": [64, 64, "M", 128, 128, "M", 256, 256, "M"],
    "conv8": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M"],
}


def _conv_net(
    plan: list, input_shape: tuple[int, ...], num_classes: int, width: float
) -> nn.Module:
    channels, height, wide = input_shape
    layers: list[tuple[str, nn.Module]] = []
    convs = pools = 0
    for item in plan:
        if item == "M":
            if height < 2 or wide < 2:
                raise SltError(f"input {input_shape} is too small for this many poolings")
            pools += 1
            layers.append((f"pool{pools}", nn.MaxPool2d(2)))
            height, wide = height // 2, wide // 2
        else:
            convs += 1
            out = max(1, round(item * width))
            layers += [
                (f"conv{convs}", nn.Conv2d(channels, out, 3, padding=1, bias=False)),
                (f"bn{convs}", nn.BatchNorm2d(out, affine=False)),
                (f"relu{convs}", nn.ReLU()),
            ]
            channels = out
    hidden = [max(1, round(256 * width))] * 2
    return _sequential(
        [*layers, ("flatten", nn.Flatten()), *_mlp(channels * height * wide, hidden, num_classes)]
    )


def _register_conv(name: str) -> None:
    def build(input_shape: tuple[int, ...], num_classes: int, width: float = 1.0) -> nn.Module:
        return _conv_net(CONV_PLANS[name], input_shape, num_classes, width)

    build.__doc__ = f"{name}: {CONV_PLANS[name]} then FC 256-256 (width multiplier `width`)."
    register_model(name)(build)


for _name in CONV_PLANS:
    _register_conv(_name)
