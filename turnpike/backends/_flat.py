"""The flat backend: one control vector θ, analytic adjoint sweeps, steppers and L-BFGS.

For :class:`~turnpike.systems.FlatSystem` s (the ResNets (1) and (26), the neural ODE). θ is
a numpy array on the CPU, or a torch tensor on a GPU ("resident": controls, optimiser
state and training data stay on the device). The gradient comes from an engine of
:data:`ENGINES`, each open to the systems whose class implements its capability;
``engine="auto"`` takes the first of those, and swaps the plain numpy adjoint sweep for the
buffered torch sweep on large layers and on GPUs.
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from .. import _array, _checks
from .._runs import read_npz, write_npz
from ..results import Network, Status, solution_type
from ..systems._protocol import (BufferedLayerMap, DifferentiableObjective, FixedStepScheme, LayerMapSystem,
                                 OwnGradient, Trajectories)
from ._engines import adjoint_objective, autograd_objective, scheme_objective, system_objective
from ._optimizers import METHODS
from ._protocol import Backend, StepMethod
from ._sweep import Workspace, buffered_adjoint_objective

# The buffered torch sweep beats the plain numpy one from products of this many multiply-adds per layer
# (batch × n × hidden width); below it numpy's lower per-call cost wins (benchmarks/sizes.py, its results in
# benchmarks/results/sizes-*.csv, benchmarks/README.md).
_BUFFERED_PRODUCT_WORK = 10_000_000
# solve_ocp's threads="auto" runs one thread below this layer work, where a second thread only adds
# synchronisation (benchmarks/sizes.py)
ONE_THREAD_LAYER_WORK = 3_000_000


def _buffered(ocp, theta, inputs, labels, *, workspace=None, with_gradient=True):
    return buffered_adjoint_objective(ocp, theta, inputs, labels, workspace=workspace or Workspace(),
                                      with_gradient=with_gradient)


@dataclass(frozen=True)
class Engine:
    """A gradient engine: ``engine(ocp, θ, inputs, labels) -> (J, ∇J)``, open to the systems whose
    class implements one of ``capabilities`` (abstract classes of :mod:`turnpike.systems`) and, if
    given, passes ``applies`` (settings of the instance, e.g. a scheme with an exact adjoint).

    What the backend does for it: ``numpy_sweep`` (J and ∇J in numpy: ``solve_ocp`` gives numpy's BLAS the
    threads), ``buffered`` (it runs on a preallocated torch :class:`Workspace` the backend holds), and
    ``batch_rollout`` (the progress bar's batch accuracy may roll the batch out; not where that is an ODE
    solve of its own)."""

    name: str
    capabilities: tuple
    objective: Callable
    description: str
    applies: Callable | None = None
    numpy_sweep: bool = False
    buffered: bool = False
    batch_rollout: bool = True

    def available(self, system) -> bool:
        return isinstance(system, self.capabilities) and (self.applies is None or self.applies(system))

    def __call__(self, ocp, theta, inputs, labels, **settings):
        return self.objective(ocp, theta, inputs, labels, **settings)


#: gradient engines by name, in order of preference: ``engine="auto"`` takes the first a system can use
ENGINES = {engine.name: engine for engine in (
    Engine("scheme", (FixedStepScheme,), scheme_objective,
           "exact adjoint of a fixed-step Runge-Kutta scheme (NeuralODE: euler, midpoint, rk4)",
           applies=lambda system: system.scheme_unavailable() is None, numpy_sweep=True),
    Engine("adjoint", (LayerMapSystem,), adjoint_objective, "costate sweep over the layer maps, numpy",
           numpy_sweep=True),
    Engine("buffered", (BufferedLayerMap,), _buffered, "the costate sweep on preallocated torch buffers",
           buffered=True),
    Engine("system", (OwnGradient,), system_objective, "the system's own J and gradient", batch_rollout=False),
    # a system with its own gradient computes it from the same objective_tensor: not listed twice
    Engine("autograd", (Trajectories, DifferentiableObjective), autograd_objective,
           "torch autograd through objective_tensor (the reference)",
           applies=lambda system: not isinstance(system, OwnGradient)),
)}


def available_engines(system) -> tuple:
    """Names of the engines that can train ``system``, in order of preference (from its capabilities)."""
    return tuple(name for name, engine in ENGINES.items() if engine.available(system))


def _resident(device) -> bool:
    """Keep controls and data as torch tensors on ``device`` (a GPU) instead of numpy arrays."""
    return device.type != "cpu"


def _choose_engine(system, engine: str, large: bool, device) -> str:
    """The engine for ``engine`` ("auto" or a name), checked against what the system declares."""
    _checks.choice("engine", engine, ("auto", *ENGINES))
    declared, requested = available_engines(system), engine
    if engine == "auto":
        engine = declared[0]
    if engine not in declared:
        hint = (f"'auto' or {declared[0]!r}" if len(declared) == 1 else f"'auto' or one of {list(declared)}") \
            + f" for {type(system).__name__}"
        if engine == "scheme" and isinstance(system, FixedStepScheme):
            hint += f" ({system.scheme_unavailable()})"
        _checks.fail("engine", hint, engine)
    # "auto": the adjoint sweep of a large layer runs on preallocated torch buffers; on a GPU it always does
    if engine == "adjoint" and "buffered" in declared and ((requested == "auto" and large) or _resident(device)):
        engine = "buffered"
    if _resident(device) and engine != "buffered":
        _checks.fail("device", f"'cpu' for engine {engine!r} (GPUs run the adjoint sweep of a ResNet)", str(device))
    return engine


@dataclass(frozen=True)
class FlatSettings:
    """The settings of a flat system's solve (``solve_ocp(..., **settings)``), each default defined here.

    engine : "auto" or a name of :data:`ENGINES` the system's capabilities open.
    dtype : "float64" or "float32", of the controls and states while solving.
    init_scale : scale of the random initial controls (``system.initial_controls``).
    initial_controls : a flat θ to start from instead (None: random).
    keep_states : store every layer's train and test states in the solution.
    """

    engine: str = "auto"
    dtype: str = "float64"
    init_scale: float = 0.1
    initial_controls: object = None
    keep_states: bool = True

    def __post_init__(self):
        _checks.choice("engine", self.engine, ("auto", *ENGINES))
        _checks.choice("dtype", self.dtype, ("float64", "float32"))
        object.__setattr__(self, "init_scale", _checks.real("init_scale", self.init_scale, minimum=0.0))
        _checks.boolean("keep_states", self.keep_states)


class FlatBackend(Backend):
    methods = METHODS
    Settings = FlatSettings

    def __init__(self, ocp, *, seed, batch_size, device, test_data, settings: FlatSettings):
        system = ocp.system
        self.ocp, self.seed, self.batch_size, self.device = ocp, seed, batch_size, device
        self.settings = settings
        engine, self.dtype = settings.engine, settings.dtype
        count = ocp.inputs.shape[0]
        batch, n = batch_size or count, system.state_dim
        hidden = system.layer_width
        # batch × n × max(n, h): the layer's work for one batch, which sets solve_ocp's thread count
        self.layer_work = batch * n * max(n, hidden)
        large = batch * n * hidden >= _BUFFERED_PRODUCT_WORK
        requested = engine
        self.engine = _choose_engine(system, engine, large, device)
        # the name reported: "adjoint" covers both forms of the sweep
        self.engine_name = "adjoint" if self.engine == "buffered" and requested in ("auto", "adjoint") else self.engine
        engine = ENGINES[self.engine]
        self.workspace = Workspace(device) if engine.buffered else None
        self.numpy_sweep, self._batch_rollout = engine.numpy_sweep, engine.batch_rollout
        self._evaluate = functools.partial(_buffered, workspace=self.workspace) if self.workspace else engine
        self.theta = self._initial(settings.initial_controls, settings.init_scale)
        self.inputs = ocp.inputs.astype(self.dtype)
        if _resident(device):        # controls, optimiser state and data stay on the GPU
            self.inputs = torch.as_tensor(self.inputs, device=device)
            self.theta = torch.as_tensor(self.theta, device=device)
        self.count = count
        self.per_epoch = 1 if batch_size is None else -(-count // batch_size)
        self._permutation = (None, None)
        self._batch = (self.inputs, ocp.labels)
        self._gradient = None
        self.stepper = None
        self.test_data = check_test_data(ocp, test_data)

    def _initial(self, initial_controls, init_scale):
        system = self.ocp.system
        if initial_controls is None:
            theta = system.initial_controls(np.random.default_rng(self.seed), init_scale)
        else:
            theta = _checks.finite_array("initial_controls", initial_controls, ndim=1).copy()
            if theta.shape != (system.parameter_count,):
                _checks.fail("initial_controls", f"a flat vector of {system.parameter_count} controls", theta)
        return theta.astype(self.dtype)

    def fingerprint(self) -> dict:
        return {"dtype": self.dtype, "engine": self.engine_name, "parameters": self.ocp.system.parameter_count,
                "data": list(self.ocp.inputs.shape)}

    # --- batches and objective ----------------------------------------------------------
    def _batch_of(self, phase: int, step: int):
        if self.batch_size is None or self.batch_size == self.count:
            return self.inputs, self.ocp.labels
        epoch, position = divmod(step, self.per_epoch)
        if self._permutation[0] != (phase, epoch):
            # one seed per epoch, not one stream: a resumed run draws the same batches
            order = np.random.default_rng([self.seed, 1, phase, epoch]).permutation(self.count)
            self._permutation = ((phase, epoch), order)
        index = self._permutation[1][position * self.batch_size:(position + 1) * self.batch_size]
        inputs = (self.inputs[index] if _array.is_numpy(self.inputs)
                  else self.inputs[torch.as_tensor(index, device=self.device)])
        return inputs, self.ocp.labels[index]

    def _objective(self, theta, phase, step):
        self._batch = self._batch_of(phase, step)
        return self._evaluate(self.ocp, theta, *self._batch)

    def evaluate(self, phase: int, step: int) -> float:
        value, self._gradient = self._objective(self.theta, phase, step)
        return value

    # --- optimisers ---------------------------------------------------------------------
    def begin_phase(self, phase, method, steps, options) -> None:
        self.stepper = method.stepper(self.theta, steps, options) if isinstance(method, StepMethod) else None

    def update(self, step: int) -> None:
        self.theta = self.stepper.update(self.theta, self._gradient, step)

    def load_optimiser_state(self, state: dict) -> None:
        if state and self.stepper is not None:
            self.stepper.load_state_dict(state)

    def run_method(self, phase, method, steps, options, report):
        # scipy's L-BFGS steps on the CPU in float64 numpy; the objective may run on a GPU
        def report_controls(step, value, theta):
            self.theta = theta
            return report(step, value)

        theta, status, message = method.run(lambda th, st: self._objective(th, phase, st),
                                            np.array(_array.to_numpy(self.theta)), steps, options, report_controls)
        self.theta = torch.as_tensor(theta, device=self.device) if _resident(self.device) else theta
        return status, message

    # --- state --------------------------------------------------------------------------
    def snapshot(self):
        return self.theta       # steppers write updates into other buffers (see _UpdateBuffers)

    def restore(self, snapshot) -> None:
        self.theta = snapshot

    def is_finite(self) -> bool:
        return _array.all_finite(self.theta)

    def controls_for_callback(self):
        # a copy: the solver reuses the controls' memory two steps later
        return np.array(_array.to_numpy(self.theta))

    def batch_accuracy(self) -> float | None:
        classes = self.ocp.num_classes
        if not classes or not self._batch_rollout or not isinstance(self.ocp.system, Trajectories):
            return None
        if self.workspace is not None and self.workspace.last_states is not None:
            final = self.workspace.last_states[-1]          # the forward pass just made
        else:
            final = self.ocp.system.rollout(self.theta, self._batch[0])[-1]
        predicted = _array.to_numpy(self.ocp.system.readout(final, classes).argmax(-1))
        return float(np.mean(predicted == np.asarray(self._batch[1])))

    def write_checkpoint(self, path, common: dict, *, with_optimiser: bool) -> None:
        state = self.stepper.state_dict() if (with_optimiser and self.stepper is not None) else {}
        arrays = {f"history_{k}": v for k, v in common.pop("history").items()}
        write_npz(path, theta=_array.to_numpy(self.theta), **common, **arrays,
                  **{f"state_{k}": v for k, v in state.items()})

    def read_checkpoint(self, path):
        saved = read_npz(path)
        self.theta = saved["theta"].astype(self.dtype)
        if _resident(self.device):
            self.theta = torch.as_tensor(self.theta, device=self.device)
        common = {"fingerprint": str(saved["fingerprint"]), "phase": int(saved["phase"]),
                  "phase_step": int(saved["phase_step"]),
                  "history": {key[8:]: list(value) for key, value in saved.items() if key.startswith("history_")}}
        return common, {key[6:]: value for key, value in saved.items() if key.startswith("state_")}

    # --- result -------------------------------------------------------------------------
    def solution(self, *, status, message, history, wall_time_s):
        ocp, system = self.ocp, self.ocp.system
        network = Network(system, np.array(_array.to_numpy(self.theta), dtype=np.float64))
        value_only = (functools.partial(self._evaluate, with_gradient=False) if self.workspace is not None
                      else self._evaluate)
        value = objective_value(ocp, network.controls.astype(self.dtype), value_only)
        if not np.isfinite(value) and status != Status.DIVERGED:
            status, message = Status.DIVERGED, "the final objective is not finite; lower the learning rate"
        test_data, keep_states = self.test_data, self.settings.keep_states
        test_inputs, test_labels = test_data if test_data is not None else (None, None)
        return solution_type(system)(
            ocp=ocp, network=network,
            train_states=network.states(ocp.inputs) if keep_states and network.has_states else None,
            test_states=(network.states(test_inputs) if test_data is not None and keep_states and network.has_states
                         else None),
            test_labels=test_labels, objective=float(value), status=status, message=message,
            history=history, wall_time_s=wall_time_s, seed=self.seed,
            extra={"engine": self.engine_name, "dtype": self.dtype})


def check_test_data(ocp, test_data):
    """Validated (inputs, labels) of held-out data for a flat system, or None."""
    if test_data is None:
        return None
    inputs = _checks.finite_array("test_data[0]", test_data[0], ndim=2)
    if inputs.shape[1] != ocp.system.state_dim:
        _checks.fail("test_data[0]", f"shape (D_test, {ocp.system.state_dim})", inputs)
    labels = _checks.labels("test_data[1]", test_data[1], count=inputs.shape[0], num_classes=ocp.num_classes)
    return inputs, labels


def objective_value(ocp, controls, evaluate, chunk: int = 1024) -> float:
    """J on the whole training set, evaluated in chunks of samples to bound memory.

    J is affine in the per-sample state costs (their mean) plus the input penalty, so
    the chunk objectives combine as a weighted mean; the input penalty, counted once
    per chunk, is removed from all but one.
    """
    count = ocp.inputs.shape[0]
    inputs = ocp.inputs.astype(controls.dtype)
    # systems with their own objective (NeuralODE) may have an input penalty other than
    # r‖θ‖², so they are evaluated in one piece
    if count <= chunk or isinstance(ocp.system, DifferentiableObjective):
        return float(evaluate(ocp, controls, inputs, ocp.labels)[0])
    penalty = ocp.input_penalty * float(controls @ controls)
    total = 0.0
    for begin in range(0, count, chunk):
        part = slice(begin, begin + chunk)
        size = min(chunk, count - begin)
        total += (evaluate(ocp, controls, inputs[part], ocp.labels[part])[0] - penalty) * size / count
    return total + penalty


def fingerprint_text(fields: dict) -> str:
    return json.dumps(fields, sort_keys=True, default=str)
