"""One training run of a residual network with intermediate-output stage costs (``run_training``), shared by
``turnpike resnet54`` and ``turnpike train``: its run folder (contract, config, data fingerprint, log,
checkpoint, network, metrics, figures), the solve and, if asked, the fine-tuning of the pruned network. What
the run is given is a :class:`~turnpike.experiments.TrainingRecipe` (``_recipe.py``)."""
from __future__ import annotations

import time
from pathlib import Path

import torch

from .. import _checks
from .._distributed import is_main_process, world
from .._runs import claim_run_folder, holds_run, read_json, write_atomically, write_metrics, write_run_config
from .._solve import solve_ocp
from ..results import Status
from ._epoch_log import EPOCH_TEST_IMAGES, EpochLog, objective_history, output_test_metrics, tensorboard_writer
from ..data import normalise
from ._recipe import (RESUMABLE, RESUMABLE_STOPS, RUN_FILES, EvaluationBatches, TrainingRecipe, problem, sgd_options,
                      solve_settings)
from ._summary import finetune_pruned, summarise


def run_training(config: TrainingRecipe, out=None, *, plots: bool = True, resume: bool = False,
                 overwrite: bool = False, progress: bool = True, on_epoch=None) -> dict:
    """Train the network ``config`` describes, write its run folder ``out`` (none if None), return its metrics.

    Each epoch's log line (``log.jsonl``: objective, lr, the output's test loss and accuracy on up to
    :data:`EPOCH_TEST_IMAGES` test images and at most a twelfth of the training images' count, times) also goes to
    ``on_epoch(line)`` where given.
    A folder that holds a run is refused unless ``resume`` (continue it; every setting but
    :data:`RESUMABLE` must match) or ``overwrite`` (its run files are removed first)."""
    _checks.instance("config", config, TrainingRecipe, "a training config (ResNet54Config, TrainConfig)")
    command = config.command
    out = Path(out) if out is not None else None
    if resume and overwrite:
        _checks.fail("overwrite", "False with resume=True (continue the run or replace it, not both)", overwrite)
    if config.sync_batchnorm and world()[1] == 1:
        _checks.fail("sync_batchnorm", "it only inside a process group of several ranks (torchrun "
                     "--nproc-per-node K > 1)", "it in one process")
    continues = resume and out is not None and holds_run(out)     # config.json is written once, at the start
    created = out is not None and not out.exists()
    if out is not None and (is_main_process() or not overwrite):    # rank 0 alone removes an overwritten run's files
        claim_run_folder(out, config, command=command, resume=resume, overwrite=overwrite, resumable=RESUMABLE,
                         run_files=RUN_FILES, writes=is_main_process())
    started = time.perf_counter()              # the time limit covers training and fine-tuning
    try:
        data = config.load_data()
        if continues:         # the checkpoint replaces the initial weights: no weights file is read again
            net, started_from = config.build_network(data, initial_weights=False), _started_from(out)
        else:
            net, started_from = config.build_initial_network(data)
        net.check_outputs(_sample_inputs(data, net))
        ocp = problem(config, net, data)
    except BaseException:
        # data or model refused: a folder this run created stays no empty leftover that looks like a run
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        raise
    data_fingerprint = data.fingerprint()
    if continues:
        _check_same_data(out, data_fingerprint)
    settings = solve_settings(config, data)
    per_epoch = settings["checkpoint_every"]
    options = sgd_options(config, per_epoch)
    # under torchrun every rank trains its share of each batch, and only rank 0 writes the folder
    writes = out is not None and is_main_process()
    tensorboard = tensorboard_writer(out / "tensorboard") if writes and config.tensorboard else None
    log = None
    if writes:
        # a forward pass costs about a third of a training step's: a twelfth of the training images keeps it <= 3 %
        measure = output_test_metrics(EvaluationBatches(data, config.device, channels_last=config.channels_last),
                                      ocp.terminal_cost,
                                      limit=max(1, min(EPOCH_TEST_IMAGES, data.split_size("train") // 12)))
        log = EpochLog(out / "log.jsonl", options, config.epochs * per_epoch, per_epoch, data.split_size("train"),
                       resume, tensorboard, previous=objective_history(out / "checkpoint.pt") if resume else (),
                       measure=measure, on_epoch=on_epoch)
    if writes and not continues:
        write_run_config(out, config, command=command, parameters=net.parameter_count(), world_size=world()[1],
                         data_fingerprint=data_fingerprint)
    solution = solve_ocp(
        ocp, method="sgd", steps=config.epochs * per_epoch, options=options,
        checkpoint=out / "checkpoint.pt" if out is not None else None, resume=resume,
        time_limit=config.time_limit_s, progress=progress, callback=log, **settings)
    metrics = {**summarise(solution, config, data, per_epoch), **started_from}
    if config.finetune_epochs and metrics["pruned"] and solution.status not in RESUMABLE_STOPS:
        left = None if config.time_limit_s is None else max(0.0, config.time_limit_s - (time.perf_counter() - started))
        _, tuned = finetune_pruned(
            solution.prune(metrics["pruned"]["depth"]), config, data, out=out,   # every rank: the same checkpoints
            resume=resume, progress=progress, time_limit=left)
        metrics["pruned"]["finetuned"] = tuned
        if tuned["status"] in RESUMABLE_STOPS:    # the run is not finished: --resume continues the fine-tuning
            metrics["status"], metrics["signal"] = tuned["status"], tuned.get("signal")
            why = "at the time limit" if tuned["status"] == Status.TIME_LIMIT else f"by {tuned['signal']}"
            metrics["message"] = (f"fine-tuning stopped {why} after {tuned['epochs_done']} of "
                                  f"{tuned['epochs']} epochs; the same command with --resume continues it")
    if tensorboard is not None:
        for key in ("test_accuracy", "train_accuracy"):
            tensorboard.add_scalar(f"final/{key}", metrics[key], metrics["epochs_done"])
        for k, (loss, accuracy) in enumerate(zip(metrics["exit_test_loss"], metrics["exit_test_accuracy"])):
            tensorboard.add_scalar("exits/test_loss", loss, k)           # the curve of Fig. 2-3 over k
            tensorboard.add_scalar("exits/test_accuracy", accuracy, k)
        tensorboard.close()
    if writes:
        _save_network(out / "network.pt", solution.network, data)
        write_metrics(out, metrics, RUN_FILES)
        if plots:
            from ._conv_plots import resnet54_figures
            metrics["figures"] = [str(p) for p in resnet54_figures(metrics, out)]
            write_metrics(out, metrics, RUN_FILES)
    return metrics


def _check_same_data(out: Path, fingerprint: str) -> None:
    """A resumed run reads the images and labels it was trained on: ``--data`` may move (a folder copied
    elsewhere), its content may not (another folder of the same shape would train on other data)."""
    stored = read_json(out / "config.json", "the run's config.json").get("data_fingerprint")
    if stored is not None and stored != fingerprint:      # (runs written before it have none: not checked)
        raise ValueError(f"data_dir: expected the images and labels the run in {out} was trained on (fingerprint "
                         f"{stored}), got other data (fingerprint {fingerprint}): resume with the run's data, or "
                         "start a new run (another out folder, or overwrite)")


def _save_network(path, network, data) -> None:
    """The evaluated network (its exits' statistics recalibrated where they were not trained), atomically."""
    state = {"state_dict": network.state_dict(), "channels": data.channels, "num_classes": data.num_classes}
    write_atomically(path, lambda stream: torch.save(state, stream), "wb")


def _sample_inputs(data, net) -> torch.Tensor:
    """Two training images prepared as the network takes them, on its device (for its output check)."""
    images, _ = next(iter(data.batches("train", 2)))
    return normalise(images.to(next(net.parameters()).device), data.mean, data.std)


def _started_from(out: Path) -> dict:
    """What a resumed run started from, as its first part's metrics say (``{}`` where they do not)."""
    path = out / "metrics.json"
    stored = read_json(path, "the metrics of the run") if path.is_file() else {}
    return {"weights": stored["weights"]} if isinstance(stored, dict) and stored.get("weights") else {}
