r"""Residual networks with torchvision's ResNet layout, built without torchvision.

The layout of ``torchvision.models.resnet`` (module names, structure, forward pass and initialisation), so
that :func:`turnpike.residual_network` recognises these networks exactly as it recognises torchvision's own
and a state dict moves between the two:

    conv1 → bn1 → relu → maxpool → layer1 .. layer4 → avgpool → flatten → fc

``layer q`` an ``nn.Sequential`` of :class:`BasicBlock` (ResNet-18/34) or :class:`Bottleneck` (ResNet-50 and
deeper, Wide ResNets with ``width_per_group`` = 128, ResNeXt with ``groups``), the first block of a stage
carrying a ``downsample`` (conv1x1 → BatchNorm) where the shape changes. At torchvision's sizes
(``base`` = 64, 1,000 classes) the parameter counts are torchvision's published ones (ResNet-18 11,689,512,
ResNet-50 25,557,032; tested).

Two options for small images that torchvision leaves out: ``base`` scales every width (64 in torchvision), and
``small_stem=True`` replaces the 7×7 stride-2 convolution and the max-pool by a 3×3 stride-1 convolution and
the identity, the usual adaptation of ResNet-18 to 32×32 images (torchvision's stem shrinks them to 8×8 before
the first block).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .._checks import boolean, fail, integer

__all__ = ["BasicBlock", "Bottleneck", "ResNet", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
           "wide_resnet50_2", "resnext50_32x4d"]


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, groups=groups, bias=False)


def _conv1x1(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """relu(bn2(conv2(relu(bn1(conv1(x))))) + downsample(x)): two 3×3 convolutions."""

    expansion = 1

    def __init__(self, in_channels: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 groups: int = 1, width_per_group: int = 64):
        super().__init__()
        if groups != 1 or width_per_group != 64:
            fail("groups/width_per_group", "1 and 64 for BasicBlock (as torchvision)", (groups, width_per_group))
        self.conv1 = _conv3x3(in_channels, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = out + (x if self.downsample is None else self.downsample(x))
        return self.relu(out)


class Bottleneck(nn.Module):
    """relu(bn3(conv3(relu(bn2(conv2(relu(bn1(conv1(x)))))))) + downsample(x)): 1×1, 3×3 (grouped), 1×1 with
    the stride on the 3×3 convolution (torchvision's "ResNet v1.5")."""

    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 groups: int = 1, width_per_group: int = 64):
        super().__init__()
        width = int(planes * (width_per_group / 64.0)) * groups
        self.conv1 = _conv1x1(in_channels, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = _conv3x3(width, width, stride, groups)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = _conv1x1(width, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out = out + (x if self.downsample is None else self.downsample(x))
        return self.relu(out)


_BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}


class ResNet(nn.Module):
    """torchvision's ResNet: ``block`` "basic" or "bottleneck" (or the class), ``layers`` blocks per stage.

    ``base`` the stem's width (stage q has base·2^q planes), ``small_stem`` for 32×32 images (see the module
    docstring). Convolutions get Kaiming-normal (fan-out) weights, BatchNorms weight 1 and bias 0, as in
    torchvision; ``zero_init_residual`` zeroes each branch's last BatchNorm weight (every block then starts as
    its skip path)."""

    def __init__(self, block, layers: Sequence[int], *, num_classes: int = 1000, in_channels: int = 3,
                 base: int = 64, groups: int = 1, width_per_group: int = 64, small_stem: bool = False,
                 zero_init_residual: bool = False):
        super().__init__()
        block = _BLOCKS.get(block, block)
        if block not in (BasicBlock, Bottleneck):
            fail("block", f"one of {sorted(_BLOCKS)} or turnpike.models.BasicBlock / Bottleneck", block)
        if isinstance(layers, (str, bytes)) or not isinstance(layers, Sequence) or not layers:
            fail("layers", "a non-empty sequence of blocks per stage, e.g. (2, 2, 2, 2)", layers)
        layers = [integer(f"layers[{q}]", count, minimum=1) for q, count in enumerate(layers)]
        num_classes = integer("num_classes", num_classes, minimum=2)
        in_channels = integer("in_channels", in_channels, minimum=1)
        base = integer("base", base, minimum=1)
        groups = integer("groups", groups, minimum=1)
        width_per_group = integer("width_per_group", width_per_group, minimum=1)
        small_stem, zero_init_residual = boolean("small_stem", small_stem), boolean("zero_init_residual",
                                                                                      zero_init_residual)
        self._groups, self._width_per_group, self._channels = groups, width_per_group, base
        if small_stem:
            self.conv1 = _conv3x3(in_channels, base)
            self.maxpool = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(in_channels, base, kernel_size=7, stride=2, padding=3, bias=False)
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(base)
        self.relu = nn.ReLU(inplace=True)
        for q, count in enumerate(layers):
            self.add_module(f"layer{q + 1}", self._stage(block, base * 2 ** q, count, stride=1 if q == 0 else 2))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(self._channels, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.constant_(module.weight, 1)
                nn.init.constant_(module.bias, 0)
        if zero_init_residual:
            for module in self.modules():
                last = module.bn3 if isinstance(module, Bottleneck) else (
                    module.bn2 if isinstance(module, BasicBlock) else None)
                if last is not None:
                    nn.init.constant_(last.weight, 0)

    def _stage(self, block, planes: int, count: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self._channels != planes * block.expansion:
            downsample = nn.Sequential(_conv1x1(self._channels, planes * block.expansion, stride),
                                       nn.BatchNorm2d(planes * block.expansion))
        blocks = [block(self._channels, planes, stride, downsample, self._groups, self._width_per_group)]
        self._channels = planes * block.expansion
        blocks += [block(self._channels, planes, groups=self._groups, width_per_group=self._width_per_group)
                   for _ in range(1, count)]
        return nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for q in range(1, 5):
            layer = getattr(self, f"layer{q}", None)
            if layer is None:
                break
            x = layer(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet18(**options) -> ResNet:
    """ResNet-18: BasicBlocks (2, 2, 2, 2). ``options``: as :class:`ResNet` (num_classes, in_channels, base,
    small_stem, zero_init_residual)."""
    return ResNet("basic", (2, 2, 2, 2), **options)


def resnet34(**options) -> ResNet:
    """ResNet-34: BasicBlocks (3, 4, 6, 3)."""
    return ResNet("basic", (3, 4, 6, 3), **options)


def resnet50(**options) -> ResNet:
    """ResNet-50: Bottlenecks (3, 4, 6, 3)."""
    return ResNet("bottleneck", (3, 4, 6, 3), **options)


def resnet101(**options) -> ResNet:
    """ResNet-101: Bottlenecks (3, 4, 23, 3)."""
    return ResNet("bottleneck", (3, 4, 23, 3), **options)


def resnet152(**options) -> ResNet:
    """ResNet-152: Bottlenecks (3, 8, 36, 3)."""
    return ResNet("bottleneck", (3, 8, 36, 3), **options)


def wide_resnet50_2(**options) -> ResNet:
    """Wide ResNet-50-2: ResNet-50 with twice the bottleneck width (width_per_group 128)."""
    return ResNet("bottleneck", (3, 4, 6, 3), width_per_group=128, **options)


def resnext50_32x4d(**options) -> ResNet:
    """ResNeXt-50 32×4d: ResNet-50 with 32 groups of width 4."""
    return ResNet("bottleneck", (3, 4, 6, 3), groups=32, width_per_group=4, **options)
