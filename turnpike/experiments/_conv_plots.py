"""Figures of a `resnet54` or `train` run and of a study: Fig. 2/3 (per-exit loss and accuracy), Fig. 4/5
(residuals, norms) and the early-exit curve."""
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
    for axis, name in ((loss, r"loss $L(\hat y_k)$"), (accuracy, r"accuracy of $\hat y_k$")):
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
    residual.semilogy(blocks, np.maximum(metrics["output_residual_norms"], 1e-12), "C2-",
                      label=r"$\|\hat y_{k+1} - \hat y_k\|$ (RMS over test images)")
    residual.set_ylabel("output residual")
    norms.plot(blocks, metrics["branch_parameter_norms"], "C3-", label=r"$\|w_{F,k}\|$ (all of branch $k$)")
    norms.set_ylabel("branch parameter norm")
    for axis in (residual, norms):
        _mark_pruned(axis, metrics)
        axis.set_xlabel("block k")
        axis.legend(fontsize=8)
    fig.suptitle(f"{metrics['dataset']}, {metrics['variant']} (N = {metrics['depth']}): what each block changes")
    return _save(fig, path)


def resnet54_figures(metrics: dict, out: Path) -> list[Path]:
    out = Path(out)
    return [exit_figure(metrics, out / "exits.png"), residual_figure(metrics, out / "residuals.png")]


def early_exit_figure(curve: dict, metrics: dict, others: list, path: Path, *, network_cost: float) -> Path:
    """Test accuracy against mean blocks executed (left) and against multiply-adds per image (right):
    the early-exit curve over τ, the run's pruned SubResNet and other runs as points (those whose
    metrics hold ``multiply_adds`` on the right). ``network_cost``: the plain network's multiply-adds."""
    plt = _pyplot()
    fig, (by_blocks, by_compute) = plt.subplots(1, 2, figsize=(11, 4))
    compute = [fraction * network_cost / 1e6 for fraction in curve["mean_compute"]]
    for axis, xs in ((by_blocks, curve["mean_blocks"]), (by_compute, compute)):
        axis.plot(xs, curve["accuracy"], "C0o-", label=f"early exit, {metrics['variant']}")
        for x, accuracy, label in threshold_labels(xs, curve["accuracy"], curve["thresholds"]):
            axis.annotate(label, (x, accuracy), textcoords="offset points", xytext=(4, -10), fontsize=7)
    pruned = metrics.get("pruned")
    points = ([(f"SubResNet-{pruned['depth']} (pruned)", pruned, "C3s")] if pruned else []) + \
        [(name, other, f"C{index + 4}^") for index, (name, other) in enumerate(others)]
    for label, point, style in points:
        by_blocks.plot([point["depth"]], [point["test_accuracy"]], style, label=label)
        if "multiply_adds" in point:
            by_compute.plot([point["multiply_adds"] / 1e6], [point["test_accuracy"]], style, label=label)
    by_blocks.set_xlabel("mean residual blocks executed")
    by_compute.set_xlabel("mean multiply-adds per image (millions)")
    for axis in (by_blocks, by_compute):
        axis.set_ylabel("test accuracy")
        axis.legend(fontsize=8)
    fig.suptitle(f"{metrics['dataset']}: early exit of {_network(metrics)}")
    return _save(fig, path)


def threshold_labels(xs, ys, thresholds, *, apart: float = 0.04) -> list:
    """(x, y, "τ=…") for the points of a curve, one label for each run of consecutive points that lie within
    ``apart`` of the axes' ranges of each other ("τ=0.9–0.99"), so that no two labels print over each other."""
    span_x = (max(xs) - min(xs)) or 1.0
    span_y = (max(ys) - min(ys)) or 1.0
    groups = []
    for x, y, tau in zip(xs, ys, thresholds):
        last = groups[-1] if groups else None
        if last and abs(x - last[0]) <= apart * span_x and abs(y - last[1]) <= apart * span_y:
            last[3] = tau
        else:
            groups.append([x, y, tau, tau])
    return [(x, y, f"τ={first:g}" if first == last else f"τ={first:g}–{last:g}") for x, y, first, last in groups]


def study_figures(runs: dict, out: Path) -> list[Path]:
    """The comparison of a study's runs (``{name: metrics}``): per-exit loss and accuracy of the ResNet-N
    runs with the SubResNet-M runs as points (Figs. 2–3), their residuals and branch norms (Figs. 4–5),
    and each stage-cost run's early-exit curve with the other runs as points."""
    out = Path(out)
    depth = max(m["depth"] for m in runs.values())
    full_depth = {name: m for name, m in runs.items() if m["depth"] == depth}
    shallower = {name: m for name, m in runs.items() if m["depth"] < depth}
    paths = [_study_exits(full_depth, shallower, out / "study_exits.png"),
             _study_residuals(full_depth, out / "study_residuals.png")]
    for name, metrics in full_depth.items():
        if metrics["variant"] != "standard" and metrics.get("early_exit"):
            others = [(other, m) for other, m in runs.items() if other != name]
            paths.append(early_exit_figure(metrics["early_exit"], metrics, others, out / f"study_early_exit_{name}.png",
                                           network_cost=metrics["multiply_adds"]))
    return paths


def _network(metrics: dict) -> str:
    """"resnet18 (N = 8)" for a `train` run's model, "ResNet-54" for the paper's network."""
    if metrics.get("model"):
        return f"{metrics['model'].rpartition(':')[2]} (N = {metrics['depth']})"
    return f"ResNet-{metrics['depth']}"


def _study_exits(runs: dict, subresnets: dict, path: Path) -> Path:
    plt = _pyplot()
    fig, (loss, accuracy) = plt.subplots(1, 2, figsize=(11, 4))
    for index, (name, m) in enumerate(runs.items()):
        blocks = np.arange(len(m["exit_test_loss"]))
        loss.plot(blocks, m["exit_train_loss"], f"C{index}--", linewidth=1)
        loss.plot(blocks, m["exit_test_loss"], f"C{index}-", label=name)
        accuracy.plot(blocks, m["exit_test_accuracy"], f"C{index}-", label=name)
    for index, (name, m) in enumerate(subresnets.items()):
        style = f"C{index + len(runs)}^"
        loss.plot([m["depth"]], [m["exit_test_loss"][-1]], style, label=f"{name} (from scratch)")
        accuracy.plot([m["depth"]], [m["test_accuracy"]], style, label=f"{name} (from scratch)")
    for axis, label in ((loss, "loss L(ŷ_k) (test solid, train dashed)"), (accuracy, "test accuracy of ŷ_k")):
        axis.set_xlabel("exit k (residual blocks)")
        axis.set_ylabel(label)
        axis.legend(fontsize=8)
    first = next(iter(runs.values()))
    fig.suptitle(f"{first['dataset']}: exits of {_network(first)} (Figs. 2-3 of the 2025 paper)")
    return _save(fig, path)


def _study_residuals(runs: dict, path: Path) -> Path:
    plt = _pyplot()
    fig, (residual, norms) = plt.subplots(1, 2, figsize=(11, 4))
    for index, (name, m) in enumerate(runs.items()):
        blocks = np.arange(len(m["output_residual_norms"]))
        residual.semilogy(blocks, np.maximum(m["output_residual_norms"], 1e-12), f"C{index}-", label=name)
        norms.plot(blocks, m["branch_parameter_norms"], f"C{index}-", label=name)
    residual.set_ylabel("‖ŷ_{k+1} − ŷ_k‖ (RMS, test)")
    norms.set_ylabel("‖w_F,k‖")
    for axis in (residual, norms):
        axis.set_xlabel("block k")
        axis.legend(fontsize=8)
    fig.suptitle("output residuals and branch norms (Figs. 4-5 of the 2025 paper)")
    return _save(fig, path)
