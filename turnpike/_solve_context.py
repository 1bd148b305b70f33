"""What a solve runs inside: the signals it turns into a stop at a step boundary, when it checkpoints and
stops for its time limit, and the threads it computes with (used by :func:`turnpike.solve_ocp`)."""
from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from . import _checks
from .backends._flat import ONE_THREAD_LAYER_WORK


def per_method(value, count, name):
    """``value`` as a list of one entry per method (a sequence must have ``count``; anything else is repeated)."""
    if isinstance(value, (list, tuple)):
        if len(value) != count:
            _checks.fail(name, f"{count} entries, one per method", value)
        return list(value)
    return [value] * count


class Signals:
    """SIGTERM and SIGINT (Ctrl-C) during a solve with a checkpoint: noted here and acted on at the next
    step boundary, where a checkpoint is written (a scheduler's pre-emption loses nothing). A second
    Ctrl-C raises KeyboardInterrupt at once. Installed in the main thread only (Python delivers
    signals there); :meth:`restore` puts the previous handlers back."""

    def __init__(self, active: bool):
        self.received = None           # the signal.Signals noted, if any
        self._previous = {}
        if active and threading.current_thread() is threading.main_thread():
            for number in (signal.SIGINT, signal.SIGTERM):
                self._previous[number] = signal.signal(number, self._note)

    def _note(self, number, frame) -> None:
        if self.received is not None and number == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signal.Signals(number)

    def restore(self) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)


@dataclass
class Checkpoints:
    """Where and when the loop checkpoints, and the time limit it checks just after each checkpoint."""

    path: object
    every: int
    time_limit: float | None
    called: float                  # perf_counter() when solve_ocp was called
    stopped_at: tuple | None = None  # (phase, step) of the checkpoint a stop was written at

    def due(self, step: int, first: int) -> bool:
        return self.path is not None and step > first and step % self.every == 0

    def time_is_up(self, backend) -> bool:
        # every rank alike: a rank that stops alone leaves the others waiting for it
        return self.time_limit is not None and backend.any_rank(time.perf_counter() - self.called > self.time_limit)


def checkpoint_plan(checkpoint, checkpoint_every, resume, time_limit, batch_size, count) -> Checkpoints:
    if checkpoint is not None and (not isinstance(checkpoint, (str, os.PathLike)) or Path(checkpoint).is_dir()):
        _checks.fail("checkpoint", "None or the path of a file (a string or pathlib.Path, not a folder)", checkpoint)
    per_epoch = 1 if batch_size is None else -(-count // batch_size)
    default = per_epoch if batch_size is not None else 100
    every = _checks.integer("checkpoint_every", default if checkpoint_every is None else checkpoint_every, minimum=1)
    if resume and checkpoint is None:
        _checks.fail("resume", "a checkpoint path to resume from (checkpoint=...)", resume)
    if time_limit is not None:
        time_limit = _checks.real("time_limit", time_limit, minimum=0.0)
        if checkpoint is None:
            _checks.fail("checkpoint", "a path with time_limit (the solve stops just after writing it)", None)
    return Checkpoints(checkpoint, every, time_limit, time.perf_counter())


class ThreadLimit:
    """``threads`` (None: no change) for torch's intra-op pool and for the BLAS library numpy calls,
    until :meth:`restore`. numpy's BLAS (OpenBLAS or MKL) keeps a pool of its own, all cores by
    default: without the limit the numpy sweep multiplied on two threads while told to use one (and
    against a one-thread baseline, 10-36% faster than it was entitled to at n = 64, h = 64-128).

    With ``numpy_sweep`` (J and ∇J in numpy, torch only for the optimiser step) torch gets one
    thread: both pools busy-wait between calls, and two of them on the same cores slowed each other
    down (n = 256, h = 8, batch 128, float64: 8.2 ms a step with both at two threads, 5.0 with
    torch at one and numpy's BLAS at two; n = h = 64, batch 512: 27 against 19 ms)."""

    def __init__(self, threads, *, numpy_sweep=False):
        self.previous, self._blas = torch.get_num_threads(), None
        if threads is None:
            return
        torch.set_num_threads(1 if numpy_sweep else threads)
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:      # an environment without it (the GPU image): numpy's BLAS as it is
            return
        self._blas = threadpool_limits(limits=threads, user_api="blas")

    def restore(self):
        torch.set_num_threads(self.previous)
        if self._blas is not None:
            self._blas.restore_original_limits()


def solve_threads(threads, layer_work):
    """Threads for the solve ("auto": one for overhead-bound small layers), or None (no change)."""
    if threads == "auto":
        return 1 if layer_work is not None and layer_work < ONE_THREAD_LAYER_WORK else None
    return None if threads is None else _checks.integer("threads", threads, minimum=1)
