"""solve_ocp: train a network by solving its optimal control problem.

What every system shares lives here: method phases, the history, the divergence guard with
rollback to the last good parameters, checkpoint/resume, the progress bar and the callback.
Everything that depends on how parameters are stored and differentiated lives in the
backend the system declares (:mod:`turnpike.backends`).
"""
from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch

from . import _checks
from ._ocp import OCP
from .results import Status
from .backends import make_backend
from .backends._protocol import StepMethod
from .backends._flat import fingerprint_text
from .backends._schedules import check_options
from ._solve_context import Checkpoints, Signals, ThreadLimit, checkpoint_plan, per_method, solve_threads


def _plan(backend, method, steps, options, batch_size, seed) -> "_Run":
    """The validated phases (one method, step count and options each) of a solve, as a fresh :class:`_Run`."""
    names = list(method) if isinstance(method, (list, tuple)) else [method]
    if not names:
        _checks.fail("method", "at least one method name", method)
    for name in names:
        _checks.choice("method", name, backend.methods)
    methods = [backend.methods[name] for name in names]
    steps = [_checks.integer("steps", s, minimum=1) for s in per_method(steps, len(methods), "steps")]
    options = [_checks.options(f"options for {m.name!r}", o, m.defaults)
               for m, o in zip(methods, per_method(options, len(methods), "options"))]
    for m, n, o in zip(methods, steps, options):
        check_options(m.name, o, n)
    for m in methods:
        if batch_size is not None and not m.minibatch:
            _checks.fail("batch_size", f"None for the full-batch method {m.name!r}", batch_size)
    fingerprint = fingerprint_text({"methods": [m.name for m in methods], "steps": steps, "options": options,
                                    "seed": seed, "batch_size": batch_size, **backend.fingerprint()})
    return _Run(methods, steps, options, fingerprint)


class Stop(enum.Enum):
    """Why a solve ended before its last step: the loop's one stop signal, returned (not raised) by
    the step recorder and the phases, except Ctrl-C, which is the user's own KeyboardInterrupt."""

    DIVERGED = "diverged"          # J non-finite or over divergence_factor × its first value
    CALLBACK = "callback"          # the callback returned False
    SIGNAL = "signal"              # SIGTERM or Ctrl-C with a checkpoint: stopped at a step boundary
    KEYBOARD = "keyboard"          # Ctrl-C at once (no checkpoint, or a second Ctrl-C)
    TIME_LIMIT = "time_limit"      # time_limit passed at a checkpoint


@dataclass
class _Run:
    """The state of one solve that a checkpoint saves and ``resume`` restores (the parameters and the
    optimiser state are the backend's): the plan, where the loop stands and the history."""

    methods: list
    steps: list
    options: list
    fingerprint: str
    phase: int = 0                 # the phase a resumed loop starts in, and the step in it
    phase_step: int = 0
    history: dict = field(default_factory=lambda: {"step": [], "objective": [], "method": [], "time_s": []})
    optimiser_state: dict | None = None

    def restore(self, backend, checkpoint) -> None:
        """Continue from ``checkpoint`` (parameters into ``backend``); refused if another solve wrote it."""
        common, self.optimiser_state = backend.read_checkpoint(checkpoint)
        if common["fingerprint"] != self.fingerprint:
            raise ValueError(f"checkpoint: expected one written by a solve with the same settings, got "
                             f"{checkpoint} from a different one; delete it or change the path")
        self.phase, self.phase_step = common["phase"], common["phase_step"]
        self.history = {key: list(common["history"][key]) for key in self.history}
        self.history["method"] = [self.methods[int(i)].name for i in self.history["method"]]

    def save(self, backend, checkpoint, phase: int, phase_step: int, *, done: int, with_optimiser: bool) -> None:
        """Checkpoint at (``phase``, ``phase_step``); the first ``done`` history entries belong to steps
        before it (later ones are redone by a resumed run)."""
        if checkpoint is None or not backend.writes_files:
            return
        names = [m.name for m in self.methods]
        kept = {"step": np.asarray(self.history["step"][:done], dtype=np.int64),
                "objective": np.asarray(self.history["objective"][:done], dtype=np.float64),
                "method": np.asarray([names.index(n) for n in self.history["method"][:done]], dtype=np.int64),
                "time_s": np.asarray(self.history["time_s"][:done], dtype=np.float64)}
        backend.write_checkpoint(checkpoint, {"phase": phase, "phase_step": phase_step,
                                              "fingerprint": self.fingerprint, "history": kept},
                                 with_optimiser=with_optimiser)


class _Recorder:
    """History, divergence guard, callback and progress bar of one solve.

    :meth:`report` and :meth:`flush` return None to go on, or the :class:`Stop` that ends the solve
    (also kept in ``stop``). A backend with ``sync_every`` > 1 returns J as a device tensor, and the
    values are read on the host in one transfer every ``sync_every`` steps (:meth:`flush`): no
    synchronisation inside a step. The guard then checks those steps together, and the last good
    parameters are those of the latest synchronisation.
    """

    def __init__(self, backend, history, *, divergence_factor, callback, bar, start, samples_per_step, signals):
        self.backend, self.history, self.callback, self.bar = backend, history, callback, bar
        self.signals = signals
        self.samples_per_step, self.bar_started = samples_per_step, (time.perf_counter(), len(history["step"]))
        self.divergence_factor = divergence_factor
        self.first_value = history["objective"][0] if history["objective"] else None
        self.last_good, self.last_good_step = backend.snapshot(), len(history["step"])
        self.start = start
        self.pending = []                  # (method, J as a device tensor, time) not yet read
        self.stop = None

    def report(self, name: str, value) -> Stop | None:
        """Record one step's J; a :class:`Stop` if it (or a pending one) diverged or the callback said stop."""
        if isinstance(value, torch.Tensor):
            self.pending.append((name, value, time.perf_counter() - self.start))
            return self.flush() if len(self.pending) >= self.backend.sync_every else None
        return self._accept([(name, float(value), time.perf_counter() - self.start)])

    def go_on(self, name: str, step: int, value) -> bool:
        """:meth:`report` as a method that owns its loop wants it (L-BFGS): True to go on. A signal stops
        it too (it has no checkpoint of its own: resume restarts it from the phase's start)."""
        if self.report(name, value) is not None:
            return False
        if self.signals.received is not None:
            self.stop = Stop.SIGNAL
            return False
        return True

    def flush(self) -> Stop | None:
        """Read the pending values (one host synchronisation) and record them."""
        if not self.pending:
            return None
        pending, self.pending = self.pending, []
        values = torch.stack([value for _, value, _ in pending]).tolist()
        return self._accept([(name, value, at) for (name, _, at), value in zip(pending, values)])

    def _accept(self, steps: list) -> Stop | None:
        """Record (method, J, time) of consecutive steps, the latest one's parameters as the last good."""
        first = self.first_value if self.first_value is not None else steps[0][1]
        if any(not np.isfinite(value) or value > self.divergence_factor * max(first, 1e-12) for _, value, _ in steps):
            self.stop = Stop.DIVERGED
            return self.stop
        total = len(self.history["step"])
        self.first_value = steps[0][1] if self.first_value is None else self.first_value
        self.last_good, self.last_good_step = self.backend.snapshot(), total + len(steps) - 1
        for offset, (name, value, at) in enumerate(steps):
            for key, item in (("step", total + offset), ("objective", value), ("method", name), ("time_s", at)):
                self.history[key].append(item)
        for offset, (name, value, _) in enumerate(steps):
            if self.callback is not None and self.callback(total + offset, value,
                                                           self.backend.controls_for_callback()) is False:
                self.stop = Stop.CALLBACK
                return self.stop
        if self.bar is not None:
            self._show(steps, total)
        return None

    def _show(self, steps: list, total: int) -> None:
        self.bar.update(len(steps))
        if len(steps) == 1 and total % 10:
            return
        accuracy = self.backend.batch_accuracy()
        began, first = self.bar_started
        rate = self.samples_per_step * (total + len(steps) - first) / max(time.perf_counter() - began, 1e-9)
        self.bar.set_postfix(method=steps[-1][0], J=f"{steps[-1][1]:.4g}",
                             **({} if accuracy is None else {"acc": f"{accuracy:.3f}"}),
                             **{"samples/s": f"{rate:,.0f}"})


def solve_ocp(ocp, *, method="lbfgs", steps=500, options=None, batch_size=None, seed=0, test_data=None,
              threads="auto", divergence_factor=1e6, checkpoint=None, checkpoint_every=None, resume=False,
              time_limit=None, device="cpu", progress=True, callback=None, **settings):
    """Solve the training OCP ``ocp`` and return a :class:`Solution`.

    Parameters
    ----------
    ocp : OCP
        System, costs, weights and training data. The system's kind chooses the backend:
        flat systems (ResNets (1)/(26), NeuralODE) train one control vector θ; module
        systems (:class:`ResidualNetwork`) a ``torch.nn.Module`` (see ``settings``).
    method : str or sequence of str
        Optimiser name(s) from the backend's registry, run one after the other, each
        warm-started from the last. Flat: ``"adam"``, ``"sgd"``, ``"lbfgs"`` (e.g.
        ``("adam", "lbfgs")``: Adam's noise to find a basin, L-BFGS to converge in it).
        Module: ``"sgd"`` (momentum, Nesterov), ``"adam"``, ``"adamw"``.
    steps : int or sequence of int
        Optimiser steps per method (L-BFGS: iterations).
    options : dict or sequence of dict
        Per-method settings; unknown keys are refused with the list of valid ones.
    batch_size : int, optional
        Mini-batch size of first-order methods (reshuffled every epoch from per-epoch
        seeds); full batch if None.
    seed : int
        Seeds the initial parameters and the batch order: equal seeds give equal results.
    test_data : (inputs, labels), optional
        Held-out data; its layer-wise states (flat) or per-exit metrics (module) are in
        the solution. For a module system also a ``torch.utils.data.Dataset`` of
        (image, label) pairs, read in chunks.
    threads : "auto", int or None
        Threads while solving, for torch's intra-op pool and the BLAS library numpy calls
        (through threadpoolctl; both restored afterwards). Small networks are
        bound by per-operation overhead, and a thread pool only adds synchronisation that
        turns into spinning on shared cores (measured: 5 ms vs 150 ms per evaluation of
        the spirals problem on a loaded 2-core machine), so "auto" uses one thread when a
        layer's work for one batch, batch × n × max(n, width), is below 3·10⁶ (measured by
        ``benchmarks/sizes.py``) and leaves torch's setting alone otherwise; None never
        changes it.
    divergence_factor : float
        The solve stops, keeping the last good parameters, when the objective is
        non-finite or exceeds this factor times its first value.
    checkpoint : path, optional
        File that receives parameters, optimiser state and history every
        ``checkpoint_every`` steps (default: every epoch of mini-batches, else every 100
        steps) and at the end of each method, written atomically. In a process group pass the
        same path on every rank: only rank 0 writes it, every rank reads it to resume, and the
        ranks take their checkpoint steps together.
    time_limit : float, optional
        Seconds of this call after which the solve stops at its next checkpoint, just after
        writing it (status ``time_limit``; ``resume=True`` continues with nothing lost): for jobs
        with a wall-clock limit. Needs ``checkpoint``. All ranks of a process group stop together.
    resume : bool
        Continue from ``checkpoint`` if it exists (refused if written by a solve with
        different settings); a resumed run gives the same result as an uninterrupted one.
    device : str
        "cpu", or "cuda" / "cuda:N".
    progress : bool
        A tqdm progress bar (on by default) with the objective and the latest batch's
        output-layer accuracy. It is the only output of the library; pass False to silence it.
    callback : callable, optional
        ``callback(step, objective, parameters)`` with a copy of the parameters; return
        False to stop (in a process group, on every rank alike: a rank that stops alone
        leaves the others waiting for it).
    settings
        The system kind's own settings; one of the other kind is refused (it would do nothing).
        Flat systems (:class:`turnpike.backends.FlatSettings`):

        initial_controls : array, optional
            start from this θ instead of random controls.
        init_scale : float
            scale of the random initial weights (``system.initial_controls``).
        engine : {"auto", "adjoint", "buffered", "autograd", "system", "scheme"}
            the gradient engine (:data:`turnpike.backends.ENGINES`), among those the system's
            capabilities open (``available_engines``). "auto" takes the first: the analytic adjoint sweep of a
            ResNet, switched to its buffered torch form for large layers (batch × n × width
            ≥ 10⁷ multiply-adds, e.g. MNIST; measured by ``benchmarks/sizes.py``) and
            on a GPU; an explicit "adjoint" is the plain numpy sweep (on a GPU its buffered
            form). For a NeuralODE the
            exact adjoint of its fixed-step scheme ("scheme": euler, midpoint, rk4 with
            piecewise-constant controls), else its torchdiffeq solve ("system").
        dtype : {"float64", "float32"}
            precision of controls and states while solving.
        keep_states : bool
            store every layer's train and test states in the solution (pass
            False for large data sets and use :func:`turnpike.layer_statistics`).

        Module systems (:class:`turnpike.backends.ModuleSettings`, each described there): ``normalise``,
        ``augment``, ``eval_batch_size``, ``exit_lr_factor``, ``amp``, ``channels_last``, ``compile``,
        ``sync_every``, ``sync_batchnorm``, ``loader_workers``, ``cuda_graph``, ``cudnn_benchmark``. Inside a process group (torchrun,
        :func:`turnpike.distributed.init_distributed`) a module system trains with DistributedDataParallel,
        each rank on its share of every batch (:mod:`turnpike._distributed`); only rank 0
        writes the checkpoint.

    Returns
    -------
    Solution
        With ``status`` a :class:`Status` and ``message`` saying what happened and, on
        failure, what to change.
    """
    _checks.instance("ocp", ocp, OCP, "a turnpike.OCP(system, inputs, labels, ...)")
    seed = _checks.integer("seed", seed, minimum=0)
    divergence_factor = _checks.real("divergence_factor", divergence_factor, minimum=1.0)
    resume, progress = _checks.boolean("resume", resume), _checks.boolean("progress", progress)
    _checks.function("callback", callback, "a callable callback(step, objective, parameters) or None")
    count = ocp.sample_count
    if batch_size is not None:
        batch_size = min(_checks.integer("batch_size", batch_size, minimum=1), count)
    backend = make_backend(ocp, seed=seed, batch_size=batch_size, device=_checks.device("device", device),
                           test_data=test_data, settings=settings)
    run = _plan(backend, method, steps, options, batch_size, seed)
    checkpoints = checkpoint_plan(checkpoint, checkpoint_every, resume, time_limit, batch_size, count)
    if resume and Path(checkpoint).exists():
        run.restore(backend, checkpoint)
    bar = None
    if progress and backend.writes_files:
        from tqdm.auto import tqdm
        bar = tqdm(total=sum(run.steps), initial=len(run.history["step"]), desc="solve_ocp", unit="step", leave=False)
    thread_limit = ThreadLimit(solve_threads(threads, backend.layer_work), numpy_sweep=backend.numpy_sweep)
    start = checkpoints.called - (run.history["time_s"][-1] if run.history["time_s"] else 0.0)
    signals = Signals(active=checkpoint is not None)
    recorder = _Recorder(backend, run.history, divergence_factor=divergence_factor, callback=callback, bar=bar,
                         start=start, samples_per_step=batch_size or count, signals=signals)
    status, message, stop, phase = Status.MAX_STEPS, "", None, run.phase
    try:
        for phase in range(run.phase, len(run.methods)):
            status, message, stop = _run_phase(backend, run, recorder, checkpoints, phase)
            if stop is not None:
                break
            run.save(backend, checkpoint, phase + 1, 0, done=len(run.history["step"]), with_optimiser=False)
    except KeyboardInterrupt:
        stop = Stop.KEYBOARD
    finally:
        signals.restore()
        thread_limit.restore()
        if bar is not None:
            bar.close()
    if stop is not None:
        status, message = _stopped(stop, backend, recorder, run, phase, checkpoints)
    solution = backend.solution(status=status, message=message,
                                history={k: np.asarray(v) for k, v in run.history.items()},
                                wall_time_s=time.perf_counter() - start)
    if stop == Stop.SIGNAL:
        solution.extra["signal"] = signals.received.name
    return solution


def _run_phase(backend, run: _Run, recorder: _Recorder, checkpoints: Checkpoints, phase: int) -> tuple:
    """Run one method (a phase) from where the loop stands: (status, message, :class:`Stop` or None)."""
    method, steps, options = run.methods[phase], run.steps[phase], run.options[phase]
    backend.begin_phase(phase, method, steps, options)
    first = run.phase_step if phase == run.phase else 0
    if phase == run.phase and run.optimiser_state:
        backend.load_optimiser_state(run.optimiser_state)
    if isinstance(method, StepMethod):
        stop = _take_steps(backend, run, recorder, checkpoints, phase, first)
        status, message = Status.MAX_STEPS, f"finished {steps} {method.name} steps"
    else:
        status, message = backend.run_method(phase, method, steps, options, partial(recorder.go_on, method.name))
        status = Status(status)
        stop = recorder.stop if status == Status.STOPPED else Stop.DIVERGED if status == Status.DIVERGED else None
    if stop is None and not backend.is_finite():
        stop = Stop.DIVERGED
    return status, message, stop


def _take_steps(backend, run: _Run, recorder: _Recorder, checkpoints: Checkpoints, phase: int, first: int):
    """The steps of a first-order method from ``first``; the :class:`Stop` that ended them early, or None."""
    method, steps = run.methods[phase], run.steps[phase]
    for step in range(first, steps):
        stop = recorder.report(method.name, backend.evaluate(phase, step))
        due = checkpoints.due(step, first)
        signalled = _signalled(recorder.signals, backend, due)
        checkpoint_now = due or signalled
        if stop is None and (checkpoint_now or step == steps - 1):
            stop = recorder.flush()       # read the pending values before the update (every rank alike)
        if stop is not None:
            return stop
        if checkpoint_now:
            # parameters whose objective was just seen to be finite, with the optimiser state before
            # the update: a resumed run repeats this step exactly
            run.save(backend, checkpoints.path, phase, step, done=len(run.history["step"]) - 1, with_optimiser=True)
            stop = Stop.SIGNAL if signalled else Stop.TIME_LIMIT if checkpoints.time_is_up(backend) else None
            if stop is not None:
                checkpoints.stopped_at = (phase, step)
                return stop
        backend.update(step)
    return None


def _signalled(signals: Signals, backend, due: bool) -> bool:
    """Whether to stop for a signal at this step: at once in one process; in a process group at the
    next checkpoint step, where the ranks agree (a rank that stops alone leaves the others waiting)."""
    if not backend.distributed:
        return signals.received is not None
    return due and backend.any_rank(signals.received is not None)


def _stopped(stop: Stop, backend, recorder: _Recorder, run: _Run, phase: int, checkpoints: Checkpoints) -> tuple:
    """(status, message) of a solve that ended early; back to the last good parameters unless the time
    limit or a signal stopped it just after a checkpoint (its parameters are then the checkpoint's)."""
    if checkpoints.stopped_at is not None:
        at = f"step {checkpoints.stopped_at[1]} of phase {checkpoints.stopped_at[0]}"
        if stop == Stop.TIME_LIMIT:
            return Status.TIME_LIMIT, (f"time limit of {checkpoints.time_limit:g} s reached: stopped at {at}, "
                                       f"just after writing {checkpoints.path}; resume=True continues from there")
        return Status.INTERRUPTED, (f"{recorder.signals.received.name} received: stopped at {at}, just after "
                                    f"writing {checkpoints.path}; resume=True continues from there")
    backend.restore(recorder.last_good)
    after = recorder.last_good_step
    if stop == Stop.DIVERGED:
        return Status.DIVERGED, (f"{run.methods[phase].name} diverged (non-finite or exploding objective) after step "
                                 f"{after}; returned the last finite parameters. Lower the learning rate "
                                 f"(options={{'lr': ...}}) or init_scale, or use method='lbfgs'.")
    if stop == Stop.CALLBACK:
        return Status.STOPPED, f"stopped by the callback after step {after}"
    if stop == Stop.SIGNAL:         # in a method that owns its loop: no checkpoint inside it
        return Status.INTERRUPTED, (f"{recorder.signals.received.name} received: stopped after step {after}; "
                                    f"resume=True continues from the last checkpoint")
    resumable = "; resume=True continues from the last checkpoint" if checkpoints.path is not None else ""
    return Status.STOPPED, f"stopped by the user (Ctrl-C) after step {after}{resumable}"
