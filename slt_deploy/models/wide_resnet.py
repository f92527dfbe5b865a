"""WRN-28-10 for CIFAR (Zagoruyko & Komodakis 2016), which timm does not ship: pre-activation
basic blocks, three groups of (depth - 4) / 6 blocks at widths 16k, 32k, 64k, no dropout.
Bias-free convolutions; the BatchNorms become non-affine in the search (docs/design.md)."""

from __future__ import annotations

import torch
from torch import nn

from slt_deploy.errors import SltError
from slt_deploy.models.registry import register_model


class PreActBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.shortcut = (
            nn.Conv2d(in_planes, planes, 1, stride, 0, bias=False)
            if stride != 1 or in_planes != planes
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(x))
        skip = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(torch.relu(self.bn2(out)))
        return out + skip


class WideResNet(nn.Module):
    def __init__(self, depth: int, widen: int, channels: int, num_classes: int) -> None:
        super().__init__()
        if (depth - 4) % 6:
            raise SltError(f"WRN depth must be 6n + 4 (28, 40, ...), got {depth}")
        n = (depth - 4) // 6
        widths = [16, 16 * widen, 32 * widen, 64 * widen]
        self.conv1 = nn.Conv2d(channels, widths[0], 3, 1, 1, bias=False)
        groups = []
        in_planes = widths[0]
        for i, (planes, stride) in enumerate(zip(widths[1:], (1, 2, 2), strict=True)):
            blocks = [PreActBlock(in_planes if j == 0 else planes, planes, stride if j == 0 else 1)
                      for j in range(n)]  # fmt: skip
            groups.append((f"group{i + 1}", nn.Sequential(*blocks)))
            in_planes = planes
        for name, group in groups:
            self.add_module(name, group)
        self.bn = nn.BatchNorm2d(in_planes)
        self.fc = nn.Linear(in_planes, num_classes, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.group3(self.group2(self.group1(self.conv1(x))))
        out = torch.relu(self.bn(out))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(out, 1), 1))


@register_model("wrn-28-10")
def wrn_28_10(
    input_shape: tuple[int, ...], num_classes: int, depth: int = 28, widen: int = 10
) -> nn.Module:
    if len(input_shape) != 3:
        raise SltError(f"wrn-28-10 takes images (C, H, W); the data set gives {input_shape}")
    return WideResNet(depth, widen, input_shape[0], num_classes)
