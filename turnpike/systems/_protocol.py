r"""What a system must provide to be posed as an OCP and solved by :func:`turnpike.solve_ocp`.

Every system is a layer map :math:`x_{k+1} = f_k(x_k, u_k)`, k = 0..N-1, with a *readout*:
the logits the costs see at layer k. Two kinds exist, and the kind names the backend that
trains it (:mod:`turnpike.backends`):

- :class:`FlatSystem` (``backend = "flat"``): the controls live outside the system in one flat
  vector θ (ResNets (1) and (26), the neural ODE). The readout of layer k is the first
  ``width`` components of x_k (Remark 4 of the 2024 paper: C for classification, all n
  for tracking). It declares which gradient engines it supports in ``engines``.
- :class:`ModuleSystem` (``backend = "module"``): a ``torch.nn.Module`` that owns its
  parameters and buffers (the convolutional ResNet). Its readout of layer k is the
  intermediate output :math:`E_k(x_k)` of eq. (2) of the 2025 paper, computed by the
  module for all layers at once.

These are abstract base classes, not duck types: ``solve_ocp`` and ``OCP`` dispatch on
``isinstance`` and on what the class declares, never on ``hasattr`` probes.
"""
from __future__ import annotations

import abc
from typing import ClassVar

import numpy as np


class System(abc.ABC):
    """Common to every system: a horizon N, the backend that trains it, an input shape."""

    backend: ClassVar[str]
    depth: int                     # N, the number of layers (the OCP's horizon)

    @property
    @abc.abstractmethod
    def input_shape(self) -> tuple:
        """Shape of one sample's input x (without the batch axis)."""

    @abc.abstractmethod
    def check_readout(self, width: int, argument: str) -> None:
        """Refuse costs whose logits (``width`` components) this system cannot read out."""


class FlatSystem(System):
    """A system whose controls are one flat vector θ held by the flat backend.

    Subclasses declare ``engines``, the gradient engines of
    :data:`turnpike.backends.ENGINES` they support, in order of preference; the first
    is what ``engine="auto"`` takes (the flat backend may swap the plain adjoint sweep for
    its buffered form on large layers).
    """

    backend: ClassVar[str] = "flat"
    engines: ClassVar[tuple] = ()
    state_dim: int

    @property
    def input_shape(self) -> tuple:
        return (self.state_dim,)

    def check_readout(self, width: int, argument: str) -> None:
        if width > self.state_dim:
            raise ValueError(f"{argument}: expected a cost reading at most state_dim={self.state_dim} "
                             f"components, got one reading {width}")

    def readout(self, states, width: int):
        """Logits of every layer: the first ``width`` state components (Remark 4), shape (..., width)."""
        return states[..., :width]

    @property
    def solution_type(self):
        """The :class:`turnpike.Solution` subclass ``solve_ocp`` returns for this system."""
        from .._solution import Solution
        return Solution

    @property
    @abc.abstractmethod
    def parameter_count(self) -> int:
        """Length of θ."""

    @abc.abstractmethod
    def initial_controls(self, rng: np.random.Generator, scale: float) -> np.ndarray:
        """A random θ (flat, float64)."""

    @abc.abstractmethod
    def rollout(self, theta, x0):
        """All states x_0..x_N for the batch ``x0`` (B, n): shape (N+1, B, n)."""

    @abc.abstractmethod
    def truncate(self, theta, depth: int):
        """The first ``depth`` layers as a new (system, θ) pair."""

    @abc.abstractmethod
    def control_norms(self, theta) -> np.ndarray:
        """‖u_k‖ per layer."""


class ModuleSystem(System):
    """A system that is a ``torch.nn.Module`` owning its parameters (trained by the module backend).

    Beyond ``nn.Module``'s own API it provides the readouts of all layers at once and the
    parameter partition a trainer needs (own learning rates and weight decay per group).
    """

    backend: ClassVar[str] = "module"
    num_classes: int

    def check_readout(self, width: int, argument: str) -> None:
        if width != self.num_classes:
            raise ValueError(f"{argument}: expected a cost on {self.num_classes} logits (the network's "
                             f"classes), got one reading {width}")

    @abc.abstractmethod
    def exit_logits(self, inputs):
        """Readouts of every layer k = 0..N: the intermediate outputs E_k(x_k), shape (N+1, B, C).

        ``forward(inputs, all_exits=True)`` must return the same (the trainer calls the module
        itself, which is what DistributedDataParallel and ``torch.compile`` wrap), and
        ``forward(inputs)`` the output E_N(x_N) alone, (B, C)."""

    @abc.abstractmethod
    def branch_parameters(self):
        """Parameters of the residual branches w_F (weight decay of Theorem 1)."""

    @abc.abstractmethod
    def exit_parameters(self):
        """Parameters owned by the intermediate outputs only (none when they share the backbone's)."""

    def synchronise_batch_norm(self) -> None:
        """Normalise by the statistics of the batch over all ranks of a process group in training
        mode (``solve_ocp(..., sync_batchnorm=True)`` under DistributedDataParallel): every
        ``nn.BatchNorm2d`` becomes a :class:`turnpike.SyncedBatchNorm2d` holding the same tensors.
        A system with batch statistics outside BatchNorm2d modules extends this."""
        from .._distributed import convert_to_synced_batch_norm
        convert_to_synced_batch_norm(self)
