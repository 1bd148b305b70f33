r"""One torchdiffeq solve of a :class:`~turnpike.NeuralODE`: the vector field of its piecewise controls, the solver
options that keep every step inside one control interval, and the solve itself, with the running cost as an
augmented state (see ``_node.py`` for the model and the numerics)."""
from __future__ import annotations

import bisect

import numpy as np

from ._rk import refine

#: torchdiffeq methods: "fixed" steps on the control grid (refined ``substeps`` times),
#: "adaptive" chooses its steps to meet rtol/atol, stopping at every control switch.
ODE_METHODS = {
    "euler": "fixed", "midpoint": "fixed", "heun2": "fixed", "heun3": "fixed", "rk4": "fixed",
    "explicit_adams": "fixed", "implicit_adams": "fixed",
    "dopri5": "adaptive", "dopri8": "adaptive", "bosh3": "adaptive", "fehlberg2": "adaptive",
    "adaptive_heun": "adaptive",
}


def _torch():
    import torch
    return torch


def solve(system, theta, x0, times: list, *, running_cost=None, labels=None, running_weight=1.0) -> tuple:
    """(states at ``times`` (len(times), B, n), the running cost at ``times`` or None): ``system.integrate``."""
    import torchdiffeq

    torch = _torch()
    field_at = vector_field(system, system.unpack(theta))
    t = torch.tensor(times, dtype=x0.dtype)
    options = solver_options(system, system.interval_substeps(theta))
    if running_cost is not None:
        labels_t = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
        scale = float(running_weight) / x0.shape[0]

        def rhs(time, state):
            x = state[0]
            cost = running_cost.state_per_sample(system.readout(x, running_cost.logit_width), labels_t).sum()
            return field_at(time, x), scale * cost

        y0 = (x0, torch.zeros((), dtype=x0.dtype))
    else:
        rhs, y0 = field_at, x0
    settings = dict(rtol=system.rtol, atol=system.atol, method=system.method, options=options)
    if system.adjoint and torch.is_grad_enabled() and theta.requires_grad:
        result = torchdiffeq.odeint_adjoint(rhs, y0, t, adjoint_params=(theta,), **settings)
    else:
        result = torchdiffeq.odeint(rhs, y0, t, **settings)
    if running_cost is not None:
        return result[0], result[1]
    return result, None


def vector_field(system, blocks: dict):
    """F(t, x): the vector field with the controls of ``blocks`` (torch), u(t) piecewise constant or linear."""
    from ._activations import get_activation

    nodes = system.times.tolist()
    if system.hidden_dim is None:
        sigma = get_activation(system.activations)

        def apply(u, x):
            return sigma.value(x @ u["A"].T + u["b"])
    else:
        inner, outer = (get_activation(a) for a in system.activations)

        def apply(u, x):
            return outer.value(inner.value(x @ u["A1"].T + u["b1"]) @ u["A2"].T + u["b2"])

    # one unbind per solve instead of one indexing op per field and evaluation
    controls = [dict(zip(blocks, values)) for values in zip(*(b.unbind(0) for b in blocks.values()))]

    def field_at(t, x):
        k, s = locate(system, nodes, t.item())            # torchdiffeq passes t as a 0-d tensor
        if s is None:
            return apply(controls[k], x)
        left, right = controls[k], controls[k + 1]
        return apply({name: (1.0 - s) * left[name] + s * right[name] for name in left}, x)

    return field_at


def locate(system, nodes: list, t: float) -> tuple:
    """The interval k holding t, and the position s ∈ [0, 1] in it (None for piecewise constant controls)."""
    k = min(max(bisect.bisect_right(nodes, t) - 1, 0), system.depth - 1)
    if system.parametrisation == "piecewise_constant":
        return k, None
    return k, (t - nodes[k]) / (nodes[k + 1] - nodes[k])


def solver_options(system, substeps: list) -> dict:
    """torchdiffeq options: fixed-grid methods step on the control grid refined ``substeps`` times (perturbed, so
    each stage sees its own interval's control); adaptive ones stop at every control switch (``jump_t``)."""
    torch = _torch()
    options = dict(system.options)
    nodes = system.times.tolist()
    if ODE_METHODS[system.method] == "fixed":
        options["grid_constructor"] = _grid_constructor(refine(nodes, substeps))
        options["perturb"] = True
    else:
        if system.depth > 1:
            options["jump_t"] = torch.tensor(nodes[1:-1], dtype=torch.float64)
        options.setdefault("norm", _detached_norm)
    return options


def _detached_norm(state):
    """torchdiffeq's error norm (max over state parts of the RMS), outside the autograd graph.

    Back-propagating through an adaptive solve would otherwise also differentiate the
    step-size selection (dt depends on θ through the error estimate); with a detached norm
    the steps are constants and direct back-propagation gives the exact gradient of the
    discrete scheme, which agrees with the adjoint to the solver tolerance.
    """
    parts = state if isinstance(state, (tuple, list)) else (state,)
    return max(part.detach().abs().pow(2).mean().sqrt() for part in parts)


def _grid_constructor(grid: list):
    """torchdiffeq grid: the control grid between the requested end points, plus every requested time.

    torchdiffeq asks for a grid from t[0] to t[-1]; in the adjoint's backward pass the
    times run downwards, and the grid must too.
    """
    torch = _torch()

    def construct(func, y0, t):
        wanted = [float(v) for v in t]
        low, high = min(wanted[0], wanted[-1]), max(wanted[0], wanted[-1])
        points = sorted(set([p for p in grid if low < p < high] + wanted))
        if wanted[0] > wanted[-1]:
            points.reverse()
        return torch.tensor(points, dtype=t.dtype, device=t.device)

    return construct
