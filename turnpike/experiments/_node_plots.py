"""Figures of the neural-ODE run: state trajectories over t, distance to X*_y, μ[Θ_ε,T] against T."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ._plots import CLASS_COLOURS, _pyplot, _save


def trajectories_over_time_figure(solutions: dict, path: Path, resolution: int, per_class: int = 30) -> Path:
    """Both state components over t ∈ [0, T], one row per horizon, coloured by class."""
    plt = _pyplot()
    horizons = list(solutions)
    fig, axes = plt.subplots(len(horizons), 2, figsize=(10, 2.4 * len(horizons)), squeeze=False)
    for row, horizon in enumerate(horizons):
        solution = solutions[horizon]
        times = solution.system.dense_times(resolution)
        labels = solution.ocp.labels
        chosen = np.concatenate([
            members[np.linspace(0, members.size - 1, min(per_class, members.size)).astype(int)]
            for members in (np.flatnonzero(labels == c) for c in (0, 1))])
        states = solution.system.rollout(solution.controls, solution.ocp.inputs[chosen], times)
        for component in (0, 1):
            ax = axes[row, component]
            for c in (0, 1):
                ax.plot(times, states[:, labels[chosen] == c, component], color=CLASS_COLOURS[c], lw=0.6,
                        alpha=0.6)
            ax.set_ylabel(f"$x_{component + 1}(t)$, T={horizon:g}")
            ax.grid(alpha=0.3)
        axes[row, 0].set_xlim(0, horizon)
        axes[row, 1].set_xlim(0, horizon)
    for ax in axes[-1]:
        ax.set_xlabel("t")
    fig.suptitle("Neural-ODE state trajectories (blue: class 0, red: class 1)")
    return _save(fig, path)


def distance_over_time_figure(metrics: dict, path: Path) -> Path:
    """RMS distance to X*_y over t for every horizon, with ε."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.8))
    for key, m in metrics["per_horizon"].items():
        ax.semilogy(m["times"], m["distance_over_time"], label=f"T = {key} (μ[Θ] = {m['theta_measure']:.2f})")
    ax.axhline(metrics["eps"], color="k", lw=0.8, ls="--", label=f"ε = {metrics['eps']:.3g}")
    ax.set_xlabel("t")
    ax.set_ylabel("RMS dist$(x(t), X^*_y)$")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    return _save(fig, path)


def measure_figure(metrics: dict, path: Path) -> Path:
    """μ[Θ_ε,T] and T − μ[Θ_ε,T] against T (Prop. 16: the first stays bounded)."""
    plt = _pyplot()
    horizons = np.array(metrics["horizons"], dtype=float)
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ax.plot(horizons, metrics["theta_measure"], "o-", label=r"$\mu[\Theta_{\varepsilon,T}]$ (away from turnpike)")
    ax.plot(horizons, metrics["time_near_turnpike"], "s-", label=r"$T-\mu[\Theta_{\varepsilon,T}]$ (near turnpike)")
    ax.set_xlabel("horizon T")
    ax.set_ylabel("time")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"Measure turnpike, ε = {metrics['eps']:.3g}")
    return _save(fig, path)


def node_figures(solutions: dict, metrics: dict, out: Path, resolution: int) -> list[Path]:
    return [trajectories_over_time_figure(solutions, out / "node_trajectories.png", resolution),
            distance_over_time_figure(metrics, out / "node_distance.png"),
            measure_figure(metrics, out / "node_measure.png")]
