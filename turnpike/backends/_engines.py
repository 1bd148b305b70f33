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

from .. import _array, _checks
from ..systems._protocol import DifferentiableObjective, FlatSystem, Trajectories


def _state_cost_terms(ocp, states, labels, *, with_gradient: bool):
    """Objective contributions of the state costs, and (optionally) their gradients.

    ``states`` (N+1, B, n). Returns J_state and the per-layer gradient (N+1, B, w)
    with the stage and terminal weights and the 1/B average applied (None if not
    asked for or if no state cost is active). The costs read the system's readout,
    the first w = ``ocp.output_width`` components (C for classification losses,
    Remark 4), so only those are differentiated: for MNIST, 10 of 784.
    """
    depth, batch = states.shape[0] - 1, states.shape[1]
    states = ocp.readout(states)
    value, gradient = 0.0, None
    weighted = []          # (weight, cost, layer slice) of every active state cost
    stage = ocp.stage_state_cost
    if stage is not None and ocp.stage_weight > 0:
        weighted.append((ocp.stage_weight, stage, slice(0, depth)))
    if ocp.terminal_cost is not None and ocp.terminal_weight > 0:
        weighted.append((ocp.terminal_weight, ocp.terminal_cost, slice(depth, depth + 1)))
    for weight, cost, layers in weighted:
        if with_gradient:
            per_sample, per_sample_gradient = cost.state_per_sample_and_gradient(states[layers], labels)
            if gradient is None:
                gradient = _array.zeros_like(states)
            gradient[layers] += per_sample_gradient * (weight / batch)
        else:
            per_sample = cost.state_per_sample(states[layers], labels)
        value = value + weight * per_sample.sum() / batch
    return value, gradient


def adjoint_objective(ocp, theta: np.ndarray, inputs: np.ndarray, labels: np.ndarray):
    """J(theta) on the batch and its gradient by the costate sweep (numpy, float64)."""
    system = ocp.system
    blocks = system.unpack(theta)
    # every step writes its state straight into the stack the costs read (no copy of N+1 states)
    states = np.empty((system.depth + 1, *inputs.shape), dtype=np.result_type(inputs, theta))   # (N+1, B, n)
    states[0] = inputs
    caches = [system.step(blocks, k, states[k], out=states[k + 1])[1] for k in range(system.depth)]
    value, state_gradient = _state_cost_terms(ocp, states, labels, with_gradient=True)
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


def objective_tensor(ocp, theta, inputs=None, labels=None):
    """J(θ) as a differentiable torch scalar: the public objective of a flat system.

    ``theta`` is a torch tensor (any dtype and device; the states take its dtype);
    ``inputs`` and ``labels`` default to the OCP's training data. Autograd, the Hessian
    analysis (:mod:`turnpike.theory`) and ``torch.func`` transforms differentiate this.
    A :class:`~turnpike.systems.DifferentiableObjective` computes it itself (NeuralODE: in one
    ODE solve); for :class:`~turnpike.systems.Trajectories` it is the sum over the layers' states.
    """
    import torch

    system = ocp.system
    if not isinstance(system, FlatSystem):
        _checks.fail("ocp.system", "a flat system (module systems own their parameters: use "
                     "torch.func.functional_call on the module)", system)
    if not torch.is_tensor(theta):
        _checks.fail("theta", "a torch tensor (torch.as_tensor(theta) for a numpy vector)", theta)
    inputs = torch.as_tensor(ocp.inputs if inputs is None else inputs, dtype=theta.dtype, device=theta.device)
    labels = ocp.labels if labels is None else labels
    if isinstance(system, DifferentiableObjective):
        return system.objective_tensor(ocp, theta, inputs, labels)
    if not isinstance(system, Trajectories):
        _checks.fail("ocp.system", "a flat system with a rollout (Trajectories) or its own objective_tensor "
                     "(DifferentiableObjective)", system)
    states = system.rollout(theta, inputs)
    value, _ = _state_cost_terms(ocp, states, labels, with_gradient=False)
    r = ocp.input_penalty
    if r > 0:
        value = value + r * (theta * theta).sum()
    if not torch.is_tensor(value):   # no active term: J = 0, still a function of θ
        value = (theta * 0.0).sum()
    return value


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

