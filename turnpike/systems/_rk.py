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
from functools import partial

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


def _step(tableau: Tableau, field, x, step: float):
    """One explicit Runge–Kutta step of size ``step`` from x: x⁺ and the stages [(X_j, K_j, cache_j)]."""
    stages, increment = [], 0.0
    for coefficients, weight in zip(tableau.a, tableau.b):
        state = x
        for coefficient, (_, slope, _) in zip(coefficients, stages):
            if coefficient:
                state = state + (step * coefficient) * slope
        slope, cache = field(state)
        stages.append((state, slope, cache))
        if weight:
            increment = increment + weight * slope
    return x + step * increment, stages


def scheme_states(system, theta: np.ndarray, inputs: np.ndarray, times: list) -> np.ndarray:
    """The scheme's states at ``times`` (increasing, from 0), (len(times), B, n), on numpy arrays.

    Steps on the substep grid merged with ``times``, as the torchdiffeq fixed grid of
    :meth:`NeuralODE.integrate` does (every requested time a grid point, the grid ending at
    the last one), so both give the same states to round-off; this runs without torch's
    per-operation overhead (the dense μ[Θ_ε,T] evaluations of a run).
    """
    tableau, resnet = TABLEAUS[system.method], system.to_resnet()
    blocks = system.unpack(theta)
    nodes = system._nodes()
    grid = refine(nodes, system.interval_substeps(theta))
    points = sorted(set([p for p in grid if times[0] < p < times[-1]] + list(times)))
    wanted = set(times)
    states, x, interval = [inputs], inputs, 0
    for start, end in zip(points[:-1], points[1:]):
        while interval + 1 < system.depth and nodes[interval + 1] <= start:    # the controls of [start, end]
            interval += 1
        x, _ = _step(tableau, partial(resnet.field, blocks, interval), x, end - start)
        if end in wanted:
            states.append(x)
    return np.stack(states)


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
            x, stages = _step(tableau, partial(resnet.field, blocks, k), x, step)
            tape.append((k, step, [cache for _, _, cache in stages]))
            if running is not None:
                costed.extend(state for (state, _, _), weight in zip(stages, tableau.b) if weight)
                quadrature.extend(step * weight for weight in tableau.b if weight)
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

    # backward: the stages of each step in reverse; stage j of step i was the running cost's entry
    # (number of weighted stages before it) + (weighted stages among 0..j-1)
    cost_positions = np.cumsum([0] + [1 if weight else 0 for weight in tableau.b])
    weighted_per_step = int(cost_positions[-1])
    grads = {name: _array.zeros_like(b) for name, b in blocks.items()}
    for index in range(len(tape) - 1, -1, -1):
        k, step, caches = tape[index]
        slopes_adjoint = [step * weight * costate for weight in tableau.b]      # μ_j, direct part
        total = costate
        for j in range(len(caches) - 1, -1, -1):
            stage_adjoint = resnet.field_backward(blocks, grads, k, caches[j], slopes_adjoint[j])   # λ_{X_j}
            if running is not None and tableau.b[j]:
                stage_adjoint[:, :width] += cost_gradients[index * weighted_per_step + cost_positions[j]]
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


def refine(nodes: list, parts) -> list:
    """Each interval of ``nodes`` cut into ``parts`` equal pieces (one count, or one per interval);
    the nodes themselves kept exactly."""
    grid = []
    counts = parts if isinstance(parts, (list, tuple)) else [parts] * (len(nodes) - 1)
    for a, b, count in zip(nodes[:-1], nodes[1:], counts):
        grid.extend(a + (b - a) * j / count for j in range(count))
    grid.append(nodes[-1])
    return grid
