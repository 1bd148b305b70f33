"""What a finished training run reports: per-exit metrics, the turnpike, the pruned network's check and the
early-exit curve (``metrics.json``), and the fine-tuning of the pruned network."""
from __future__ import annotations

from pathlib import Path

import torch

from .._costs import CrossEntropy, InputPenalty
from .._ocp import OCP
from .._solve import solve_ocp
from ..backends import learning_rate
from ..systems._early_exit import early_exit_curve
from ._recipe import EARLY_EXIT_THRESHOLDS, RESUMABLE_STOPS, EvaluationBatches, TrainingRecipe, sgd_options, solve_settings


def summarise(solution, config, data, per_epoch) -> dict:
    train_loss = solution.loss_per_layer("train")
    eps = config.eps_fraction * max(float(train_loss[0] - train_loss.min()), 1e-12)
    layer = solution.turnpike_layer(eps)
    taken = steps_taken(solution)
    epochs = max(taken // per_epoch, 1)
    metrics = {
        "status": str(solution.status), "message": solution.message, "signal": solution.extra.get("signal"),
        "objective": solution.objective,
        "exit_train_loss": train_loss, "exit_test_loss": solution.loss_per_layer("test"),
        "exit_train_accuracy": solution.accuracy_per_layer("train"),
        "exit_test_accuracy": solution.accuracy_per_layer("test"),
        "output_residual_norms": solution.output_residual_norms,
        "branch_parameter_norms": solution.branch_parameter_norms,
        "test_accuracy": solution.accuracy("test"), "train_accuracy": solution.accuracy("train"),
        "parameters": solution.network.parameter_count(), "depth": solution.depth,
        "multiply_adds": solution.network.exit_costs(*data.image_size)["network"],   # per image
        "eps": eps, "turnpike_layer": layer,
        "pruned": _evaluate_pruned(solution, layer, data, config) if layer is not None else None,
        "train_time_s": solution.wall_time_s, "epoch_time_s": solution.wall_time_s / epochs,
        "images_per_s": epochs * data.split_size("train") / max(solution.wall_time_s, 1e-9),
        "epochs": config.epochs, "epochs_done": taken // per_epoch, "training_step": solution.extra["training_step"],
        **config.describe(), "dataset": data.name, "channels": data.channels, "flips": config.flips,
        "early_exit": _early_exit(solution.network, data, config),
    }
    return metrics


def _early_exit(network, data, config) -> dict:
    """Test accuracy against mean blocks executed and compute over ``EARLY_EXIT_THRESHOLDS`` (no timing)."""
    batches = EvaluationBatches(data, config.device, channels_last=config.channels_last)
    curve = early_exit_curve(network, batches, None, EARLY_EXIT_THRESHOLDS)
    return {key: curve[key] for key in ("thresholds", "accuracy", "mean_blocks", "mean_compute")}


def _evaluate_pruned(solution, depth, data, config) -> dict:
    """Test accuracy and size of the SubResNet-``depth`` cut at the turnpike."""
    sub = solution.prune(depth).to(config.device).eval()
    correct = 0
    with torch.no_grad():
        for images, labels in EvaluationBatches(data, config.device, channels_last=config.channels_last):
            correct += int((sub(images).argmax(-1).cpu() == labels).sum())
    return {"depth": depth, "test_accuracy": correct / data.split_size("test"), "parameters": sub.parameter_count(),
            "multiply_adds": sub.exit_costs(*data.image_size)["network"]}


def steps_taken(solution) -> int:
    """The optimiser steps a solve took: a stop at a checkpoint evaluated (not updated) the next epoch's first."""
    return len(solution.history["step"]) - (solution.status in RESUMABLE_STOPS)


def finetune_pruned(network, config: TrainingRecipe, data, *, out=None, resume=False, progress=False,
                    time_limit=None) -> tuple:
    """Train a pruned SubResNet ``config.finetune_epochs`` more epochs: plain cross-entropy and the run's
    weight decay (standard training, Definition 1's objective), at the run's last learning rate, with
    the run's batches and augmentation. Returns (the network, {"epochs", "lr", "test_accuracy", "status",
    "epochs_done"}); ``time_limit`` (seconds) stops it at the first epoch end past it (status "time_limit").

    Pruning at the turnpike drops the blocks whose residuals are small but not zero; a few epochs let
    the kept blocks and the head absorb what they contributed (the outlook of the 2025 paper, Sec. 3).
    ``out``: the run folder, which receives ``finetune_checkpoint.pt`` (``resume`` continues it).
    """
    settings = {**solve_settings(config, data), "seed": config.seed + 1}
    per_epoch = settings["checkpoint_every"]
    steps = config.epochs * per_epoch          # the run's schedule at its last step (milestones past it never applied)
    lr = learning_rate(sgd_options(config, per_epoch), steps - 1, steps)
    loss = CrossEntropy(num_classes=data.num_classes)
    ocp = OCP(network.train(), *data.inputs("train"), stage_cost=InputPenalty(config.weight_decay / 2),
              terminal_cost=loss)
    solution = solve_ocp(
        ocp, method="sgd", steps=config.finetune_epochs * per_epoch, options={"lr": lr, "momentum": config.momentum},
        checkpoint=Path(out) / "finetune_checkpoint.pt" if out is not None else None, resume=resume,
        time_limit=time_limit, progress=progress, **settings)
    return solution.network, {"epochs": config.finetune_epochs, "lr": lr, "test_accuracy": solution.accuracy("test"),
                              "status": str(solution.status), "signal": solution.extra.get("signal"),
                              "epochs_done": steps_taken(solution) // per_epoch}
