r"""From the module a user already has to a :class:`~turnpike.ResidualNetwork`: torchvision's ResNet layout,
recognised by its structure (torchvision is never imported), or any residual model given by its parts.

torchvision's ResNet (resnet18..152, wide_resnet*, resnext*: BasicBlock or Bottleneck blocks, any widths,
groups and dilations) is

    stem   conv1 → bn1 → relu → maxpool
    block  relu(branch(x) + downsample(x)), downsample None (the identity) or conv1x1 → BatchNorm, and
           branch conv1 → bn1 → relu → conv2 → bn2 (BasicBlock)
           or conv1 → bn1 → relu → conv2 → bn2 → relu → conv3 → bn3 (Bottleneck)
    head   avgpool → flatten → fc

so block k's skip path is relu(downsample(x)) or relu(x), and exit k is fc(flatten(avgpool(⋯))) of them.
The adapter wraps the model's own modules (no copy): pretrained weights and statistics are used and trained in
place, and ``model`` itself stays usable. By default it checks on a small random input, in eval mode, that each
block and the whole network compute what the layout says (a subclass with another ``forward`` is refused).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Optional, Sequence

import torch
from torch import nn

from .._checks import boolean
from ._residual import ResidualNetwork
from ._residual_parts import ResidualBlock

__all__ = ["residual_network", "torchvision_parts"]

_HINT = ("for another residual network pass its parts: turnpike.residual_network(stem=..., "
         "blocks=[turnpike.ResidualBlock(branch, skip, activation), ...], head=...)")
_TOP = ("conv1", "bn1", "relu", "maxpool", "avgpool", "fc")
_BASIC = ("conv1", "bn1", "relu", "conv2", "bn2")
_BOTTLENECK = ("conv1", "bn1", "conv2", "bn2", "conv3", "bn3", "relu")
_LAYOUTS = ("a BasicBlock (conv1, bn1, relu, conv2, bn2, downsample) or a Bottleneck (conv1, bn1, conv2, bn2, "
            "conv3, bn3, relu, downsample)")


def residual_network(model: Optional[nn.Module] = None, *, stem: Optional[nn.Module] = None,
                     blocks: Optional[Sequence] = None, head: Optional[nn.Module] = None, exits: str = "ws",
                     exit_momentum: Optional[float] = 0.1, num_classes: Optional[int] = None,
                     input_shape: Optional[Sequence] = None, verify: bool = True) -> ResidualNetwork:
    """A :class:`ResidualNetwork` (a module system for ``turnpike.OCP``) from the network a user has.

    ``residual_network(model)``: a network with torchvision's ResNet layout (recognised by its attributes
    conv1, bn1, relu, maxpool, layer1..layerL of BasicBlock / Bottleneck blocks with ``downsample``, avgpool,
    fc); ``verify`` checks its blocks numerically on a small input (skipped on the meta device).
    ``residual_network(stem=..., blocks=[...], head=...)``: any other residual network, its blocks given as
    :class:`ResidualBlock` (branch, skip, activation) or such tuples. ``exits``, ``exit_momentum``,
    ``num_classes``, ``input_shape``: as :class:`ResidualNetwork`. The modules are wrapped, not copied.
    """
    verify = boolean("verify", verify)
    options = dict(exits=exits, exit_momentum=exit_momentum, num_classes=num_classes, input_shape=input_shape)
    if model is None:
        missing = [name for name, value in (("stem", stem), ("blocks", blocks), ("head", head)) if value is None]
        if missing:
            raise ValueError(f"{', '.join(missing)}: expected a model with torchvision's ResNet layout, or its "
                             f"parts stem, blocks and head, got neither")
        return ResidualNetwork(stem, blocks, head, **options)
    if stem is not None or blocks is not None or head is not None:
        raise ValueError("stem/blocks/head: expected either a model or its parts, got both")
    if not isinstance(model, nn.Module):
        raise ValueError(f"model: expected a torch.nn.Module with torchvision's ResNet layout, "
                         f"got {type(model).__name__}")
    stem, blocks, head, sources = torchvision_parts(model)
    network = ResidualNetwork(stem, blocks, head, **options)
    if verify:
        _verify(model, network, sources)
    return network


def torchvision_parts(model: nn.Module) -> tuple:
    """(stem, [ResidualBlock, ...], head, [(where, block) of the model's own blocks, e.g. "model.layer2[0]"]) of
    a network with torchvision's ResNet layout, built from its own modules; a ValueError names the first part
    that differs."""
    name = type(model).__name__
    missing = [a for a in _TOP if not isinstance(getattr(model, a, None), nn.Module)]
    layers = []
    while isinstance(getattr(model, f"layer{len(layers) + 1}", None), nn.Module):
        layers.append(getattr(model, f"layer{len(layers) + 1}"))
    if not layers:
        missing.append("layer1")
    if missing:
        raise ValueError(f"model: expected torchvision's ResNet layout (conv1, bn1, relu, maxpool, layer1..layer4, "
                         f"avgpool, fc), this {name} has no {', '.join(missing)}; {_HINT}")
    if type(model.conv1) is not nn.Conv2d:
        raise ValueError(f"model.conv1: expected an nn.Conv2d, got {type(model.conv1).__name__}; {_HINT}")
    if type(model.fc) is not nn.Linear:
        raise ValueError(f"model.fc: expected an nn.Linear, got {type(model.fc).__name__}; {_HINT}")
    known = set(_TOP) | {f"layer{i + 1}" for i in range(len(layers))}
    extra = [n for n, _ in model.named_children() if n not in known]
    if extra:
        raise ValueError(f"model: expected only torchvision's ResNet modules, this {name} also has "
                         f"{', '.join(extra)}, which the layout leaves out; {_HINT}")
    blocks, sources = [], []
    for i, layer in enumerate(layers, 1):
        if not isinstance(layer, nn.Sequential) or len(layer) == 0:
            raise ValueError(f"model.layer{i}: expected an nn.Sequential of BasicBlock or Bottleneck blocks, "
                             f"got {type(layer).__name__}{' (empty)' if isinstance(layer, nn.Sequential) else ''}; "
                             f"{_HINT}")
        for j, block in enumerate(layer):
            sources.append((f"model.layer{i}[{j}]", block))
            blocks.append(_torchvision_block(block, sources[-1][0]))
    stem = nn.Sequential(OrderedDict(conv1=model.conv1, bn1=model.bn1, relu=model.relu, maxpool=model.maxpool))
    head = nn.Sequential(OrderedDict(avgpool=model.avgpool, flatten=nn.Flatten(1), fc=model.fc))
    return stem, blocks, head, sources


def _torchvision_block(block: nn.Module, where: str) -> ResidualBlock:
    bottleneck = isinstance(getattr(block, "conv3", None), nn.Module)
    names = _BOTTLENECK if bottleneck else _BASIC
    missing = [n for n in names if not isinstance(getattr(block, n, None), nn.Module)]
    if not hasattr(block, "downsample"):
        missing.append("downsample")
    if missing:
        raise ValueError(f"{where}: expected {_LAYOUTS}, got a {type(block).__name__} without "
                         f"{', '.join(missing)}; {_HINT}")
    for conv in [n for n in names if n.startswith("conv")]:
        if type(getattr(block, conv)) is not nn.Conv2d:
            raise ValueError(f"{where}.{conv}: expected an nn.Conv2d, got {type(getattr(block, conv)).__name__}; "
                             f"{_HINT}")
    extra = [n for n, _ in block.named_children() if n not in names and n != "downsample"]
    if extra:
        raise ValueError(f"{where}: expected {_LAYOUTS}, this {type(block).__name__} also has "
                         f"{', '.join(extra)}, which the layout leaves out; {_HINT}")
    downsample = block.downsample
    if downsample is not None and not isinstance(downsample, nn.Module):
        raise ValueError(f"{where}.downsample: expected None or a torch.nn.Module, got {type(downsample).__name__}")
    relu = block.relu
    if bottleneck:
        branch = nn.Sequential(OrderedDict(conv1=block.conv1, bn1=block.bn1, relu1=relu, conv2=block.conv2,
                                           bn2=block.bn2, relu2=relu, conv3=block.conv3, bn3=block.bn3))
    else:
        branch = nn.Sequential(OrderedDict(conv1=block.conv1, bn1=block.bn1, relu=relu, conv2=block.conv2,
                                           bn2=block.bn2))
    return ResidualBlock(branch, downsample, relu)


@torch.no_grad()
def _verify(model: nn.Module, network: ResidualNetwork, sources: list, size: int = 32) -> None:
    """Each block, and the whole network, against the model's own forward on a random (2, C, size, size) batch in
    eval mode (states and statistics untouched, train/eval flags restored)."""
    reference = next(model.parameters(), None)
    if reference is None or reference.device.type == "meta":
        return
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, model.conv1.in_channels, size, size, generator=generator, dtype=reference.dtype)
    x = x.to(reference.device)
    modes = [(m, m.training) for m in list(model.modules()) + list(network.modules())]

    def close(a, b):
        scale = max(1.0, float(b.abs().max())) if b.numel() else 1.0
        tolerance = 1e-4 if b.dtype in (torch.float16, torch.bfloat16, torch.float32) else 1e-10
        return a.shape == b.shape and bool(((a - b).abs() <= tolerance * scale).all())

    try:
        model.eval()
        network.eval()
        h = network.stem(x)
        for (place, theirs), mine in zip(sources, network.blocks):
            expected = theirs(h)
            if not close(mine(h), expected):
                kind = "Bottleneck" if hasattr(theirs, "conv3") else "BasicBlock"
                raise ValueError(f"{place}: expected a block computing relu(branch(x) + downsample(x)) as "
                                 f"torchvision's {kind} does, this {type(theirs).__name__}'s forward computes "
                                 f"something else; {_HINT}")
            h = expected
        if not close(network(x), model(x)):
            raise ValueError(f"model: expected torchvision's forward conv1 → bn1 → relu → maxpool → layer1, "
                             f"layer2, ... → avgpool → flatten → fc, this {type(model).__name__}'s forward "
                             f"computes something else; {_HINT}")
    finally:
        for module, training in modes:
            module.training = training
