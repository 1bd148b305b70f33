"""The pieces :class:`~turnpike.PreActResNet` is built from: the pre-activation block, the stage
transitions (skips), the groups of exits batched per stage, and the checks of its arguments."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from torch import Tensor, nn

from .._checks import fail, integer

EXIT_VARIANTS = ("standard", "ws", "full")
STANDARD_WIDTHS = (16, 32, 64)
BN_EPS = 1e-5


# ----------------------------------------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------------------------------------
class _Subsample(nn.Module):
    """S(x) = x[:, :, ::2, ::2]: the 1x1 stride-2 convolution with identity weight (no parameters)."""

    def forward(self, x: Tensor) -> Tensor:
        return x[:, :, ::2, ::2]


def _conv3x3(in_channels: int, out_channels: int, stride: int) -> nn.Conv2d:
    # no bias: every conv is followed by a batch norm (here or in the next block / head)
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


def _make_skip(in_channels: int, out_channels: int) -> nn.Module:
    """The stage-transition skip: parameter-free subsampling if the width stays, else a learned 1x1 conv."""
    if in_channels == out_channels:
        return _Subsample()
    return nn.Conv2d(in_channels, out_channels, 1, stride=2, bias=False)


class _PreActBlock(nn.Module):
    """x_{k+1} = S_k(x_k) + F_k(x_k), F_k = BN -> ReLU -> conv3x3(stride) -> BN -> ReLU -> conv3x3."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, skip: nn.Module):
        super().__init__()
        self.branch = nn.Sequential(
            nn.BatchNorm2d(in_channels), nn.ReLU(inplace=True), _conv3x3(in_channels, out_channels, stride),
            nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True), _conv3x3(out_channels, out_channels, 1))
        self.skip = skip

    def forward(self, x: Tensor) -> Tensor:
        return self.skip(x) + self.branch(x)   # the skip sees x_k itself, not BN/ReLU(x_k)


@dataclass(frozen=True)
class _Transition:
    """The skip that enters stage ``stage`` (>= 1).

    ``position`` is the block index k whose S_k it is, or N for a trailing skip (part of T); exit k passes
    through it iff k <= position. ``exit_slot`` indexes ``exit_skip_weights`` (full exits, learned skips).
    """
    stage: int
    position: int
    in_channels: int
    out_channels: int
    learned: bool
    tail_index: Optional[int]
    exit_slot: Optional[int]


@dataclass(frozen=True)
class _ExitGroup:
    """Exits start..stop-1 whose states share one shape (one stage); ``transitions`` remain after them."""
    stage: int
    start: int
    stop: int
    channels: int
    transitions: tuple


# ----------------------------------------------------------------------------------------------------------
# Argument checks
# ----------------------------------------------------------------------------------------------------------
def _is_channels_last(x: Tensor) -> bool:
    """Stored channels-last (and not also contiguous, as a 1 × 1 image is)."""
    return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


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
    last_nonempty = max((i for i, n in enumerate(counts) if n > 0), default=-1)
    if any(n == 0 for n in counts[:last_nonempty + 1]):
        # an empty stage may only trail (its skip then belongs to the output map T of a SubResNet)
        fail("blocks_per_stage", "zero block counts only after the last non-empty stage", blocks_per_stage)
    return counts


def _truncated_blocks_per_stage(blocks_per_stage: tuple, depth: int) -> tuple:
    """The first ``depth`` blocks, stage by stage: (18, 18, 18), 12 -> (12, 0, 0); 20 -> (18, 2, 0)."""
    counts, remaining = [], depth
    for n in blocks_per_stage:
        counts.append(min(n, remaining))
        remaining -= counts[-1]
    return tuple(counts)
