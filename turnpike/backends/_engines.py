r"""Objective and gradient of an OCP: an analytic adjoint sweep, or torch autograd.

The adjoint engine is the optimal-control way to differentiate J: a forward sweep
stores each layer's activations, then the costate (adjoint) recursion

.. math::
    λ_N = \frac{w_f}{D} ∇ℓ_f(x_N), \qquad
    λ_k = λ_{k+1}\,\partial_x f_k(x_k, u_k) + \frac{w_s}{D} ∇ℓ_x(x_k), \qquad
    ∇_{u_k} J = λ_{k+1}\,\partial_u f_k(x_k, u_k) + 2 w_s r\, u_k

runs backwards over flat arrays. It avoids autograd's per-operation bookkeeping,
which dominates for small networks on a CPU, and evaluates the stage cost of all
layers in one stacked call. For large layers and GPUs, :mod:`turnpike.backends._sweep` runs the
same recursion on preallocated torch buffers. The autograd engine differentiates the
same objective with torch and is the independent reference both are tested against.
"""
from __future__ import annotations

import numpy as np

from .. import _array
from .._objective import objective_tensor, state_cost_terms


def adjoint_objective(ocp, theta: np.ndarray, inputs: np.ndarray, labels: np.ndarray):
    """J(theta) on the batch and its gradient by the costate sweep (numpy, float64)."""
    system = ocp.system
    blocks = system.unpack(theta)
    # every step writes its state straight into the stack the costs read (no copy of N+1 states)
    states = np.empty((system.depth + 1, *inputs.shape), dtype=np.result_type(inputs, theta))   # (N+1, B, n)
    states[0] = inputs
    caches = [system.step(blocks, k, states[k], out=states[k + 1])[1] for k in range(system.depth)]
    value, state_gradient = state_cost_terms(ocp, states, labels, with_gradient=True)
    gradient = _array.zeros_like(theta)
    if state_gradient is not None:
        grads = system.unpack(gradient)
        width = state_gradient.shape[-1]
        costate = _array.zeros_like(inputs)                           # λ_N, (B, n)
        costate[:, :width] = state_gradient[system.depth]
        for k in range(system.depth - 1, -1, -1):
            costate = system.step_backward(blocks, grads, k, caches[k], costate)   # a new array
            costate[:, :width] += state_gradient[k]
    r = ocp.input_penalty
    if r > 0:
        value = value + r * float(theta @ theta)
        gradient += (2.0 * r) * theta
    return float(value), gradient


def autograd_objective(ocp, theta: np.ndarray, inputs: np.ndarray, labels: np.ndarray, *, device="cpu"):
    """The same J and gradient through torch autograd (reference engine, any device)."""
    import torch

    theta_t = torch.tensor(theta, dtype=torch.float64, device=device, requires_grad=True)
    value = objective_tensor(ocp, theta_t, inputs, labels)
    value.backward()
    return float(value.detach()), theta_t.grad.cpu().numpy()


def system_objective(ocp, theta: np.ndarray, inputs: np.ndarray, labels: np.ndarray):
    """J and gradient evaluated by the system itself: ``ocp.system.objective(ocp, θ, inputs, labels)``.

    For systems whose objective is not a sum over layers, e.g. :class:`turnpike.NeuralODE`,
    whose running cost is an integral computed inside one ODE solve (OCP (20)).
    """
    return ocp.system.objective(ocp, theta, inputs, labels)


def scheme_objective(ocp, theta: np.ndarray, inputs: np.ndarray, labels: np.ndarray):
    """J and gradient of a fixed-step Runge–Kutta discretisation by its exact adjoint (NeuralODE)."""
    return ocp.system.scheme_objective(ocp, theta, inputs, labels)

