r"""The training problem as a discrete-time optimal control problem.

.. math::
    \min_{u_0..u_{N-1}}\; J(u) = w_s \sum_{k=0}^{N-1} \ell(x_k, u_k) + w_f\, \ell_f(x_N)
    \quad\text{s.t.}\quad x_{k+1} = f_k(x_k, u_k),\; x_0 = \text{inputs},

where :math:`\ell(x_k, u_k) = \frac1D\sum_i \ell_x(x_k^i, y^i) + r\|u_k\|^2` is the stage
cost (state terms averaged over the D samples, input terms on the layer's controls),
:math:`\ell_f` the terminal cost, :math:`w_s` = ``stage_weight`` and :math:`w_f` =
``terminal_weight``. The 2024 paper's OCP (5) is ``stage_weight=1, terminal_weight=γ``;
the 2025 paper's stage-cost objective (3), :math:`\sum_k γ L(\hat y_k) + L(\hat y)`, is
``stage_weight=γ, terminal_weight=1``. ``stage_weight`` multiplies the whole stage cost,
input penalty included; to weight only the loss, as the 2025 paper does (its weight decay
is not scaled by γ), fold γ into the loss term instead:
``stage_cost=γ * CrossEntropy(num_classes=C) + InputPenalty(r)`` with ``stage_weight=1``.
The horizon N is the depth of the system.

Costs act on the system's *readout*, the logits of layer k (:meth:`OCP.readout`): the first
C state components of the MLP systems (Remark 4), the intermediate output E_k of the
convolutional ResNet (eq. (2) of the 2025 paper). For a :class:`~turnpike.systems.ModuleSystem`
the inputs are images (D, channels, height, width), uint8 or float, numpy or torch.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import _checks
from ._costs import Cost, SoftCrossEntropy
from .systems._protocol import FlatSystem, System


@dataclass(frozen=True, eq=False)
class OCP:
    system: object
    inputs: np.ndarray            # (D, n) initial states x_0 (flat systems), (D, *input_shape) images, or a Dataset
    labels: np.ndarray            # (D,) class indices (or any integer tag for tracking costs); None for a Dataset
    stage_cost: Cost | None = None
    terminal_cost: Cost | None = None
    stage_weight: float = 1.0
    terminal_weight: float = 1.0

    def __post_init__(self):
        system = self.system
        if not isinstance(system, System):
            _checks.fail("system", "a turnpike system (SingleLayerResNet, TwoLayerResNet, NeuralODE, "
                         "ResidualNetwork, ...)", system)
        inputs = self._checked_inputs(system)
        object.__setattr__(self, "inputs", inputs)
        if self.stage_cost is None and self.terminal_cost is None:
            raise ValueError("stage_cost, terminal_cost: expected at least one cost, got neither")
        for name in ("stage_cost", "terminal_cost"):
            cost = getattr(self, name)
            if cost is not None and not isinstance(cost, Cost):
                _checks.fail(name, "a turnpike cost (e.g. SoftCrossEntropy(...) + InputPenalty(r))", cost)
            if cost is not None and isinstance(system, FlatSystem):
                cost.check_state_dim(system.state_dim, name)
        width = self.output_width      # one readout width for all state terms (refuses a mix)
        if width is not None:
            system.check_readout(width, "stage_cost/terminal_cost")
        if self.terminal_cost is not None and self.terminal_cost.input_terms:
            raise ValueError(f"terminal_cost: expected state terms only (there is no control u_N), "
                             f"got {self.terminal_cost!r}")
        object.__setattr__(self, "stage_weight", _checks.real("stage_weight", self.stage_weight, minimum=0.0))
        object.__setattr__(self, "terminal_weight",
                           _checks.real("terminal_weight", self.terminal_weight, minimum=0.0))
        if self.streamed:
            if self.labels is not None:
                _checks.fail("labels", "None: a Dataset's items are (image, label) pairs", self.labels)
            return
        object.__setattr__(self, "labels", _checks.labels("labels", self.labels, count=inputs.shape[0],
                                                          num_classes=self.num_classes))
        for cost in (self.stage_cost, self.terminal_cost):
            for _, term in (cost.terms if cost is not None else ()):
                if term.label_count is not None:   # e.g. per-class tracking targets are indexed by label
                    _checks.labels("labels", self.labels, count=inputs.shape[0], num_classes=term.label_count)

    def _checked_inputs(self, system):
        if isinstance(system, FlatSystem):
            inputs = _checks.finite_array("inputs", self.inputs, ndim=2)
            if inputs.shape[1] != system.state_dim:
                _checks.fail("inputs", f"shape (D, {system.state_dim}) to match the system's state_dim", inputs)
        elif _checks.is_dataset(self.inputs):
            return _checks.image_dataset("inputs", self.inputs, system.input_shape)
        else:
            inputs = _checks.image_batch("inputs", self.inputs, system.input_shape)
        if inputs.shape[0] < 1:
            _checks.fail("inputs", "at least one sample", inputs)
        return inputs

    @property
    def streamed(self) -> bool:
        """Whether the inputs are a ``torch.utils.data.Dataset`` read batch by batch."""
        return _checks.is_dataset(self.inputs)

    @property
    def sample_count(self) -> int:
        """D, the number of training samples."""
        return len(self.inputs) if self.streamed else int(self.inputs.shape[0])

    @property
    def depth(self) -> int:
        return self.system.depth

    @property
    def num_classes(self) -> int | None:
        """C of the classification loss in the costs (None for pure tracking problems)."""
        for cost in (self.terminal_cost, self.stage_cost):
            for _, term in (cost.terms if cost is not None else ()):
                if term.num_classes is not None:
                    return term.num_classes
        return None

    @property
    def output_width(self) -> int | None:
        """How many logits the state costs read (C for classification, n for tracking; None: no state cost)."""
        widths = [cost.logit_width for cost in (self.stage_cost, self.terminal_cost) if cost is not None]
        return max((w for w in widths if w is not None), default=None)

    def readout(self, states):
        """The logits the costs see: the system's readout of ``states`` (..., n) -> (..., width).

        For flat systems the first ``output_width`` state components (Remark 4).
        """
        return self.system.readout(states, self.output_width)

    @property
    def input_penalty(self) -> float:
        """The r of w_s Σ_k r‖u_k‖² in J (stage weight included)."""
        return self.stage_weight * self.stage_cost.input_coefficient() if self.stage_cost else 0.0

    @property
    def stage_state_cost(self) -> Cost | None:
        """The stage cost without its input terms (None if it has no state terms)."""
        if self.stage_cost is None or not self.stage_cost.state_terms:
            return None
        return Cost(self.stage_cost.state_terms)

    def soft_cross_entropy(self):
        """The SoftCrossEntropy term that defines the turnpike set X*_y, or None."""
        for cost in (self.stage_cost, self.terminal_cost):
            term = cost.find(SoftCrossEntropy) if cost is not None else None
            if term is not None:
                return term
        return None
