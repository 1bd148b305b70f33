"""Figures of a ``turnpike hessian`` run: Fig. 4–7 of the Demystifying-ResNet paper."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ._plots import _pyplot, _save

_LABELS = {"xavier": "Xavier (linear)", "orthogonal": "orthogonal (linear)",
           "shortcut2": "2-shortcut (zero + 0.01·Xavier)", "shortcut1": "1-shortcut (zero + 0.01·Xavier)"}
_STYLE = {"xavier": "C0o-", "orthogonal": "C1s-", "shortcut2": "C2^-", "shortcut1": "C3v-"}


def initial_condition_figure(metrics: dict, path: Path) -> Path:
    """Fig. 4: initial condition number max|λ|/|λ|_(0.1) against depth, mean ± std over the draws."""
    plt = _pyplot()
    fig, axis = plt.subplots(figsize=(5.5, 4))
    for name, rows in metrics["initial_condition_number"].items():
        depth = [row["depth"] for row in rows]
        mean, std = np.array([row["mean"] for row in rows]), np.array([row["std"] for row in rows])
        axis.errorbar(depth, mean, yerr=std, fmt=_STYLE[name], capsize=3, label=_LABELS[name])
    axis.axhline(metrics["theorem2_condition_number"], color="C2", linestyle=":",
                 label="Theorem 2 at zero (exact cond)")
    axis.set_xscale("log", base=2)
    axis.set_yscale("log")
    axis.set_xlabel("depth (weight layers)")
    axis.set_ylabel("initial condition number  max|λ| / |λ|₍₀.₁₎")
    axis.legend(fontsize=8)
    return _save(fig, path)


def _interpolated(runs: list, key: str, grid: np.ndarray) -> np.ndarray:
    """Each run's ``key`` at the losses of ``grid`` (log-linear interpolation, NaN outside the run)."""
    curves = []
    for points in runs:
        loss = np.log10(np.maximum([p["excess_loss"] for p in points], 1e-300))
        order = np.argsort(loss)
        values = np.array([p[key] for p in points], dtype=float)[order]
        curves.append(np.interp(grid, loss[order], values, left=np.nan, right=np.nan))
    return np.array(curves)


def _run_mean(curves: np.ndarray) -> np.ndarray:
    """Mean over the runs that reach each loss (NaN where none does)."""
    defined = np.isfinite(curves).any(axis=0)
    mean = np.full(curves.shape[1], np.nan)
    mean[defined] = np.nanmean(curves[:, defined], axis=0)
    return mean


def _loss_grid(paths: dict) -> np.ndarray:
    losses = [p["excess_loss"] for path in paths.values() for run in path["runs"] for p in run]
    low, high = np.log10(max(min(losses), 1e-300)), np.log10(max(losses))
    return np.linspace(low, high, 40)


def spectrum_path_figure(metrics: dict, path: Path) -> Path:
    """Fig. 5: max|λ| and |λ|_(0.1) against the excess loss along training, mean over runs."""
    plt = _pyplot()
    paths = metrics["training_paths"]
    grid = _loss_grid(paths)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for axis, key, title in zip(axes, ("max_abs", "abs_p10"), ("max |λ|", "|λ|₍₀.₁₎ (10th percentile)")):
        for name, record in paths.items():
            axis.plot(10 ** grid, _run_mean(_interpolated(record["runs"], key, grid)), _STYLE[name][:2] + "-",
                      label=_LABELS[name])
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.invert_xaxis()         # training runs from left to right
        axis.set_xlabel("excess loss L − L*")
        axis.set_title(title)
    axes[0].legend(fontsize=8)
    return _save(fig, path)


def index_figure(metrics: dict, path: Path) -> Path:
    """Fig. 6: the index against the loss (left) and, for one 2-shortcut run, index and gradient norm by step."""
    plt = _pyplot()
    paths = metrics["training_paths"]
    grid = _loss_grid(paths)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    for name, record in paths.items():
        left.plot(10 ** grid, _run_mean(_interpolated(record["runs"], "index", grid)), _STYLE[name][:2] + "-",
                  label=_LABELS[name])
    left.set_xscale("log")
    left.invert_xaxis()
    left.set_xlabel("excess loss L − L*")
    left.set_ylabel("index (share of negative eigenvalues)")
    left.legend(fontsize=8)
    name = "shortcut2" if "shortcut2" in paths else next(iter(paths))
    run = paths[name]["runs"][0]
    steps = [p["step"] for p in run]
    right.plot(steps, [p["index"] for p in run], "C2^-", label="index")
    twin = right.twinx()
    twin.plot(steps, [p["gradient_norm"] for p in run], "C4o--", label="‖∇L‖")
    right.set_xscale("symlog", linthresh=1)
    right.legend(handles=right.get_lines() + twin.get_lines(), fontsize=8)
    right.set_xlabel("gradient-descent step")
    right.set_ylabel("index")
    twin.set_ylabel("gradient norm")
    right.set_title(f"{_LABELS[name]}, one run")
    return _save(fig, path)


def final_loss_figure(metrics: dict, path: Path) -> Path:
    """Fig. 7: log10 of the final excess loss at the best learning rate, and that rate, against depth."""
    plt = _pyplot()
    fig, (loss, rate) = plt.subplots(1, 2, figsize=(10, 3.8))
    for name, rows in metrics["final_excess_loss"].items():
        depth = [row["depth"] for row in rows]
        # no finite loss at any rate (every rate diverged; null in JSON): a gap in the curve
        finite = [row["excess_loss"] is not None and np.isfinite(row["excess_loss"]) for row in rows]
        # below 1e-12 the excess loss is round-off of L − L* (a one-unit 2-shortcut net solves it exactly)
        loss.plot(depth, [np.log10(max(row["excess_loss"], 1e-12)) if ok else np.nan for row, ok in zip(rows, finite)],
                  _STYLE[name], label=_LABELS[name])
        rate.plot(depth, [row["best_lr"] for row in rows], _STYLE[name], label=_LABELS[name])
    for axis in (loss, rate):
        axis.set_xscale("log", base=2)
        axis.set_xlabel("depth (weight layers)")
    loss.set_ylabel("log₁₀(final loss − optimal loss), floor −12")
    rate.set_yscale("log")
    rate.set_ylabel("best learning rate")
    loss.legend(fontsize=8)
    return _save(fig, path)


def hessian_figures(metrics: dict, out: Path) -> list[str]:
    out = Path(out)
    return [str(figure(metrics, out / name)) for figure, name in (
        (initial_condition_figure, "fig4_initial_condition.png"), (spectrum_path_figure, "fig5_spectrum_path.png"),
        (index_figure, "fig6_index.png"), (final_loss_figure, "fig7_final_loss.png"))]
