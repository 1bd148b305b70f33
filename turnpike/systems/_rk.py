r"""Discretise, then optimise: a fixed-step Runge–Kutta scheme of the neural ODE and its exact adjoint.

With controls piecewise constant on the K intervals, one step of an explicit Runge–Kutta
scheme with step :math:`h_s = h/S_k` (S_k substeps in interval k: ``substeps``, raised by ``step_bound``
where the controls are large, see :meth:`NeuralODE.interval_substeps`) is a discrete-time system,

.. math::
    X_j = x + h_s\sum_{l<j} a_{jl} K_l,\quad K_j = F(X_j, u_k),\qquad
    x^+ = x + h_s\sum_j b_j K_j,\qquad c^+ = c + h_s\sum_j b_j\,\bar\ell(X_j),

where the running cost :math:`\int\ell\,dt` is the extra state c integrated by the same
quadrature (:math:`\bar\ell = \frac{w_s}{B}\sum_i\ell_x(x^i)`), as torchdiffeq does for the
augmented state. Its adjoint is exact for the discrete J (no continuous-adjoint error): with
:math:`λ = ∂J/∂x^+` and :math:`μ_j = ∂J/∂K_j`,

.. math::
    μ_j = h_s b_j λ + h_s\sum_{i>j} a_{ij}\,λ_{X_i},\qquad
    λ_{X_j} = μ_j\,\partial_xF(X_j) + h_s b_j\,∇\bar\ell(X_j),\qquad
    ∂J/∂x = λ + \sum_j λ_{X_j},\qquad ∇_{u_k}J \mathrel{+}= μ_j\,\partial_uF(X_j),

computed stage by stage backwards over flat numpy arrays, like the ResNet's costate sweep.
The tableaus are torchdiffeq's, so J equals torchdiffeq's fixed-grid J to round-off and
back-propagation through torchdiffeq is the independent check. Euler with one substep is
the ResNet (1)/(26) with ``step_size = h``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import _array


@dataclass(frozen=True)
class Tableau:
    """An explicit Runge–Kutta scheme: stage coefficients ``a`` (lower triangular rows), weights ``b``."""

    a: tuple     # a[j] = (a_j0, ..., a_j,j-1)
    b: tuple


#: torchdiffeq's fixed-grid schemes: "rk4" is its 3/8 rule (rk4_alt_step_func)
TABLEAUS = {
    "euler": Tableau(a=((),), b=(1.0,)),
    "midpoint": Tableau(a=((), (0.5,)), b=(0.0, 1.0)),
    "rk4": Tableau(a=((), (1 / 3,), (-1 / 3, 1.0), (1.0, -1.0, 1.0)), b=(0.125, 0.375, 0.375, 0.125)),
}


def scheme_objective(system, ocp, theta: np.ndarray, inputs: np.ndarray, labels: np.ndarray):
    """(J, ∇J) of the OCP (20) discretised by ``system.method``, ``system.interval_substeps(θ)`` steps per interval."""
    # the field F and its products are the ResNet's (Euler with one substep is that ResNet)
    tableau, resnet = TABLEAUS[system.method], system.to_resnet()
    blocks = system.unpack(theta)
    substeps, batch = system.interval_substeps(theta), inputs.shape[0]
    running = ocp.stage_state_cost if ocp.stage_weight > 0 else None
    width = ocp.output_width

    # forward: every stage's field cache; the stage states the quadrature weighs are kept for one
    # stacked running-cost call afterwards (one call instead of one per stage: 40% of the time)
    x, value, tape, costed, quadrature = inputs, 0.0, [], [], []
    for k in range(system.depth):
        step = system.step_size / substeps[k]
        for _ in range(substeps[k]):
            stages, increment = [], 0.0
            for coefficients, weight in zip(tableau.a, tableau.b):
                state = x
                for coefficient, (_, _, slope) in zip(coefficients, stages):
                    if coefficient:
                        state = state + (step * coefficient) * slope
                slope, cache = resnet.field(blocks, k, state)
                cost_index = None
                if weight and running is not None:
                    cost_index = len(costed)
                    costed.append(state)
                    quadrature.append(step * weight)
                stages.append((cache, cost_index, slope))
                increment = increment + weight * slope if weight else increment
            tape.append((k, step, stages))
            x = x + step * increment
    if costed:
        values, cost_gradients = running.state_per_sample_and_gradient(system.readout(np.stack(costed), width),
                                                                       labels)                 # (S, B), (S, B, w)
        scale = np.asarray(quadrature)[:, None] * (ocp.stage_weight / batch)                   # (S, 1)
        value += float((values * scale).sum())
        cost_gradients = cost_gradients * scale[:, :, None]
    if ocp.terminal_cost is not None and ocp.terminal_weight > 0:
        values, gradient = ocp.terminal_cost.state_per_sample_and_gradient(system.readout(x, width), labels)
        value += ocp.terminal_weight * values.sum() / batch
        costate = _array.zeros_like(x)
        costate[:, :width] = gradient * (ocp.terminal_weight / batch)
    else:
        costate = _array.zeros_like(x)

    # backward: the stages of each step in reverse
    grads = {name: _array.zeros_like(b) for name, b in blocks.items()}
    for k, step, stages in reversed(tape):
        slopes_adjoint = [step * weight * costate for weight in tableau.b]      # μ_j, direct part
        total = costate
        for j in range(len(stages) - 1, -1, -1):
            cache, cost_index, _ = stages[j]
            stage_adjoint = resnet.field_backward(blocks, grads, k, cache, slopes_adjoint[j])   # λ_{X_j}
            if cost_index is not None:
                stage_adjoint[:, :width] += cost_gradients[cost_index]
            for l, coefficient in enumerate(tableau.a[j]):
                if coefficient:
                    slopes_adjoint[l] = slopes_adjoint[l] + (step * coefficient) * stage_adjoint
            total = total + stage_adjoint
        costate = total
    gradient = system.pack(grads)
    r = ocp.input_penalty
    if r > 0:                         # r ∫‖u‖² dt = r h Σ_k ‖u_k‖² (piecewise constant)
        value += r * system.step_size * float(theta @ theta)
        gradient += (2.0 * r * system.step_size) * theta
    return float(value), gradient
