r"""The pre-activation convolutional ResNet of the 2025 stage-cost paper, built as a :class:`ResidualNetwork`.

The model (eq. 1 of the paper) maps an image batch through

    x_0     = V(x)                              stem: conv3x3 → BN → ReLU
    x_{k+1} = S_k(x_k) + F_k(x_k),  k = 0..N-1  residual blocks
    ŷ       = H(T(x_N))                         head: BN → ReLU → global average pool → linear

* F_k is the pre-activation basic block BN → ReLU → conv3x3 → BN → ReLU → conv3x3; its first conv has stride 2 in
  the first block of every stage after the first (the resolution halves there).
* S_k is the identity inside a stage. At the first block of a later stage it acts on the block input x_k itself
  (not on its pre-activation): a learned bias-free 1×1 stride-2 convolution where the width changes ("standard"
  widths, e.g. 16/32/64) and the parameter-free :class:`Subsample` where it does not ("homogeneous"). Setting
  w_{F,k} = 0 gives x_{k+1} = S_k(x_k): the skips alone carry the state.
* T, the head's leading skips, is empty for an ordinary network and holds the stage transitions a SubResNet-M needs
  after its last block (Definition 1): ``blocks_per_stage`` ending in zeros, e.g. (12, 0, 0).

Its exits are the network's skip-path exits, eq. (2): ŷ_k = H(T(S_{N-1}(⋯ S_k(x_k)))), each with its own head
statistics; every skip is linear per pixel, so a stage's remaining skips compose into one subsampling and one
matrix for all its exits (``_linear_skips``).

Initialisation: convolutions Kaiming normal (fan_out, ReLU), BatchNorm weight 1 and bias 0, the linear layer
torch's default, drawn in the order of the former ``PreActResNet`` class, so a seed gives the same weights; its
state dicts (run folders, checkpoints) load through :class:`FormerPreActResNet`.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

from torch import nn

from .._checks import boolean, fail, integer
from ._layers import GlobalAveragePool, Subsample
from ._preact_former import FormerPreActResNet
from ._residual import ResidualNetwork
from ._residual_parts import ResidualBlock

__all__ = ["STANDARD_WIDTHS", "preact_resnet", "truncated_blocks_per_stage"]

STANDARD_WIDTHS = (16, 32, 64)


def preact_resnet(*, blocks_per_stage: Union[int, Sequence[int]] = 18, widths: Sequence[int] = STANDARD_WIDTHS,
                  in_channels: int = 3, num_classes: int = 10, exits: str = "ws", zero_branches: bool = False,
                  exit_momentum: Optional[float] = 0.1) -> ResidualNetwork:
    """The paper's pre-activation ResNet (see the module docstring) as a :class:`ResidualNetwork`.

    blocks_per_stage  int (the same in every stage) or per-stage counts; trailing zeros give a SubResNet whose
                      remaining stage transitions lead its head. ResNet-54: 18 (× 3 stages).
    widths            per-stage channels, the stem's = widths[0]: standard (16, 32, 64); homogeneous one width,
                      e.g. (32, 32, 32) (MNIST) or (64, 64, 64) (CIFAR).
    zero_branches     zero the last conv of every branch: the untrained network is carried by its skips alone
                      (every exit then agrees, Lemma 1 with M = 0).
    exits, exit_momentum  as :class:`ResidualNetwork` (the head BatchNorm's momentum is ``exit_momentum`` too).
    """
    widths = _check_widths(widths)
    counts = _check_blocks_per_stage(blocks_per_stage, len(widths))
    in_channels = integer("in_channels", in_channels, minimum=1)
    num_classes = integer("num_classes", num_classes, minimum=2)
    boolean("zero_branches", zero_branches)
    # modules created in the former class's order: the default initialisations draw from the same generator
    stem = nn.Sequential(_conv3x3(in_channels, widths[0], 1), nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True))
    blocks = []
    for stage, count in enumerate(counts):
        for i in range(count):
            enters = stage > 0 and i == 0                 # the resolution halves, the width may change
            width_in = widths[stage - 1] if enters else widths[stage]
            skip = _skip(width_in, widths[stage]) if enters else None
            blocks.append(ResidualBlock(_branch(width_in, widths[stage], 2 if enters else 1), skip))
    tail = [_skip(widths[s - 1], widths[s]) for s in range(1, len(widths)) if counts[s] == 0]
    head = nn.Sequential(*tail, nn.BatchNorm2d(widths[-1], momentum=exit_momentum), nn.ReLU(inplace=True),
                         GlobalAveragePool(), nn.Linear(widths[-1], num_classes))
    for module in (stem, *blocks, head):
        for layer in module.modules():
            if isinstance(layer, nn.Conv2d):
                nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
    if zero_branches:
        for block in blocks:
            nn.init.zeros_(block.branch[-1].weight)
    return ResidualNetwork(stem, blocks, head, num_classes=num_classes, input_shape=(in_channels, None, None),
                           exits=exits, exit_momentum=exit_momentum, architecture="PreActResNet",
                           saved_layout=FormerPreActResNet())


def truncated_blocks_per_stage(blocks_per_stage: Sequence[int], depth: int) -> tuple:
    """The first ``depth`` blocks, stage by stage: (18, 18, 18), 12 → (12, 0, 0); 20 → (18, 2, 0) (the layout of a
    SubResNet-M trained from scratch)."""
    counts, remaining = [], integer("depth", depth, minimum=0)
    for n in blocks_per_stage:
        counts.append(min(n, remaining))
        remaining -= counts[-1]
    if remaining:
        fail("depth", f"at most {sum(blocks_per_stage)} blocks", depth)
    return tuple(counts)


def _conv3x3(in_channels: int, out_channels: int, stride: int) -> nn.Conv2d:
    # no bias: every conv is followed by a batch norm (here, in the next block or in the head)
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


def _skip(in_channels: int, out_channels: int) -> nn.Module:
    """A stage transition: parameter-free subsampling where the width stays, else a learned 1×1 stride-2 conv."""
    if in_channels == out_channels:
        return Subsample(2)
    return nn.Conv2d(in_channels, out_channels, 1, stride=2, bias=False)


def _branch(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    """F_k = BN → ReLU → conv3x3(stride) → BN → ReLU → conv3x3."""
    return nn.Sequential(nn.BatchNorm2d(in_channels), nn.ReLU(inplace=True), _conv3x3(in_channels, out_channels, stride),
                         nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True), _conv3x3(out_channels, out_channels, 1))


def _check_widths(widths) -> tuple:
    if isinstance(widths, (str, bytes)) or not isinstance(widths, Sequence) or len(widths) == 0:
        fail("widths", "a non-empty tuple of per-stage channel counts", widths)
    return tuple(integer(f"widths[{i}]", w, minimum=1) for i, w in enumerate(widths))


def _check_blocks_per_stage(blocks_per_stage, stages: int) -> tuple:
    if isinstance(blocks_per_stage, (str, bytes)) or not isinstance(blocks_per_stage, Sequence):
        return (integer("blocks_per_stage", blocks_per_stage, minimum=0),) * stages
    if len(blocks_per_stage) != stages:
        fail("blocks_per_stage", f"{stages} per-stage block counts (one per entry of widths)", blocks_per_stage)
    counts = tuple(integer(f"blocks_per_stage[{i}]", n, minimum=0) for i, n in enumerate(blocks_per_stage))
    last = max((i for i, n in enumerate(counts) if n > 0), default=-1)
    if any(n == 0 for n in counts[:last + 1]):
        # an empty stage may only trail (its skip then leads the head of a SubResNet)
        fail("blocks_per_stage", "zero block counts only after the last non-empty stage", blocks_per_stage)
    return counts
