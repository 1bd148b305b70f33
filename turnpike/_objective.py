r"""The objective J of an OCP, as the engines, the backends and the analyses share it.

Flat systems (controls θ, states x_k, eq. 5 of the 2024 paper):

.. math::
    J(θ) = \frac{w_s}{D}\sum_{k<N}\sum_i ℓ(x_k^i, y^i) + \frac{w_f}{D}\sum_i ℓ_f(x_N^i, y^i) + r\|θ\|^2

on the readout of the states x_k of a batch of D samples. :func:`state_cost_terms` is its
state part (with the gradient the costate sweeps start from).

Module systems (a ``torch.nn.Module`` with weights w and exits E_k, objective (3) of the 2025 paper):

.. math::
    J(w) = w_s \sum_{k=0}^{N-1} \frac1B\sum_i ℓ(E_k(x_k^i), y^i) + w_f \frac1B\sum_i ℓ_f(E_N(x_N^i), y^i)
        + r\|w\|^2,

the stage sum only when the stage cost has state terms and w_s > 0, and r = ``ocp.input_penalty``
(w_s included) on every trainable parameter. :func:`module_loss_terms` (the losses, from the
logits) and :func:`weight_penalty` (r‖w‖²) are the one definition of it that the module backend
trains and the Hessian analysis differentiates.

:func:`objective_tensor` is the whole J as a differentiable torch scalar, for either kind, which
autograd, the Hessian analysis (:mod:`turnpike.theory`) and ``torch.func`` differentiate. It sits
below the backends and the theory, which both use it.
"""
from __future__ import annotations

import contextlib

from . import _array, _checks
from ._ocp import OCP
from .systems._protocol import DifferentiableObjective, FlatSystem, ModuleSystem, Trajectories


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


def objective_tensor(ocp, theta, inputs=None, labels=None, *, mode=None):
    """J(θ) as a differentiable torch scalar: the public objective of every system.

    ``theta`` is a torch tensor (any floating dtype and device; the computation takes its dtype);
    ``inputs`` and ``labels`` default to the OCP's training data. Autograd, the Hessian analysis
    (:mod:`turnpike.theory`) and ``torch.func`` transforms differentiate this.

    Flat systems: θ is the system's flat control vector. A
    :class:`~turnpike.systems.DifferentiableObjective` computes J itself (NeuralODE: in one ODE
    solve); for :class:`~turnpike.systems.Trajectories` it is the sum over the layers' states.
    ``mode`` must be None (no batch statistics).

    Module systems (:class:`~turnpike.systems.ModuleSystem`): θ is the flat vector of the module's
    trainable parameters in ``module.parameters()`` order (:func:`module_parameters_vector`), and J
    is what the module backend trains on the batch (:func:`module_loss_terms` + :func:`weight_penalty`),
    evaluated by ``torch.func.functional_call`` with the parameters unflattened from θ; the module's
    own tensors are not used and never changed. ``mode`` is required: ``"train"`` normalises every
    BatchNorm by the batch's statistics (the training objective), ``"eval"`` by the running
    statistics; either way the running statistics are updated on copies only. Frozen parameters
    and floating buffers are cast to θ's dtype and device. ``inputs`` must be floating-point images
    prepared as in training (the backend's ``normalise``/scaling is not part of the OCP), so uint8
    images are refused: pass ``inputs=``, or build the OCP on prepared images.
    """
    import torch

    _checks.instance("ocp", ocp, OCP, "a turnpike.OCP")
    system = ocp.system
    if not torch.is_tensor(theta):
        _checks.fail("theta", "a torch tensor (torch.as_tensor(theta) for a numpy vector)", theta)
    if isinstance(system, ModuleSystem):
        objective = module_objective_function(ocp, inputs, labels, mode=mode, dtype=theta.dtype,
                                              device=theta.device)
        return objective(checked_module_theta(system, theta))
    if not isinstance(system, FlatSystem):
        _checks.fail("ocp.system", "a flat system or a module system", system)
    if mode is not None:
        _checks.fail("mode", "None for a flat system (it has no batch statistics)", mode)
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


# --- module systems ---------------------------------------------------------------------------------

#: BatchNorm modes of a module system's objective: "train" (batch statistics), "eval" (running statistics)
MODULE_MODES = ("train", "eval")


def stage_term_active(ocp) -> bool:
    """Whether J has the stage sum over the exits: a stage cost with state terms and w_s > 0."""
    return ocp.stage_state_cost is not None and ocp.stage_weight > 0


def module_loss_terms(ocp, logits, labels):
    r"""J's loss part from a module system's readouts, and the output logits: (value, (B, C) logits).

    ``logits``: the exits E_0..E_N, (N+1, B, C), when :func:`stage_term_active`, else the output
    E_N alone, (B, C) (standard training computes no other exit). With ``labels`` (B,):

    .. math::
        w_s \sum_{k=0}^{N-1} \frac1B\sum_i ℓ(E_k^i, y^i) + w_f \frac1B\sum_i ℓ_f(E_N^i, y^i),

    ℓ the stage cost's state terms, ℓ_f the terminal cost. The module backend trains this (plus
    :func:`weight_penalty`) and :func:`objective_tensor` returns it for the Hessian analysis.
    """
    value = logits.new_zeros(())
    final = logits[-1] if logits.ndim == 3 else logits
    if logits.ndim == 3 and stage_term_active(ocp):
        stage = ocp.stage_state_cost.state_per_sample(logits[:-1], labels)     # (N, B)
        value = value + ocp.stage_weight * stage.mean(dim=1).sum()
    if ocp.terminal_cost is not None and ocp.terminal_weight > 0:
        value = value + ocp.terminal_weight * ocp.terminal_cost.state_per_sample(final, labels).mean()
    return value, final


def weight_penalty(ocp, parameters, *, fused: bool = False):
    r"""J's input penalty :math:`r\|w\|^2 = r\sum_p \|p\|^2` over the tensors ``parameters``.

    r = ``ocp.input_penalty`` (the stage weight w_s included), on every trainable parameter of a
    module system (the backend's weight decay 2r). ``fused``: one ``torch._foreach_norm`` over all
    tensors, then squared (the backend's training step: one kernel for a whole network); its
    second derivative is NaN at a tensor that is zero (a zero-initialised branch), so the default
    sums :math:`p \cdot p`, smooth everywhere (Hessians). The two agree to round-off.
    """
    import torch

    parameters = list(parameters)
    if fused:
        squares = torch.stack(torch._foreach_norm(parameters)).pow(2).sum()
    else:
        squares = sum((p * p).sum() for p in parameters)
    return ocp.input_penalty * squares


def trainable_parameters(system) -> list:
    """``(name, parameter)`` of a module system's trainable parameters, in ``parameters()`` order: θ's layout."""
    return [(name, p) for name, p in system.named_parameters() if p.requires_grad]


def module_parameters_vector(system, dtype=None):
    """θ of a module system: its trainable parameters flattened in ``parameters()`` order, a detached copy.

    ``dtype`` defaults to torch.float64 (the Hessian analysis's); the result is on the module's device.
    """
    import torch

    _checks.instance("system", system, ModuleSystem, "a module system (e.g. turnpike.preact_resnet(...))")
    dtype = torch.float64 if dtype is None else dtype
    tensors = [p.detach().reshape(-1).to(dtype) for _, p in trainable_parameters(system)]
    if not tensors:
        _checks.fail("system", "a module with trainable parameters", system)
    return torch.cat(tensors)


def checked_module_theta(system, theta):
    """``theta`` if it is a floating torch vector of the module's trainable-parameter count."""
    import torch

    count = sum(p.numel() for _, p in trainable_parameters(system))
    if not torch.is_tensor(theta) or not theta.is_floating_point() or theta.ndim != 1 or theta.numel() != count:
        _checks.fail("theta", f"a flat floating-point vector of the module's {count} trainable parameters "
                              f"(turnpike.theory.module_parameters_vector(system))", theta)
    return theta


def checked_mode(mode) -> str:
    if mode not in MODULE_MODES:
        _checks.fail("mode", '"train" or "eval" for a module system (BatchNorm by the batch\'s statistics or by '
                             'the running ones; the running statistics are never updated)', mode)
    return mode


def module_batch(ocp, inputs, labels, *, dtype, device):
    """(images, labels) of a module system's objective as torch tensors: ``inputs`` (default ``ocp.inputs``)
    checked and cast to ``dtype`` on ``device``; uint8 images refused (the OCP holds no normalisation)."""
    import torch

    system = ocp.system
    name = "ocp.inputs" if inputs is None else "inputs"
    if inputs is None and ocp.streamed:
        _checks.fail("inputs", "a batch of prepared images (the OCP's inputs are a Dataset, read batch by batch: "
                               "pass inputs= and labels=, e.g. one batch stacked from it)", None)
    images = _checks.image_batch(name, ocp.inputs if inputs is None else inputs, system.input_shape)
    if not images.is_floating_point():
        _checks.fail(name, "floating-point images prepared as in training (the OCP holds no normalisation: pass "
                           "inputs=, e.g. images.double() / 255 or turnpike.data.normalise(images, mean, std), "
                           "or build the OCP on prepared images)", images)
    label_name = "ocp.labels" if labels is None else "labels"
    labels = _checks.labels(label_name, ocp.labels if labels is None else labels, count=images.shape[0],
                            num_classes=ocp.num_classes)
    return (images.to(device=device, dtype=dtype),
            torch.as_tensor(labels, dtype=torch.long, device=device))


@contextlib.contextmanager
def batch_norm_mode(module, mode: str):
    """Every submodule in training (``"train"``) or evaluation mode inside the block; each one's own flag after."""
    flags = [(m, m.training) for m in module.modules()]
    module.train(mode == "train")
    try:
        yield module
    finally:
        for m, flag in flags:
            m.training = flag


def module_objective_function(ocp, inputs=None, labels=None, *, mode, dtype, device):
    """θ -> J(θ) of a module system on one batch (see :func:`objective_tensor`), arguments checked once.

    Every call evaluates ``torch.func.functional_call`` on fresh copies of the buffers, so BatchNorm in
    ``"train"`` mode updates copies only; ``torch.func`` transforms of the returned function work (the
    copies are made inside it).
    """
    import torch

    _checks.instance("ocp", ocp, OCP, "a turnpike.OCP")
    module = ocp.system
    _checks.instance("ocp.system", module, ModuleSystem, "a module system")
    mode = checked_mode(mode)
    images, labels = module_batch(ocp, inputs, labels, dtype=dtype, device=device)
    trainable = trainable_parameters(module)
    names = [name for name, _ in trainable]
    shapes = [p.shape for _, p in trainable]
    sizes = [p.numel() for _, p in trainable]

    def cast(tensor):
        tensor = tensor.detach()
        return tensor.to(device=device, dtype=dtype) if tensor.is_floating_point() else tensor.to(device=device)

    frozen = {name: cast(p) for name, p in module.named_parameters() if not p.requires_grad}
    buffers = {name: cast(b) for name, b in module.named_buffers()}
    kwargs = {"all_exits": True} if stage_term_active(ocp) else {}

    def objective(theta):
        params = {name: piece.view(shape) for name, piece, shape in zip(names, torch.split(theta, sizes), shapes)}
        state = {**frozen, **params, **{name: b.clone() for name, b in buffers.items()}}
        with batch_norm_mode(module, mode):
            logits = torch.func.functional_call(module, state, (images,), kwargs)
        value, _ = module_loss_terms(ocp, logits, labels)
        if ocp.input_penalty > 0:
            value = value + weight_penalty(ocp, [theta])      # Σ_p ‖p‖² = ‖θ‖²
        return value
    return objective
