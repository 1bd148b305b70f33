"""Figures of a run (matplotlib, written to files; nothing is shown on screen)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

CLASS_COLOURS = ("#1f77b4", "#d62728")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path: Path) -> Path:
    from .._runs import write_atomically

    fig.tight_layout()
    # atomically, as every file of a run folder: a killed run leaves the old figure or the new one
    write_atomically(path, lambda stream: fig.savefig(stream, dpi=130, format=Path(path).suffix[1:] or "png"), "wb")
    _pyplot().close(fig)
    return path


def dataset_figure(solution, path: Path) -> Path:
    """Fig. 2: the training and test samples."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.6, 4.4))
    for split, marker, alpha in (("train", "o", 0.9), ("test", "x", 0.45)):
        states, labels = solution._split(split)
        for c in (0, 1):
            pts = states[0][labels == c]
            ax.scatter(pts[:, 0], pts[:, 1], s=9, marker=marker, alpha=alpha, color=CLASS_COLOURS[c],
                       label=f"class {c} ({split})")
    ax.set_aspect("equal")
    ax.set_title("Two spirals data set")
    ax.legend(fontsize=7, loc="upper right")
    return _save(fig, path)


def trajectories_figure(solution, path: Path, *, per_class: int = 40) -> Path:
    """Fig. 3: both state components over the layers, coloured by class."""
    plt = _pyplot()
    states, labels = solution.train_states, solution.ocp.labels
    layers = np.arange(states.shape[0])
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharex=True)
    for c in (0, 1):
        members = np.flatnonzero(labels == c)
        chosen = members[np.linspace(0, members.size - 1, min(per_class, members.size)).astype(int)]
        for component, ax in enumerate(axes):
            ax.plot(layers, states[:, chosen, component], color=CLASS_COLOURS[c], lw=0.7, alpha=0.6)
    for component, ax in enumerate(axes):
        ax.set_xlabel("layer k")
        ax.set_ylabel(f"$x_{{k,{component + 1}}}$")
        ax.grid(alpha=0.3)
    fig.suptitle("State trajectories over the layers (blue: class 0, red: class 1)")
    return _save(fig, path)


def final_states_figure(solution, path: Path) -> Path:
    """Fig. 4: final states and the two minimiser lines X*_0, X*_1."""
    plt = _pyplot()
    soft = solution.ocp.soft_cross_entropy()
    final, labels = solution.train_states[-1], solution.ocp.labels
    fig, ax = plt.subplots(figsize=(4.8, 4.6))
    lo, hi = final.min() - 1.0, final.max() + 1.0
    grid = np.linspace(lo, hi, 2)
    delta = soft.offset
    # X*_0: x_2 = x_1 + δ;  X*_1: x_1 = x_2 + δ
    ax.plot(grid, grid + delta, color=CLASS_COLOURS[0], lw=1.2, label="$X^*_0$")
    ax.plot(grid + delta, grid, color=CLASS_COLOURS[1], lw=1.2, label="$X^*_1$")
    for c in (0, 1):
        pts = final[labels == c]
        ax.scatter(pts[:, 0], pts[:, 1], s=8, alpha=0.7, color=CLASS_COLOURS[c])
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_aspect("equal")
    ax.set_xlabel("$x_{N,1}$")
    ax.set_ylabel("$x_{N,2}$")
    ax.set_title(f"Final states and minimiser lines (δ = {delta:.3f})")
    ax.legend(fontsize=8)
    return _save(fig, path)


def layer_profile_figure(solutions: dict, eps: float, path: Path) -> Path:
    """Stage cost, distance to X*_y and ‖u_k‖ over the layers, with and without stage cost."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    styles = {"stage_cost": ("with soft-CE stage cost", "C0"), "baseline": ("without (baseline)", "C1")}
    for key, solution in solutions.items():
        label, colour = styles[key]
        layers = np.arange(solution.depth + 1)
        axes[0].semilogy(layers, solution.loss_per_layer("train"), color=colour, label=f"{label}, train")
        axes[0].semilogy(layers, solution.loss_per_layer("test"), color=colour, ls="--", label=f"{label}, test")
        axes[1].semilogy(layers, solution.distance_to_turnpike("train"), color=colour, label=label)
        axes[2].semilogy(np.arange(solution.depth), solution.control_norms(), color=colour, marker=".",
                         label=label)
        turnpike = solution.turnpike_layer(eps)
        if key == "stage_cost" and turnpike is not None:
            for ax in axes:
                ax.axvline(turnpike, color="grey", lw=0.8, ls=":")
    axes[1].axhline(eps, color="k", lw=0.8, ls="--", label=f"ε = {eps:.3g}")
    axes[0].set_title("soft cross-entropy per layer")
    axes[1].set_title("RMS distance to $X^*_y$")
    axes[2].set_title("control norm $\\|u_k\\|$")
    for ax in axes:
        ax.set_xlabel("layer k")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    return _save(fig, path)


def spirals_figures(solutions: dict, eps: float, out: Path) -> list[Path]:
    main = solutions["stage_cost"]
    paths = [dataset_figure(main, out / "fig2_dataset.png"),
             trajectories_figure(main, out / "fig3_trajectories.png"),
             final_states_figure(main, out / "fig4_final_states.png"),
             layer_profile_figure(solutions, eps, out / "layer_profiles.png")]
    if "baseline" in solutions:
        paths.append(trajectories_figure(solutions["baseline"], out / "baseline_trajectories.png"))
    return paths


def mnist_figure(metrics: dict, path: Path) -> Path:
    """Fig. 5: loss over the layers, linear and log scale; train solid, test dashed."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    baselines = metrics.get("baselines", {})
    colours = plt.cm.viridis(np.linspace(0.1, 0.9, max(1, len(baselines))))
    for ax, scale in zip(axes, ("linear", "log")):
        for colour, (depth, base) in zip(colours, baselines.items()):
            layers = np.arange(len(base["train_loss_per_layer"]))
            ax.plot(layers, base["train_loss_per_layer"], color=colour, lw=1.0, label=f"baseline N={depth}")
            ax.plot(layers, base["test_loss_per_layer"], color=colour, lw=1.0, ls="--")
        layers = np.arange(len(metrics["train_loss_per_layer"]))
        ax.plot(layers, metrics["train_loss_per_layer"], color="C3", lw=2.0, label="soft-CE stage cost")
        ax.plot(layers, metrics["test_loss_per_layer"], color="C3", lw=2.0, ls="--")
        if metrics.get("turnpike_layer") is not None:
            ax.axvline(metrics["turnpike_layer"], color="grey", ls=":", lw=1.0, label="turnpike layer")
        ax.set_yscale(scale)
        ax.set_xlabel("layer k")
        ax.set_ylabel("soft cross-entropy")
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=7)
    axes[0].set_title("loss over the layers (train solid, test dashed)")
    axes[1].set_title("log scale")
    return _save(fig, path)
