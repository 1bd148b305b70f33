"""The flat control vector θ shared by discrete and continuous-time systems.

A system declares ``fields`` — (name, shape of one block) pairs — and ``num_controls``,
the number of stored blocks (N layers of a ResNet, K or K+1 grid values of a neural
ODE). θ is laid out field by field, each field stacked over the blocks (all ``A1``,
then all ``b1``, ...); :meth:`unpack` returns views of shape (num_controls, *shape).
:class:`LayerMap` adds the rollout of a discrete-time system defined by its ``step``.
"""
from __future__ import annotations

import math

import numpy as np

from .. import _array, _checks
from ._protocol import FlatSystem, LayerMapSystem


def check_draw(rng, scale) -> float:
    """The arguments of ``initial_controls``: a numpy Generator and a scale >= 0."""
    _checks.instance("rng", rng, np.random.Generator, "a numpy Generator (np.random.default_rng(seed))")
    return _checks.real("scale", scale, minimum=0.0)


class ControlLayout(FlatSystem):
    fields: tuple
    num_controls: int

    @property
    def layer_parameter_count(self) -> int:
        return sum(math.prod(shape) for _, shape in self.fields)

    @property
    def parameter_count(self) -> int:
        return self.num_controls * self.layer_parameter_count

    def unpack(self, theta) -> dict:
        """Views ``{name: array of shape (num_controls, *shape)}`` into the flat vector θ."""
        theta = _array.as_array("theta", theta)
        if tuple(theta.shape) != (self.parameter_count,):
            raise ValueError(f"theta: expected a flat vector of {self.parameter_count} controls "
                             f"for {self!r}, got shape {tuple(theta.shape)}")
        views, start, count = {}, 0, self.num_controls
        for name, shape in self.fields:
            size = count * math.prod(shape)
            views[name] = theta[start:start + size].reshape((count, *shape))
            start += size
        return views

    def pack(self, blocks: dict):
        """Inverse of :meth:`unpack`: a flat vector from stacked per-field blocks."""
        parts = [blocks[name].reshape(-1) for name, _ in self.fields]
        if isinstance(parts[0], np.ndarray):
            return np.concatenate(parts)
        import torch
        return torch.cat(parts)

    def initial_controls(self, rng: np.random.Generator, scale: float) -> np.ndarray:
        """Small random controls: every residual branch starts close to zero.

        Near-zero branches make the untrained network the identity map (every state
        a steady state) and, as the Demystifying paper argues for shortcut networks,
        give a well-conditioned start. Each weight is N(0, (scale / sqrt(fan_in))^2),
        biases start at zero.
        """
        check_draw(rng, scale)
        blocks = {}
        for name, shape in self.fields:
            if len(shape) == 2:
                blocks[name] = rng.normal(0.0, scale / math.sqrt(shape[1]), (self.num_controls, *shape))
            else:
                blocks[name] = np.zeros((self.num_controls, *shape))
        return self.pack(blocks)

    def control_norms(self, theta) -> np.ndarray:
        """‖u_k‖ (Euclidean norm of all weights and biases of block k), shape (num_controls,)."""
        blocks = self.unpack(np.asarray(theta, dtype=np.float64))
        return np.sqrt(sum((b.reshape(self.num_controls, -1) ** 2).sum(axis=1) for b in blocks.values()))


class LayerMap(ControlLayout, LayerMapSystem):
    """A discrete-time system x_{k+1} = f_k(x_k, u_k), k = 0..N-1, in the flat θ layout: a subclass
    writes ``step``, ``step_backward`` and ``truncate`` (the rollout is :class:`LayerMapSystem`'s)."""
