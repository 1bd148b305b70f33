"""The per-epoch log of a training run: ``log.jsonl`` (and TensorBoard scalars), fed by the solver's callback."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

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


#: test images the per-epoch line evaluates the output on (the whole test set is the run's metrics' business)
EPOCH_TEST_IMAGES = 1000


def output_test_metrics(batches, cost, limit: int = EPOCH_TEST_IMAGES):
    """``measure(module) -> {"test_loss", "test_accuracy"}``: the output's mean loss by ``cost`` (the OCP's terminal
    cost, as the solution's per-exit losses) and its accuracy on the first ``limit`` images of ``batches``
    ((prepared images, labels) pairs), in eval mode without gradient; the module's mode, parameters and
    statistics are as they were afterwards."""

    def measure(module) -> dict:
        was_training = module.training
        loss, correct, total = 0.0, 0, 0
        try:
            module.eval()
            with torch.no_grad():
                for images, labels in batches:
                    logits = module(images[:limit - total]).float()
                    labels = labels[:limit - total].to(logits.device)
                    loss += float(cost.state_per_sample(logits, labels).sum())
                    correct += int((logits.argmax(-1) == labels).sum())
                    total += len(labels)
                    if total >= limit:
                        break
        finally:
            module.train(was_training)
        return {"test_loss": loss / max(total, 1), "test_accuracy": correct / max(total, 1)}

    return measure


class EpochLog:
    """Per-epoch JSON lines (objective, lr, time, images/s and, with ``measure``, the output's test loss and
    accuracy on up to :data:`EPOCH_TEST_IMAGES` test images) from the solver's callback, the same scalars to
    TensorBoard when a writer is given, and each line to ``on_epoch`` (the command line prints it).

    One line per epoch, also across stops: a resumed run repeats the steps after its checkpoint, so
    an epoch logged before the stop is logged again and its new line replaces the old one (the file is
    rewritten atomically). ``previous`` is the checkpoint's J history: when a stop split an epoch,
    the J of its steps before the stop come from there, so its mean is the uninterrupted run's."""

    def __init__(self, path: Path, options: dict, steps: int, per_epoch: int, count: int, resume: bool,
                 tensorboard=None, previous=(), measure=None, on_epoch=None):
        self.path, self.options, self.steps, self.per_epoch, self.count = path, options, steps, per_epoch, count
        self.tensorboard, self.previous, self.measure, self.on_epoch = tensorboard, list(previous), measure, on_epoch
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
        if self.measure is not None:      # the network after the epoch's last backward pass, before its update
            measured = time.perf_counter()
            line.update(self.measure(module))
            line["test_time_s"] = time.perf_counter() - measured
        kept = [text for text in (self.path.read_text().splitlines() if self.path.exists() else [])
                if json.loads(text)["epoch"] < epoch]
        write_atomically(self.path, lambda stream: stream.write("".join(f"{text}\n" for text in
                                                                       [*kept, json.dumps(line)])), "w")
        if self.tensorboard is not None:
            for key in ("objective", "lr", "epoch_time_s", "images_per_s", "test_loss", "test_accuracy"):
                if key in line:
                    self.tensorboard.add_scalar(f"train/{key}", line[key], epoch)
            self.tensorboard.flush()
        if self.on_epoch is not None:
            self.on_epoch({**line, "epochs": self.steps // self.per_epoch})
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
