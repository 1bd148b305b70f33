"""Two parameter-free layers whose action on an exit path is known, so that every network using them gets the
cheaper exits: :class:`Subsample` (a stride-s skip without weights, composed with the 1×1 skips after it) and
:class:`GlobalAveragePool` (applied to a stack of exits in place, without regrouping its memory)."""
from __future__ import annotations

from torch import Tensor, nn

from .._checks import integer


class Subsample(nn.Module):
    """S(x) = x[:, :, ::s, ::s, ...]: every spatial axis (all after the channels) subsampled by ``stride``; the
    1×1 stride-s convolution with identity weight, without parameters."""

    def __init__(self, stride: int = 2):
        super().__init__()
        self.stride = integer("stride", stride, minimum=1)

    def forward(self, x: Tensor) -> Tensor:
        return x[(slice(None), slice(None)) + (slice(None, None, self.stride),) * (x.dim() - 2)]

    def extra_repr(self) -> str:
        return f"stride={self.stride}"


class GlobalAveragePool(nn.Module):
    """(B, C, *spatial) → (B, C): the mean over the last ``spatial_dims`` axes (pooling and flattening in one)."""

    def __init__(self, spatial_dims: int = 2):
        super().__init__()
        self.spatial_dims = integer("spatial_dims", spatial_dims, minimum=1)

    def forward(self, x: Tensor) -> Tensor:
        return x.mean(dim=tuple(range(-self.spatial_dims, 0)))

    def extra_repr(self) -> str:
        return f"spatial_dims={self.spatial_dims}"
