"""Optimisation methods on the flat control vector, chosen by name from a registry.

First-order methods (Adam, SGD) are *steppers*: objects that turn a gradient into an
update and whose state (moments, velocity) can be saved and restored, so that
``solve_ocp`` can checkpoint between steps and resume a killed run exactly. L-BFGS
runs as one scipy call over the full batch (``run``); it is checkpointed only when it
ends.

Every method minimises ``objective(theta, step) -> (J, ∇J)``; ``step`` tells
mini-batch methods which batch to use. ``report(step, J, theta)`` is called once per
step and returns False to stop (divergence guard, callback).
"""
from __future__ import annotations

import numpy as np
import torch

from .. import _array, _checks
from ._protocol import LoopMethod, StepMethod
from ._schedules import check_options, learning_rate


def _as_tensor(x):
    """A torch view of a numpy array (no copy), or the tensor itself."""
    return torch.from_numpy(x) if isinstance(x, np.ndarray) else x


class _UpdateBuffers:
    """Two arrays like θ that updates are written into in turn.

    An update must not overwrite the controls it starts from: the solver keeps them as
    the last good state in case the next objective is non-finite. Writing into the one
    of two buffers that does not hold θ keeps that guarantee without allocating 48 MB a
    step for the 12-million-control MNIST network (fresh memory costs page faults).
    """

    def __init__(self):
        self._pair = []

    def other_than(self, theta):
        for buffer in self._pair:
            if buffer is not theta:
                return buffer
        self._pair.append(theta.copy() if isinstance(theta, np.ndarray) else theta.clone())
        return self._pair[-1]


class AdamStepper:
    r"""Adam (Kingma & Ba 2014) with bias correction and a learning-rate schedule.

    .. math::
        m_t = β_1 m_{t-1} + (1-β_1) g_t, \quad v_t = β_2 v_{t-1} + (1-β_2) g_t^2, \quad
        θ_t = θ_{t-1} - \frac{η_t}{1-β_1^t} \frac{m_t}{\sqrt{v_t/(1-β_2^t)} + ε}

    (the form of ``torch.optim.Adam``), as one fused in-place kernel pass over the
    controls, numpy arrays (viewed as tensors without a copy) or tensors on any device.
    """

    def __init__(self, theta, steps: int, options: dict):
        self.options, self.steps = options, steps
        self.mean = _array.zeros_like(theta)
        self.second = _array.zeros_like(theta)
        self._buffers = _UpdateBuffers()

    def update(self, theta, gradient, step: int):
        updated = self._buffers.other_than(theta)
        out = _as_tensor(updated)
        out.copy_(_as_tensor(theta))
        grad = _as_tensor(gradient).to(out.dtype)
        count = torch.tensor(float(step + 1), device=out.device)
        torch._fused_adam_([out], [grad], [_as_tensor(self.mean)], [_as_tensor(self.second)], [], [count],
                           lr=learning_rate(self.options, step, self.steps), beta1=self.options["beta1"],
                           beta2=self.options["beta2"], weight_decay=0.0, eps=self.options["eps"],
                           amsgrad=False, maximize=False)
        return updated

    def state_dict(self) -> dict:
        return {"mean": _array.to_numpy(self.mean), "second": _array.to_numpy(self.second)}

    def load_state_dict(self, state: dict) -> None:
        self.mean = _array.like(state["mean"], self.mean)
        self.second = _array.like(state["second"], self.second)


class SGDStepper:
    """Stochastic gradient descent with (optionally Nesterov) momentum."""

    def __init__(self, theta, steps: int, options: dict):
        self.options, self.steps = options, steps
        self.velocity = _array.zeros_like(theta)

    def update(self, theta, gradient, step: int):
        momentum = self.options["momentum"]
        self.velocity = momentum * self.velocity + gradient
        direction = gradient + momentum * self.velocity if self.options["nesterov"] else self.velocity
        return theta - learning_rate(self.options, step, self.steps) * direction

    def state_dict(self) -> dict:
        return {"velocity": _array.to_numpy(self.velocity)}

    def load_state_dict(self, state: dict) -> None:
        self.velocity = _array.like(state["velocity"], self.velocity)


def run_lbfgs(objective, theta, steps, options, report):
    """Limited-memory BFGS (scipy's L-BFGS-B without bounds) on the full batch.

    A quasi-Newton solve: it takes the curvature of J into account and converges in
    far fewer evaluations than first-order methods once near a minimiser.
    """
    from scipy.optimize import minimize

    counter = {"step": 0, "theta": theta}

    # scipy works in float64; the objective and the controls returned keep θ's dtype
    # (the buffered float32 sweep refuses float64 controls)
    dtype = theta.dtype

    def fun(x):
        value, gradient = objective(x.astype(dtype, copy=False), counter["step"])
        # scipy keeps the gradient of past points; engines may return a reused buffer
        return value, np.array(_array.to_numpy(gradient), dtype=np.float64)

    def callback(intermediate_result):  # scipy passes an OptimizeResult to this exact name
        value = float(intermediate_result.fun)
        controls = intermediate_result.x.astype(dtype)   # a copy: scipy updates x in place afterwards
        if not report(counter["step"], value, controls):
            counter["stopped"] = True
            raise StopIteration           # scipy's way for a callback to end the minimisation
        counter["theta"] = controls
        counter["step"] += 1

    result = minimize(fun, theta, jac=True, method="L-BFGS-B", callback=callback,
                      options={"maxiter": steps, "maxcor": options["memory"],
                               "gtol": options["gtol"], "ftol": options["ftol"],
                               "maxls": options["max_line_search"]})
    if counter.get("stopped"):
        return counter["theta"], "stopped", f"stopped at step {counter['step']}"
    if not np.all(np.isfinite(result.x)) or not np.isfinite(result.fun):
        return counter["theta"], "diverged", "L-BFGS produced non-finite controls"
    controls = result.x.astype(dtype)
    if result.nit >= steps:
        return controls, "max_steps", f"reached the {steps}-iteration limit of L-BFGS"
    if result.success:
        return controls, "converged", f"L-BFGS converged: {result.message}"
    return controls, "stalled", f"L-BFGS stopped: {result.message}"


_SCHEDULE = {"schedule": "cosine", "final_lr_fraction": 0.01, "warmup_steps": 0}

METHODS = {
    "adam": StepMethod("adam", {"lr": 0.01, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, **_SCHEDULE},
                   True, "Adam with a cosine learning-rate schedule", stepper=AdamStepper),
    "sgd": StepMethod("sgd", {"lr": 0.01, "momentum": 0.9, "nesterov": False, **_SCHEDULE},
                  True, "SGD with momentum", stepper=SGDStepper),
    "lbfgs": LoopMethod("lbfgs", {"memory": 20, "gtol": 1e-10, "ftol": 1e-14, "max_line_search": 30},
                    False, "L-BFGS quasi-Newton, full batch", run=run_lbfgs),
}


def method_schedule(method, steps, options, *, default_steps: int, default_options: dict):
    """Normalise an experiment's (method, steps, options) to three tuples of equal length.

    A single method becomes a 1-tuple. ``steps`` None gives every method ``default_steps``;
    an int is repeated. ``options`` None gives each method its entry of ``default_options``
    (name -> dict, {} if absent); a dict is repeated. Sequences must have one entry per
    method: options written for other methods are an error, not silently dropped.
    """
    method = tuple(method) if isinstance(method, (list, tuple)) else (method,)
    if steps is None:
        steps = (default_steps,) * len(method)
    steps = (steps,) * len(method) if isinstance(steps, int) else tuple(steps)
    if options is None:
        options = tuple(dict(default_options.get(m, {})) for m in method)
    options = (options,) * len(method) if isinstance(options, dict) else tuple(options)
    for name, values in (("steps", steps), ("options", options)):
        if len(values) != len(method):
            _checks.fail(name, f"one entry per method ({len(method)} for {method}), or None for the defaults",
                         values)
    # what solve_ocp checks, checked when the experiment is configured: before its run folder is written
    for name, count, opts in zip(method, steps, options):
        _checks.choice("method", name, METHODS)
        _checks.integer("steps", count, minimum=1)
        check_options(name, _checks.options(f"options for {name!r}", opts, METHODS[name].defaults), count)
    return method, steps, options


def with_learning_rate(methods, options, lr: float) -> tuple:
    """``options`` (one dict per method) with the learning rate of the first-order methods set to
    ``lr``; L-BFGS keeps its own settings (an unknown name is left to the registry's check)."""
    return tuple({**dict(opts), "lr": lr} if name in METHODS and isinstance(METHODS[name], StepMethod) else dict(opts)
                 for name, opts in zip(methods, options))

