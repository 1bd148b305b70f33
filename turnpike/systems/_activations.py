"""Activation functions σ with σ(0) = 0, written once for numpy arrays and torch tensors.

σ(0) = 0 is what makes every state a steady state for zero controls (u = 0 gives
x_{k+1} = x_k), the property the dissipativity analysis of the 2024 paper rests on;
activations without it (sigmoid, softplus) are therefore not offered.

Each activation gives its value and its derivative expressed through the
pre-activation ``z`` and the value ``a = σ(z)``, so that the adjoint sweep can reuse
what the forward pass stored instead of recomputing it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch


def _tanh(z):
    return np.tanh(z) if isinstance(z, (np.ndarray, np.generic, float)) else z.tanh()


def _tanh_into(z, out):
    # numpy's SIMD tanh is about 3x torch's on one CPU thread and still faster than torch's on
    # two (numpy 2, float64, 480x8 to 512x784); float CPU tensors share their memory with
    # .numpy(), so the buffered sweep takes that route without a copy
    if (out.device.type == "cpu" and out.dtype in (torch.float32, torch.float64)
            and not (z.requires_grad or out.requires_grad)):
        np.tanh(z.numpy(), out=out.numpy())
        return out
    return torch.tanh(z, out=out)


def _scale_by_tanh_derivative(g, z, a):
    """g · (1 − a²) over g, with 1 − a² formed in one temporary."""
    square = a * a
    if isinstance(square, np.ndarray):
        np.subtract(1.0, square, out=square)
    else:
        square.neg_().add_(1.0)        # −a² + 1: the same rounding as 1 − a²
    g *= square
    return g


@dataclass(frozen=True)
class Activation:
    name: str
    value: Callable  # z -> σ(z)
    derivative: Callable | None  # (z, a) -> σ'(z); None means σ' = 1 (skip the multiply)
    # (z, out) -> σ(z) written into the torch tensor ``out`` (the buffered adjoint sweep);
    # None: compute σ(z) and copy it
    value_into: Callable | None = None
    # (z, out) -> σ(z) written into the numpy array ``out`` (may be z itself); None: not offered
    numpy_into: Callable | None = None
    # True when ``derivative`` reads only a = σ(z): a sweep may then write σ(z) over z and keep
    # one array per layer instead of two (half the forward cache, and a fresh array less)
    derivative_from_value: bool = False
    # (g, z, a) -> g · σ'(z) written over g, bit for bit ``g * derivative(z, a)`` with fewer
    # temporaries; None: multiply by ``derivative(z, a)`` in place
    scale_into: Callable | None = None

    def write(self, z, out):
        """σ(z) into the preallocated tensor ``out``; returns ``out``."""
        if self.value_into is not None:
            return self.value_into(z, out)
        return out.copy_(self.value(z))

    def apply_in_place(self, z):
        """σ(z) written over the numpy array ``z`` when the derivative needs only σ(z) (then the
        caller passes σ(z) for z to :attr:`derivative`); otherwise σ(z) as a new array."""
        if self.derivative_from_value and self.numpy_into is not None and isinstance(z, np.ndarray):
            return self.numpy_into(z, z)
        return self.value(z)

    def scale_by_derivative(self, g, z, a):
        """g · σ'(z) written over ``g``, an array or tensor the caller owns and autograd does not
        track; returns ``g``. Bit for bit ``g * derivative(z, a)``, with fewer temporaries."""
        if self.derivative is None:
            return g
        if self.scale_into is not None:
            return self.scale_into(g, z, a)
        g *= self.derivative(z, a)
        return g

    def __repr__(self) -> str:
        return f"Activation({self.name!r})"

    def __reduce__(self):           # pickled by name: the functions are module-level lambdas
        return get_activation, (self.name,)


def _positive(z):
    """1.0 where z > 0, else 0.0, in z's own dtype: a bool mask times a float would promote
    float32 arrays to float64 in numpy, and float64 tensors to float32 in torch."""
    positive = z > 0
    if isinstance(positive, (np.ndarray, np.generic)):
        return positive.astype(np.result_type(z, np.float32))
    return positive if isinstance(positive, bool) else positive.to(z.dtype)


ACTIVATIONS = {
    "tanh": Activation("tanh", _tanh, lambda z, a: 1.0 - a * a, _tanh_into,
                       lambda z, out: np.tanh(z, out=out), derivative_from_value=True,
                       scale_into=_scale_by_tanh_derivative),
    # σ(z) > 0 exactly where z > 0 for both ReLUs: their derivatives read the sign of a
    "relu": Activation("relu", lambda z: np.maximum(z, 0) if isinstance(z, np.ndarray) else z.clamp(min=0),
                       lambda z, a: _positive(a), lambda z, out: torch.clamp_min(z, 0, out=out),
                       lambda z, out: np.maximum(z, 0, out=out), derivative_from_value=True),
    "leaky_relu": Activation("leaky_relu", lambda z: z * (0.01 + 0.99 * _positive(z)),
                             lambda z, a: 0.01 + 0.99 * _positive(a), None,
                             lambda z, out: np.multiply(z, 0.01 + 0.99 * _positive(z), out=out),
                             derivative_from_value=True),
    "identity": Activation("identity", lambda z: z, None),
}


def get_activation(name: str, argument: str = "activation") -> Activation:
    if isinstance(name, Activation):
        return name
    if not isinstance(name, str) or name not in ACTIVATIONS:
        raise ValueError(f"{argument}: expected one of {sorted(ACTIVATIONS)}, got {name!r}")
    return ACTIVATIONS[name]
