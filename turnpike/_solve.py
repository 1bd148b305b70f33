"""solve_ocp: train a residual network by solving its optimal control problem."""
from __future__ import annotations

import functools
import json
import time
from pathlib import Path

import numpy as np
import torch

from . import _array, _checks
from .backends._engines import ENGINES
from .backends._sweep import Workspace, buffered_adjoint_objective
from .backends._optimizers import get_method
from ._runs import read_npz, write_npz
from ._solution import Network, Solution


def _as_sequence(value, count, name):
    if isinstance(value, (list, tuple)):
        if len(value) != count:
            _checks.fail(name, f"{count} entries, one per method", value)
        return list(value)
    return [value] * count


# batch × n × max(n, hidden) from which the buffered torch sweep beats the plain numpy one
# (per-operation overhead dominates below: two spirals, n = 2)
_BUFFERED_LAYER_WORK = 1e6


def _resident(device) -> bool:
    """Keep controls and data as torch tensors on ``device`` (a GPU) instead of numpy arrays."""
    return device.type != "cpu"


def solve_ocp(ocp, *, method="lbfgs", steps=500, options=None, batch_size=None, seed=0,
              initial_controls=None, init_scale=0.1, engine="auto", test_data=None,
              threads="auto", divergence_factor=1e6, dtype="float64", keep_states=True,
              checkpoint=None, checkpoint_every=None, resume=False, device="cpu",
              progress=True, callback=None) -> Solution:
    """Solve the training OCP ``ocp`` and return a :class:`Solution`.

    Parameters
    ----------
    ocp : OCP
        System, costs, weights and training data.
    method : str or sequence of str
        Optimiser name from the registry (``"adam"``, ``"sgd"``, ``"lbfgs"``), or several
        run one after the other, each warm-started from the last (e.g. ``("adam", "lbfgs")``:
        Adam's noise to find a good basin, L-BFGS to converge in it).
    steps : int or sequence of int
        Optimiser steps per method (L-BFGS: iterations).
    options : dict or sequence of dict
        Per-method settings; unknown keys are refused with the list of valid ones.
    batch_size : int, optional
        Mini-batch size for Adam and SGD (reshuffled every epoch); full batch if None.
    seed : int
        Seeds the initial controls and the batch order: equal seeds give equal results.
    initial_controls : array, optional
        Start from these controls (flat θ) instead of random ones.
    init_scale : float
        Scale of the random initial weights (see ``system.initial_controls``).
    engine : {"auto", "adjoint", "autograd", "system"}
        Gradient engine; "auto" takes the system's own objective when it has one
        ("system": the ODE solve of a NeuralODE), else the analytic adjoint sweep when the
        system has one, else autograd. For large layers (batch × n × width ≥ 10⁶, e.g.
        MNIST) and on a GPU the adjoint sweep runs on preallocated torch buffers
        (:mod:`turnpike.backends._sweep`); small ones (two spirals) take the plain numpy sweep,
        whose per-operation cost is lower.
    test_data : (inputs, labels), optional
        Held-out data whose layer-wise states are stored in the solution.
    threads : "auto", int or None
        Torch intra-op threads while solving (restored afterwards). Small networks are
        bound by per-operation overhead, and a thread pool only adds synchronisation
        that turns into spinning when the cores are shared (measured: 5 ms vs 150 ms per
        evaluation of the spirals problem on a loaded 2-core machine), so "auto" uses one
        thread when a layer's work is small and leaves torch's setting alone otherwise;
        None never changes it.
    divergence_factor : float
        Divergence guard: the solve stops, keeping the last good controls, when the
        objective is non-finite or exceeds this factor times its first value.
    dtype : {"float64", "float32"}
        Precision of the controls and states while solving (float32 halves memory and
        roughly doubles matrix-product speed for large networks; results are float64).
    keep_states : bool
        Store every layer's train and test states in the solution. For large data sets
        (60,000 images × 61 layers × 784 states) pass False and compute layer statistics
        in chunks with :func:`turnpike.layer_statistics`.
    checkpoint : path, optional
        ``.npz`` file that receives the controls, optimiser state and history every
        ``checkpoint_every`` steps (default: every epoch of mini-batches, else every 100
        steps) and at the end of each method, written atomically.
    resume : bool
        Continue from ``checkpoint`` if it exists (refused if it was written by a solve
        with different settings). A resumed run gives the same controls as an
        uninterrupted one: batches are drawn from per-epoch seeds.
    device : str
        "cpu", or "cuda" / "cuda:N" to keep the controls, optimiser state and training data
        on a GPU (adjoint engine only; L-BFGS evaluates there too but steps on the CPU).
    progress : bool
        Show a tqdm progress bar with the objective and, for classifiers, the current
        batch's training accuracy at the output layer.
    callback : callable, optional
        ``callback(step, objective, controls)`` with a copy of the controls (numpy);
        return False to stop.
    """
    methods = list(method) if isinstance(method, (list, tuple)) else [method]
    if not methods:
        _checks.fail("method", "at least one method name", method)
    methods = [get_method(m) for m in methods]
    steps = [_checks.integer("steps", s, minimum=1) for s in _as_sequence(steps, len(methods), "steps")]
    options = [_checks.options(f"options for {m.name!r}", o, m.defaults)
               for m, o in zip(methods, _as_sequence(options, len(methods), "options"))]
    seed = _checks.integer("seed", seed)
    init_scale = _checks.real("init_scale", init_scale, minimum=0.0)
    divergence_factor = _checks.real("divergence_factor", divergence_factor, minimum=1.0)
    _checks.choice("engine", engine, ("auto", *ENGINES))
    system = ocp.system
    own_objective = hasattr(system, "objective")   # continuous-time systems evaluate J themselves
    if engine == "auto":
        engine = ("system" if own_objective else "adjoint" if hasattr(system, "step_backward")
                  else "autograd")
    if own_objective != (engine == "system"):
        _checks.fail("engine", "'auto' or 'system' for a system that evaluates its own objective "
                     "(NeuralODE)" if own_objective else "'auto', 'adjoint' or 'autograd'", engine)
    if engine == "adjoint" and not hasattr(system, "step_backward"):
        _checks.fail("engine", "'autograd' for a system without an adjoint (step_backward)", engine)
    evaluate = ENGINES[engine]
    device = _checks.device("device", device)

    count = ocp.inputs.shape[0]
    if batch_size is not None:
        batch_size = _checks.integer("batch_size", batch_size, minimum=1)
        for m in methods:
            if not m.minibatch:
                _checks.fail("batch_size", f"None for the full-batch method {m.name!r}", batch_size)
        batch_size = min(batch_size, count)

    workspace = None
    width = max(system.state_dim, getattr(system, "hidden_dim", 0) or 0)
    large = (batch_size or count) * system.state_dim * width >= _BUFFERED_LAYER_WORK
    if engine == "adjoint" and hasattr(system, "step_into") and (_resident(device) or large):
        workspace = Workspace(device)
        evaluate = functools.partial(buffered_adjoint_objective, workspace=workspace)
    elif _resident(device):
        _checks.fail("device", f"'cpu' for engine {engine!r} (GPUs run the adjoint sweep of a ResNet)",
                     str(device))

    rng = np.random.default_rng(seed)
    if initial_controls is None:
        theta = system.initial_controls(rng, init_scale)
    else:
        theta = _checks.finite_array("initial_controls", initial_controls, ndim=1).copy()
        if theta.shape != (system.parameter_count,):
            _checks.fail("initial_controls", f"a flat vector of {system.parameter_count} controls", theta)

    if test_data is not None:
        test_inputs = _checks.finite_array("test_data[0]", test_data[0], ndim=2)
        if test_inputs.shape[1] != system.state_dim:
            _checks.fail("test_data[0]", f"shape (D_test, {system.state_dim})", test_inputs)
        test_labels = _checks.labels("test_data[1]", test_data[1], count=test_inputs.shape[0],
                                     num_classes=ocp.num_classes)

    dtype = _checks.choice("dtype", dtype, ("float64", "float32"))
    inputs = ocp.inputs.astype(dtype)
    theta = theta.astype(dtype)
    if _resident(device):     # controls, optimiser state and data stay on the GPU
        inputs, theta = torch.as_tensor(inputs, device=device), torch.as_tensor(theta, device=device)
    per_epoch = 1 if batch_size is None else -(-count // batch_size)
    if checkpoint_every is None:
        checkpoint_every = per_epoch if batch_size is not None else 100
    checkpoint_every = _checks.integer("checkpoint_every", checkpoint_every, minimum=1)
    if resume and checkpoint is None:
        _checks.fail("resume", "a checkpoint path to resume from (checkpoint=...)", resume)
    fingerprint = json.dumps({"methods": [m.name for m in methods], "steps": steps, "options": options,
                              "seed": seed, "batch_size": batch_size, "dtype": dtype, "engine": engine,
                              "parameters": system.parameter_count, "data": list(ocp.inputs.shape)},
                             sort_keys=True, default=str)

    permutations = {}
    last_batch = {}       # inputs and labels of the latest evaluation, for the accuracy shown

    def objective(controls, phase, step):
        if batch_size is None or batch_size == count:
            last_batch.update(inputs=inputs, labels=ocp.labels)
            return evaluate(ocp, controls, inputs, ocp.labels)
        epoch, position = divmod(step, per_epoch)
        if (phase, epoch) not in permutations:
            # one seed per epoch, not one stream: a resumed run draws the same batches
            permutations.clear()
            permutations[phase, epoch] = np.random.default_rng([seed, 1, phase, epoch]).permutation(count)
        index = permutations[phase, epoch][position * batch_size:(position + 1) * batch_size]
        batch_inputs = inputs[index] if _array.is_numpy(inputs) else inputs[torch.as_tensor(index, device=device)]
        last_batch.update(inputs=batch_inputs, labels=ocp.labels[index])
        return evaluate(ocp, controls, batch_inputs, ocp.labels[index])

    def batch_accuracy(controls):
        """Training accuracy at the output layer on the latest batch (None: not a classifier)."""
        classes = ocp.num_classes
        if not classes or not hasattr(system, "step"):
            return None
        if workspace is not None and workspace.last_states is not None:
            final = workspace.last_states[-1]          # the forward pass just made
        else:
            final = system.rollout(controls, last_batch["inputs"])[-1]
        predicted = _array.to_numpy(final[:, :classes].argmax(-1))
        return float(np.mean(predicted == np.asarray(last_batch["labels"])))

    history = {"step": [], "objective": [], "method": [], "time_s": []}
    start_phase, start_step, saved_state = 0, 0, None
    if resume and Path(checkpoint).exists():
        saved = read_npz(checkpoint)
        if str(saved["fingerprint"]) != fingerprint:
            raise ValueError(f"checkpoint: expected one written by a solve with the same settings, got "
                             f"{checkpoint} from a different one; delete it or change the path")
        theta = saved["theta"].astype(dtype)
        if _resident(device):
            theta = torch.as_tensor(theta, device=device)
        start_phase, start_step = int(saved["phase"]), int(saved["phase_step"])
        history = {"step": list(saved["history_step"]), "objective": list(saved["history_objective"]),
                   "method": [methods[int(i)].name for i in saved["history_method"]],
                   "time_s": list(saved["history_time_s"])}
        saved_state = {key[6:]: value for key, value in saved.items() if key.startswith("state_")}

    def save(phase, phase_step, controls, stepper, done):
        """Checkpoint; ``done`` history entries belong to steps before it (later ones are redone)."""
        if checkpoint is None:
            return
        names = [m.name for m in methods]
        state = {f"state_{k}": v for k, v in (stepper.state_dict() if stepper else {}).items()}
        write_npz(checkpoint, theta=_array.to_numpy(controls), phase=phase, phase_step=phase_step,
                  fingerprint=fingerprint,
                  history_step=np.asarray(history["step"][:done], dtype=np.int64),
                  history_objective=np.asarray(history["objective"][:done], dtype=np.float64),
                  history_method=np.asarray([names.index(n) for n in history["method"][:done]], dtype=np.int64),
                  history_time_s=np.asarray(history["time_s"][:done], dtype=np.float64), **state)

    last_good = {"theta": theta, "step": len(history["step"])}
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=sum(steps), initial=len(history["step"]), desc="solve_ocp", unit="step", leave=False)
    if threads == "auto":
        threads = 1 if count * width * system.state_dim < 2_000_000 else None
    elif threads is not None:
        threads = _checks.integer("threads", threads, minimum=1)
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    start = time.perf_counter() - (history["time_s"][-1] if history["time_s"] else 0.0)
    status, message = "max_steps", ""
    first_value = history["objective"][0] if history["objective"] else None

    def report(name, value, controls):
        nonlocal first_value
        if not np.isfinite(value) or (first_value is not None
                                      and value > divergence_factor * max(first_value, 1e-12)):
            return False
        total = len(history["step"])
        first_value = value if first_value is None else first_value
        last_good["theta"], last_good["step"] = controls, total
        history["step"].append(total)
        history["objective"].append(float(value))
        history["method"].append(name)
        history["time_s"].append(time.perf_counter() - start)
        # a copy: the solver reuses the controls' memory two steps later
        if callback is not None and callback(total, value, np.array(_array.to_numpy(controls))) is False:
            raise KeyboardInterrupt
        if bar is not None:
            bar.update(1)
            if total % 10 == 0:
                accuracy = batch_accuracy(controls) if last_batch else None
                bar.set_postfix(method=name, J=f"{value:.4g}",
                                **({} if accuracy is None else {"acc": f"{accuracy:.3f}"}))
        return True

    try:
        for phase in range(start_phase, len(methods)):
            m, n_steps, opts = methods[phase], steps[phase], options[phase]
            diverged = False
            if m.stepper is not None:
                stepper = m.stepper(theta, n_steps, opts)
                first = start_step if phase == start_phase else 0
                if phase == start_phase and saved_state:
                    stepper.load_state_dict(saved_state)
                for step in range(first, n_steps):
                    value, gradient = objective(theta, phase, step)
                    if not report(m.name, value, theta):
                        diverged = True
                        break
                    # checkpoint controls whose objective was just seen to be finite, with the
                    # optimiser state before the update: a resumed run repeats this step exactly
                    if step > first and step % checkpoint_every == 0:
                        save(phase, step, theta, stepper, done=len(history["step"]) - 1)
                    theta = stepper.update(theta, gradient, step)
                status, message = "max_steps", f"finished {n_steps} {m.name} steps"
            else:
                # scipy's L-BFGS steps on the CPU in float64 numpy; the objective may run on a GPU
                theta, status, message = m.run(lambda th, st, _p=phase: objective(th, _p, st),
                                               np.array(_array.to_numpy(theta)), n_steps, opts,
                                               lambda st, v, th, _n=m.name: report(_n, v, th))
                if _resident(device):
                    theta = torch.as_tensor(theta, device=device)
                diverged = status == "stopped"
            if diverged or not _array.all_finite(theta):
                status = "diverged"
                theta = last_good["theta"]
                message = (f"{m.name} diverged (non-finite or exploding objective) after step "
                           f"{last_good['step']}; "
                           f"returned the last finite controls. Lower the learning rate "
                           f"(options={{'lr': ...}}) or init_scale, or use method='lbfgs'.")
                break
            save(phase + 1, 0, theta, None, done=len(history["step"]))
    except KeyboardInterrupt:
        theta, status = last_good["theta"], "stopped"
        message = f"stopped by the callback or the user after step {last_good['step']}"
    finally:
        torch.set_num_threads(previous_threads)
        if bar is not None:
            bar.close()
    wall_time = time.perf_counter() - start

    network = Network(system, np.array(_array.to_numpy(theta), dtype=np.float64))
    value_only = evaluate if workspace is None else functools.partial(evaluate, with_gradient=False)
    value = objective_value(ocp, network.controls.astype(dtype), value_only)
    if not np.isfinite(value) and status != "diverged":
        status, message = "diverged", "the final objective is not finite; lower the learning rate"
    return getattr(system, "solution_type", Solution)(
        ocp=ocp, network=network,
        train_states=network.states(ocp.inputs) if keep_states else None,
        test_states=network.states(test_inputs) if test_data is not None and keep_states else None,
        test_labels=test_labels if test_data is not None else None,
        objective=float(value), status=status, message=message,
        history={k: np.asarray(v) for k, v in history.items()},
        wall_time_s=wall_time, seed=seed, extra={"engine": engine, "dtype": dtype})


def objective_value(ocp, controls, evaluate, chunk: int = 1024) -> float:
    """J on the whole training set, evaluated in chunks of samples to bound memory.

    J is affine in the per-sample state costs (their mean) plus the input penalty, so
    the chunk objectives combine as a weighted mean; the input penalty, counted once
    per chunk, is removed from all but one.
    """
    count = ocp.inputs.shape[0]
    inputs = ocp.inputs.astype(controls.dtype)
    # systems with their own objective (NeuralODE) have an input penalty other than
    # r‖θ‖², so they are evaluated in one piece
    if count <= chunk or hasattr(ocp.system, "objective"):
        return float(evaluate(ocp, controls, inputs, ocp.labels)[0])
    penalty = ocp.input_penalty * float(controls @ controls)
    total = 0.0
    for begin in range(0, count, chunk):
        part = slice(begin, begin + chunk)
        size = min(chunk, count - begin)
        total += (evaluate(ocp, controls, inputs[part], ocp.labels[part])[0] - penalty) * size / count
    return total + penalty
