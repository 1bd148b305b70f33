r"""Exit paths made of skips that are linear per pixel, composed into one map per group of exits.

A skip that is a bias-free 1×1 convolution of stride s (no padding, one group) or a :class:`Subsample` acts on
every pixel alone: s(x) = W · x[..., ::s, ::s]. When every skip an exit passes is such a map (and no block has a
post-addition activation, as in pre-activation networks), the remaining chain of exit k collapses to

    P_{N-1}(⋯ P_k(x_k)) = (W_m ⋯ W_1) · x_k[..., ::s_1⋯s_m, ::s_1⋯s_m],

one subsampling and one composed matrix (per exit for "full" exits, whose weights are their own). The states of
a stage share that chain, so all N+1 exits cost one stack, one product per stage, and one head call, instead of
each skip running on every exit that passes it. The leading per-pixel-linear operations of the head (e.g. a
pruned network's remaining stage transitions) join the chain.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._layers import Subsample

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def pointwise_stride(module: nn.Module) -> Optional[int]:
    """The stride s of a 1×1 convolution without padding and with one stride on every axis, which computes
    conv(x[..., ::s, ::s]) with stride 1; None for any other module."""
    if type(module) not in _CONVS or any(k != 1 for k in module.kernel_size) or len(set(module.stride)) != 1:
        return None
    if not (isinstance(module.padding, str) or all(p == 0 for p in module.padding)):
        return None
    return module.stride[0]


def pixel_linear_stride(module: nn.Module) -> Optional[int]:
    """The stride s of a skip that computes W · x[..., ::s, ...] (a :class:`Subsample`, or a bias-free
    :func:`pointwise_stride` convolution of one group); None for any other module."""
    if type(module) is Subsample:
        return module.stride
    if type(module) not in _CONVS or module.bias is not None or module.groups != 1 or module.padding_mode != "zeros":
        return None
    return pointwise_stride(module)


def subsample(x: Tensor, stride: int) -> Tensor:
    """x[:, :, ::stride, ...] on every axis after the channels; a channels-last image batch by one-pixel pooling,
    whose gradient keeps the channels-last layout (a slice's would not)."""
    if stride == 1:
        return x
    if _is_channels_last(x):
        return F.avg_pool2d(x, kernel_size=1, stride=stride)
    return x[(slice(None), slice(None)) + (slice(None, None, stride),) * (x.dim() - 2)]


def _is_channels_last(x: Tensor) -> bool:
    """A 4-D tensor stored channels-last (and not also contiguous, as a 1 × 1 image is)."""
    return x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


def composed_exit_features(groups: Sequence[tuple]) -> Tensor:
    """The head inputs of all exits, (B, E, C_f, *spatial): ``groups`` is ((states, stride, matrix), ...) in exit
    order, matrix None (subsampling alone), (C_f, C_s) shared or (E_g, C_f, C_s) one per exit of the group.

    Channels-last states are built in (B, H, W, E, C_f) memory and returned as the (B, E, C_f, H, W) view, so the
    head's batch norm runs on a channels-last tensor and the gradients reach the states channels-last too."""
    if _is_channels_last(groups[0][0][0]):
        pieces = []
        for states, stride, matrix in groups:
            states = [subsample(x, stride) for x in states]
            stacked = torch.stack([x.permute(0, 2, 3, 1) for x in states], dim=3)     # (B, H, W, E, C_s)
            if matrix is not None:
                equation = "oc,bhwec->bhweo" if matrix.dim() == 2 else "eoc,bhwec->bhweo"
                stacked = torch.einsum(equation, matrix, stacked)
            pieces.append(stacked)
        stored = torch.cat(pieces, dim=3) if len(pieces) > 1 else pieces[0]
        return stored.permute(0, 3, 4, 1, 2)
    pieces = []
    for states, stride, matrix in groups:
        states = [subsample(x, stride) for x in states]
        if matrix is None:
            pieces.extend(x[:, None] for x in states)            # no copy until the final cat
            continue
        stacked = torch.stack(states, dim=1)                      # (B, E, C_s, *spatial)
        equation = "oc,bec...->beo..." if matrix.dim() == 2 else "eoc,bec...->beo..."
        pieces.append(torch.einsum(equation, matrix, stacked))
    return torch.cat(pieces, dim=1) if len(pieces) > 1 else pieces[0]
