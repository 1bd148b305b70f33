"""Figures of a ResNet-54 run: Fig. 2/3 (per-exit loss and accuracy) and Fig. 4/5 (residuals, norms)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ._plots import _pyplot, _save


def _mark_pruned(axis, metrics) -> None:
    pruned = metrics.get("pruned")
    if pruned:
        axis.axvline(pruned["depth"], color="0.5", linestyle=":", label=f"SubResNet-{pruned['depth']} (turnpike)")


def exit_figure(metrics: dict, path: Path) -> Path:
    """Per-exit loss (train dashed, test solid) and accuracy over the blocks k = 0..N (Fig. 2/3)."""
    plt = _pyplot()
    fig, (loss, accuracy) = plt.subplots(1, 2, figsize=(10, 3.8))
    blocks = np.arange(len(metrics["exit_train_loss"]))
    loss.plot(blocks, metrics["exit_train_loss"], "C0--", label="train")
    loss.plot(blocks, metrics["exit_test_loss"], "C0-", label="test")
    accuracy.plot(blocks, metrics["exit_train_accuracy"], "C1--", label="train")
    accuracy.plot(blocks, metrics["exit_test_accuracy"], "C1-", label="test")
    for axis, name in ((loss, "loss L(ŷ_k)"), (accuracy, "accuracy of ŷ_k")):
        _mark_pruned(axis, metrics)
        axis.set_xlabel("exit k (residual blocks)")
        axis.set_ylabel(name)
        axis.legend()
    fig.suptitle(f"{metrics['dataset']}, {metrics['variant']} (N = {metrics['depth']})")
    return _save(fig, path)


def residual_figure(metrics: dict, path: Path) -> Path:
    """Output residuals ‖ŷ_{k+1} − ŷ_k‖ and branch norms ‖w_F,k‖ over the blocks (Fig. 4/5)."""
    plt = _pyplot()
    fig, (residual, norms) = plt.subplots(1, 2, figsize=(10, 3.8))
    blocks = np.arange(len(metrics["output_residual_norms"]))
    residual.semilogy(blocks, np.maximum(metrics["output_residual_norms"], 1e-12), "C2-")
    residual.set_ylabel("‖ŷ_{k+1} − ŷ_k‖ (RMS, test)")
    norms.plot(blocks, metrics["branch_parameter_norms"], "C3-")
    norms.set_ylabel("‖w_F,k‖")
    for axis in (residual, norms):
        _mark_pruned(axis, metrics)
        axis.set_xlabel("block k")
    return _save(fig, path)


def resnet54_figures(metrics: dict, out: Path) -> list[Path]:
    out = Path(out)
    return [exit_figure(metrics, out / "exits.png"), residual_figure(metrics, out / "residuals.png")]
