r"""Theorem 2 of the Demystifying-ResNet paper: the loss of an n-shortcut network at zero.

Loss (the paper's, App. A.2): :math:`L(w) = \frac1{2m}\sum_μ \|f_w(x^μ) - y^μ\|^2` for an
n-shortcut network :math:`f_w` (:class:`turnpike.ShortcutNetwork`) on data X (m, d), Y (m, d).
At w = 0 every unit is the identity, f_0(x) = x. With s = σ_pre(x), the residual r = x − y
and c = σ'_post(0)σ'_mid(0)^{n−1}:

- the first n − 1 derivatives vanish, and along a direction V the n-th is
  :math:`n!\,c\,\frac1m\sum_μ\sum_r r^{μ\top} V_{r,n}\cdots V_{r,1} s^μ`
  (:func:`leading_derivative`): for n ≥ 3 zero is a stationary point with a zero Hessian;
- n = 2: the Hessian is block diagonal over units, each block :math:`[[0, K^\top], [K, 0]]`
  with :math:`K_{(a,b),(c,e)} = δ_{bc} M_{ae}`, :math:`M = σ'_{mid}(0)σ'_{post}(0)
  (Σ^{Xσ_{pre}(X)} − Σ^{Yσ_{pre}(X)})` (:func:`theorem2_matrix`). Its eigenvalues are ±
  the singular values of M, each R·d times, so cond(H) = cond(M) at every depth;
- n = 1: a block-Toeplitz Hessian, diagonal blocks B and blocks A below the diagonal
  (A^⊤ above), entries in ``theory/shortcut-hessian.md``.

:func:`theorem2_hessian` assembles these in θ's layout, so it compares entry by entry with
the automatic-differentiation Hessian of :func:`turnpike.theory.hessian`. The note
``theory/shortcut-hessian.md`` derives every formula and the corrections to the paper.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .. import _checks
from ..systems._activations import get_activation
from ..systems._shortcut import ShortcutNetwork
from .._costs import L2Tracking
from .._ocp import OCP

# (σ'(0), σ''(0)) of the activations that are twice differentiable at 0; ReLU and leaky
# ReLU have no derivative there, so Theorem 2's value for them would be a convention
_DERIVATIVES_AT_ZERO = {"identity": (1.0, 0.0), "tanh": (1.0, 0.0)}


def _derivatives_at_zero(name: str, position: str) -> tuple:
    if name not in _DERIVATIVES_AT_ZERO:
        _checks.fail(f"activations ({position})", f"an activation differentiable at 0 "
                     f"({sorted(_DERIVATIVES_AT_ZERO)}) for Theorem 2's closed form", name)
    return _DERIVATIVES_AT_ZERO[name]


def _data(inputs, targets):
    inputs = _checks.finite_array("inputs", inputs, ndim=2, nonempty=True)
    targets = _checks.finite_array("targets", targets, ndim=2)
    if targets.shape != inputs.shape:
        _checks.fail("targets", f"shape {inputs.shape} like inputs (square layers: d_y = d_x)", targets)
    return inputs, targets


def _system_data(system, inputs, targets):
    inputs, targets = _data(inputs, targets)
    if inputs.shape[1] != system.state_dim:
        _checks.fail("inputs", f"shape (m, {system.state_dim}) for the system's state_dim", inputs)
    return inputs, targets


def _shortcut_system(system):
    if not isinstance(system, ShortcutNetwork) or not system.shortcut:
        _checks.fail("system", "a ShortcutNetwork with shortcut=True (Theorem 2 is about n-shortcut networks)",
                     system)
    return system


def regression_ocp(system, inputs, targets):
    r"""The paper's loss :math:`\frac1{2m}\sum_μ\|x_R^μ - y^μ\|^2` as an :class:`turnpike.OCP`.

    A terminal :class:`turnpike.L2Tracking` with one target per sample (labels 0..m−1 index
    the table ``targets``) and terminal weight 1/2; no stage cost, no weight decay.
    """
    inputs, targets = _data(inputs, targets)
    return OCP(system, inputs, np.arange(len(inputs)), terminal_cost=L2Tracking(targets), terminal_weight=0.5)


@dataclass(frozen=True)
class LeastSquaresSummary:
    r"""d rows standing in for m samples for any network *linear* in its input.

    For f(x) = Wx: :math:`\frac1m\|XW^\top - Y\|^2 = \frac1d\|X'W^\top - Y'\|^2 + \text{offset}`
    with X = QR (thin QR), X' = √(d/m) R, Y' = √(d/m) QᵀY, offset = ‖(I − QQᵀ)Y‖²/m. The loss,
    gradient and Hessian of a linear network on (X', Y') equal those on (X, Y) (minus
    offset/2 in the loss), at a cost independent of m.
    """

    inputs: np.ndarray      # (d, d)
    targets: np.ndarray     # (d, d)
    offset: float

    @property
    def optimal_loss(self) -> float:
        """min over W of 1/(2m) Σ‖Wx − y‖²: the least-squares residual (any depth reaches it)."""
        return 0.5 * self.offset


def least_squares_summary(inputs, targets) -> LeastSquaresSummary:
    inputs, targets = _data(inputs, targets)
    m, d = inputs.shape
    if m < d:
        _checks.fail("inputs", f"at least d = {d} samples", inputs)
    q, r = np.linalg.qr(inputs)                      # q (m, d), r (d, d)
    projected = q.T @ targets                        # (d, d)
    residual = targets - q @ projected
    scale = math.sqrt(d / m)
    return LeastSquaresSummary(scale * r, scale * projected, float(np.sum(residual * residual) / m))


def theorem2_matrix(inputs, targets, activations=("identity", "identity", "identity")) -> np.ndarray:
    r""":math:`M = σ'_{mid}(0)σ'_{post}(0)\,(Σ^{Xσ_{pre}(X)} − Σ^{Yσ_{pre}(X)})`, (d, d).

    :math:`Σ^{AB} = \frac1m\sum_μ a^μ b^{μ\top}`. The 2-shortcut Hessian at zero has the
    eigenvalues ± the singular values of M.
    """
    inputs, targets = _data(inputs, targets)
    activations = _checks.names("activations", activations, 3, "a triple (σ_pre, σ_mid, σ_post) of activation names")
    pre = get_activation(activations[0], "activations (pre)")
    slope = _derivatives_at_zero(activations[1], "mid")[0] * _derivatives_at_zero(activations[2], "post")[0]
    return slope * (inputs - targets).T @ pre.value(inputs) / len(inputs)


def theorem2_condition_number(inputs, targets, activations=("identity", "identity", "identity")) -> float:
    """cond of the 2-shortcut Hessian at zero, eq. (9): σ_max(M)/σ_min(M), the same at every depth."""
    singular = np.linalg.svd(theorem2_matrix(inputs, targets, activations), compute_uv=False)
    return float(singular[0] / singular[-1]) if singular[-1] > 0 else float("inf")


def theorem2_hessian(system, inputs, targets) -> np.ndarray:
    """The Hessian at zero of :func:`regression_ocp`'s loss in closed form (P, P), θ's layout."""
    system = _shortcut_system(system)
    inputs, targets = _system_data(system, inputs, targets)
    d, units, n = system.state_dim, system.units, system.shortcut_depth
    hessian = np.zeros((system.parameter_count,) * 2)
    size = d * d

    def block(layer, unit):       # θ's slice of W_{layer} (1-based) of ``unit``
        start = ((layer - 1) * units + unit) * size
        return slice(start, start + size)

    if n == 2:
        identity = np.eye(d)
        coupling = np.einsum("bc,ae->abce", identity, theorem2_matrix(inputs, targets, system.activations))
        coupling = coupling.reshape(size, size)                      # K: rows W2 (a,b), columns W1 (c,e)
        for unit in range(units):
            hessian[block(2, unit), block(1, unit)] = coupling
            hessian[block(1, unit), block(2, unit)] = coupling.T
    elif n == 1:
        same_unit, later_earlier = _one_shortcut_blocks(inputs, targets, system.activations)
        for later in range(units):
            hessian[block(1, later), block(1, later)] = same_unit
            for earlier in range(later):
                hessian[block(1, later), block(1, earlier)] = later_earlier
                hessian[block(1, earlier), block(1, later)] = later_earlier.T
    return hessian                 # n ≥ 3: zero (Lemma 3)


def _one_shortcut_blocks(inputs, targets, activations):
    r"""The blocks B (same unit) and A (later unit, earlier unit) of the 1-shortcut Hessian, (d², d²).

    With s = σ_pre(x), s' = σ'_pre(x), r = x − y, c = σ'_post(0), c₂ = σ''_post(0):
    :math:`B_{(i,j),(k,l)} = δ_{ik}\,\frac1m\sum(c^2 s_j s_l + c_2 r_i s_j s_l)`,
    :math:`A_{(i,j),(k,l)} = c^2\frac1m\sum(δ_{jk}\, r_i s'_j s_l + δ_{ik}\, s_j s_l)`.
    """
    pre = get_activation(activations[0], "activations (pre)")
    slope, curvature = _derivatives_at_zero(activations[2], "post")
    m, d = inputs.shape
    s = pre.value(inputs)                                                     # (m, d)
    s_prime = pre.derivative(inputs, s) if pre.derivative is not None else np.ones_like(s)
    r = inputs - targets
    second = s.T @ s / m                                                      # Σ^{ss}, (d, d)
    weighted = np.einsum("mi,mj,ml->ijl", r, s, s) / m                        # (1/m) Σ r_i s_j s_l
    chained = np.einsum("mi,mj,ml->ijl", r, s_prime, s) / m                   # (1/m) Σ r_i s'_j s_l
    identity = np.eye(d)
    same = (slope ** 2 * np.einsum("ik,jl->ijkl", identity, second)
            + curvature * np.einsum("ik,ijl->ijkl", identity, weighted))
    across = slope ** 2 * (np.einsum("jk,ijl->ijkl", identity, chained) + np.einsum("ik,jl->ijkl", identity, second))
    return same.reshape(d * d, d * d), across.reshape(d * d, d * d)


def leading_derivative(system, inputs, targets, direction) -> float:
    r"""The n-th derivative of the loss at zero along ``direction`` V (θ's layout), n = shortcut depth.

    :math:`\frac{d^n}{dt^n}L(tV)|_0 = n!\,c\,\frac1m\sum_μ\sum_r (x^μ-y^μ)^\top V_{r,n}\cdots V_{r,1}\,σ_{pre}(x^μ)`,
    c = σ'_post(0)σ'_mid(0)^{n−1}: the first derivative that does not vanish (Theorem 2.1).
    """
    system = _shortcut_system(system)
    inputs, targets = _system_data(system, inputs, targets)
    n = system.shortcut_depth
    slope = _derivatives_at_zero(system.activations[2], "post")[0]
    if n > 1:
        slope *= _derivatives_at_zero(system.activations[1], "mid")[0] ** (n - 1)
    direction = _checks.finite_array("direction", direction, ndim=1)
    if direction.shape != (system.parameter_count,):
        _checks.fail("direction", f"a vector of the system's {system.parameter_count} controls", direction)
    blocks = system.unpack(direction)
    s = get_activation(system.activations[0]).value(inputs)                   # (m, d)
    total = 0.0
    for unit in range(system.units):
        path = s
        for layer in range(1, n + 1):
            path = path @ blocks[f"W{layer}"][unit].T                         # V_l ⋯ V_1 s, (m, d)
        total += float(np.sum((inputs - targets) * path)) / len(inputs)
    return math.factorial(n) * slope * total
