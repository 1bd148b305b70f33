r"""The objective J of a flat system's OCP, as the engines and the analyses share it.

.. math::
    J(θ) = \frac{w_s}{D}\sum_{k<N}\sum_i ℓ(x_k^i, y^i) + \frac{w_f}{D}\sum_i ℓ_f(x_N^i, y^i) + r\|θ\|^2

on the readout of the states x_k of a batch of D samples (eq. 5 of the 2024 paper).
:func:`state_cost_terms` is its state part (with the gradient the costate sweeps start from);
:func:`objective_tensor` the whole J as a differentiable torch scalar, which autograd, the
Hessian analysis (:mod:`turnpike.theory`) and ``torch.func`` differentiate. It sits below the
backends and the theory, which both use it.
"""
from __future__ import annotations

from . import _array, _checks
from ._ocp import OCP
from .systems._protocol import DifferentiableObjective, FlatSystem, Trajectories


def state_cost_terms(ocp, states, labels, *, with_gradient: bool):
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


def objective_tensor(ocp, theta, inputs=None, labels=None):
    """J(θ) as a differentiable torch scalar: the public objective of a flat system.

    ``theta`` is a torch tensor (any dtype and device; the states take its dtype);
    ``inputs`` and ``labels`` default to the OCP's training data. Autograd, the Hessian
    analysis (:mod:`turnpike.theory`) and ``torch.func`` transforms differentiate this.
    A :class:`~turnpike.systems.DifferentiableObjective` computes it itself (NeuralODE: in one
    ODE solve); for :class:`~turnpike.systems.Trajectories` it is the sum over the layers' states.
    """
    import torch

    _checks.instance("ocp", ocp, OCP, "a turnpike.OCP")
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
    value, _ = state_cost_terms(ocp, states, labels, with_gradient=False)
    r = ocp.input_penalty
    if r > 0:
        value = value + r * (theta * theta).sum()
    if not torch.is_tensor(value):   # no active term: J = 0, still a function of θ
        value = (theta * 0.0).sum()
    return value
