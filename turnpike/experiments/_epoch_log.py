"""The per-epoch log of a training run: ``log.jsonl`` (and TensorBoard scalars), fed by the solver's callback."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from .. import _checks
from .._runs import write_atomically
from ..backends import learning_rate


def tensorboard_writer(folder: Path):
    """``torch.utils.tensorboard.SummaryWriter`` on ``folder``; a clear error without the package."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        _checks.fail("tensorboard", "the tensorboard package installed (pip install tensorboard)",
                     "it missing (the per-epoch log.jsonl is written without it)")
    return SummaryWriter(log_dir=str(folder))


class EpochLog:
    """Per-epoch JSON lines (objective, lr, time, images/s) from the solver's callback, and the
    same scalars to TensorBoard when a writer is given.

    One line per epoch, also across stops: a resumed run repeats the steps after its checkpoint, so
    an epoch logged before the stop is logged again and its new line replaces the old one (the file is
    rewritten atomically). ``previous`` is the checkpoint's J history: when a stop split an epoch,
    the J of its steps before the stop come from there, so its mean is the uninterrupted run's."""

    def __init__(self, path: Path, options: dict, steps: int, per_epoch: int, count: int, resume: bool,
                 tensorboard=None, previous=()):
        self.path, self.options, self.steps, self.per_epoch, self.count = path, options, steps, per_epoch, count
        self.tensorboard, self.previous = tensorboard, list(previous)
        if not resume and path.exists():
            path.unlink()
        self.values, self.started = [], time.perf_counter()

    def __call__(self, step, value, module) -> None:
        if not self.values and step % self.per_epoch:       # resumed inside an epoch: its earlier steps' J
            self.values = self.previous[step - step % self.per_epoch:step]
        self.values.append(value)
        if (step + 1) % self.per_epoch:
            return
        seconds = time.perf_counter() - self.started
        epoch = (step + 1) // self.per_epoch
        line = {"epoch": epoch, "step": step + 1, "objective": float(np.mean(self.values)),
                "lr": learning_rate(self.options, step, self.steps),     # the lr of the epoch's last step
                "epoch_time_s": seconds, "images_per_s": self.count / seconds}
        kept = [text for text in (self.path.read_text().splitlines() if self.path.exists() else [])
                if json.loads(text)["epoch"] < epoch]
        write_atomically(self.path, lambda stream: stream.write("".join(f"{text}\n" for text in
                                                                       [*kept, json.dumps(line)])), "w")
        if self.tensorboard is not None:
            for key in ("objective", "lr", "epoch_time_s", "images_per_s"):
                self.tensorboard.add_scalar(f"train/{key}", line[key], epoch)
            self.tensorboard.flush()
        self.values, self.started = [], time.perf_counter()


def objective_history(checkpoint: Path) -> list:
    """J of every step before a run's checkpoint (empty without one; an unreadable one too: the solve's resume
    then says what is wrong with it)."""
    from ..backends import ModuleBackend

    if not Path(checkpoint).is_file():
        return []
    try:
        return list(ModuleBackend.read_history(checkpoint)["objective"])
    except ValueError:
        return []
