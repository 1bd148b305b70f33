"""solve_ocp: train a residual network by solving its optimal control problem."""
from __future__ import annotations

import time

import numpy as np
import torch

from . import _checks
from ._engines import ENGINES
from ._optimizers import get_method
from ._solution import Network, Solution


def _as_sequence(value, count, name):
    if isinstance(value, (list, tuple)):
        if len(value) != count:
            _checks.fail(name, f"{count} entries, one per method", value)
        return list(value)
    return [value] * count


def solve_ocp(ocp, *, method="lbfgs", steps=500, options=None, batch_size=None, seed=0,
              initial_controls=None, init_scale=0.1, engine="auto", test_data=None,
              threads="auto", divergence_factor=1e6, progress=True, callback=None) -> Solution:
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
    engine : {"auto", "adjoint", "autograd"}
        Gradient engine; "auto" takes the analytic adjoint sweep when the system has one.
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
    progress : bool
        Show a tqdm progress bar.
    callback : callable, optional
        ``callback(step, objective, controls)``; return False to stop.
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
    _checks.choice("engine", engine, ("auto", "adjoint", "autograd"))
    system = ocp.system
    if engine == "auto":
        engine = "adjoint" if hasattr(system, "step_backward") else "autograd"
    if engine == "adjoint" and not hasattr(system, "step_backward"):
        _checks.fail("engine", "'autograd' for a system without an adjoint (step_backward)", engine)
    evaluate = ENGINES[engine]

    count = ocp.inputs.shape[0]
    if batch_size is not None:
        batch_size = _checks.integer("batch_size", batch_size, minimum=1)
        for m in methods:
            if not m.minibatch:
                _checks.fail("batch_size", f"None for the full-batch method {m.name!r}", batch_size)
        batch_size = min(batch_size, count)

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

    batch_rng = np.random.default_rng([seed, 1])
    order = {"epoch": -1, "perm": None}

    def objective(controls, step):
        if batch_size is None or batch_size == count:
            return evaluate(ocp, controls, ocp.inputs, ocp.labels)
        per_epoch = -(-count // batch_size)
        epoch, position = divmod(step, per_epoch)
        if epoch != order["epoch"]:
            order["epoch"], order["perm"] = epoch, batch_rng.permutation(count)
        index = order["perm"][position * batch_size:(position + 1) * batch_size]
        return evaluate(ocp, controls, ocp.inputs[index], ocp.labels[index])

    history = {"step": [], "objective": [], "method": [], "time_s": []}
    last_good = {"theta": theta, "step": 0}
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=sum(steps), desc="solve_ocp", unit="step", leave=False)
    if threads == "auto":
        width = max(system.state_dim, getattr(system, "hidden_dim", 0))
        threads = 1 if count * width * system.state_dim < 2_000_000 else None
    elif threads is not None:
        threads = _checks.integer("threads", threads, minimum=1)
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    start = time.perf_counter()
    total_steps = 0
    status, message = "max_steps", ""
    try:
        for m, n_steps, opts in zip(methods, steps, options):
            def report(step, value, controls, _name=m.name):
                nonlocal total_steps
                if not np.isfinite(value) or (history["objective"] and value > divergence_factor
                                              * max(history["objective"][0], 1e-12)):
                    return False
                last_good["theta"], last_good["step"] = controls, total_steps
                history["step"].append(total_steps)
                history["objective"].append(float(value))
                history["method"].append(_name)
                history["time_s"].append(time.perf_counter() - start)
                if callback is not None and callback(total_steps, value, controls) is False:
                    raise KeyboardInterrupt
                total_steps += 1
                if bar is not None:
                    bar.update(1)
                    if total_steps % 10 == 0:
                        bar.set_postfix(method=_name, J=f"{value:.4g}")
                return True

            theta, status, message = m.run(objective, theta, n_steps, opts, report)
            if status == "stopped" or not np.all(np.isfinite(theta)):
                status = "diverged"
                theta = last_good["theta"]
                message = (f"{m.name} diverged (non-finite or exploding objective) after step "
                           f"{last_good['step']}; "
                           f"returned the last finite controls. Lower the learning rate "
                           f"(options={{'lr': ...}}) or init_scale, or use method='lbfgs'.")
                break
    except KeyboardInterrupt:
        theta, status = last_good["theta"], "stopped"
        message = f"stopped by the callback or the user after step {last_good['step']}"
    finally:
        torch.set_num_threads(previous_threads)
        if bar is not None:
            bar.close()
    wall_time = time.perf_counter() - start

    network = Network(system, np.array(theta, dtype=np.float64))
    value, _ = evaluate(ocp, network.controls, ocp.inputs, ocp.labels)
    if not np.isfinite(value) and status != "diverged":
        status, message = "diverged", "the final objective is not finite; lower the learning rate"
    return Solution(
        ocp=ocp, network=network,
        train_states=network.states(ocp.inputs),
        test_states=network.states(test_inputs) if test_data is not None else None,
        test_labels=test_labels if test_data is not None else None,
        objective=float(value), status=status, message=message,
        history={k: np.asarray(v) for k, v in history.items()},
        wall_time_s=wall_time, seed=seed, extra={"engine": engine})
