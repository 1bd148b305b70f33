r"""The Demystifying-ResNet experiments (Li et al., Sec. 5, App. B): the Hessian from zero to the minimum.

Data (App. B): MNIST (the embedded 4,000-image training subset, or Fashion-MNIST's 60,000)
whitened to its 10 leading principal components, one-hot targets; loss
:math:`L = \frac1{2m}\sum_μ\|f(x^μ) - y^μ\|^2`. Networks are square (10×10 layers, no biases);
each *family* is a network kind with its initialisation:

- ``xavier``: plain linear network, Xavier initialisation;
- ``orthogonal``: plain linear network, orthogonal initialisation;
- ``shortcut2``: 2-shortcut linear network, zero plus a small perturbation (Xavier × 0.01);
- ``shortcut1``: 1-shortcut linear network, the same perturbation (optional).

All of them are linear in the input, so every loss, gradient and Hessian is evaluated on the
exact d-row summary of the data (:func:`turnpike.theory.least_squares_summary`): the cost of a
step does not grow with m, and the excess loss L − L* over the least-squares optimum is the
summary's objective itself. The run computes

1. Fig. 4: the Hessian's condition number at initialisation against depth (``--runs`` draws);
2. Fig. 7: the final excess loss after ``steps`` of gradient descent at the best learning rate
   of a log grid, against depth (and that learning rate);
3. Fig. 5–6: along training at depth ``path_depth``: max|λ|, |λ|_(0.1), the index and the
   gradient norm, against the loss.

The condition number plotted is App. B's robust one, max|λ|/|λ|_(0.1): the exact one is
dominated by round-off for plain networks, whose Hessian is singular (both are in metrics.json).
Each finished piece of work is kept in ``partial.json``; a killed run restarted with the same
config and ``resume=True`` redoes only what is missing.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .. import _checks
from .._runs import claim_run_folder, holds_run, write_json, write_metrics, write_run_config
from ..backends import autograd_objective
from .._solve import solve_ocp
from ..data import DATASETS, load_raw_images, whitened_regression_data
from ..systems._shortcut import ShortcutNetwork
from ..theory import HessianSpectrum, hessian, least_squares_summary, regression_ocp, theorem2_condition_number


@dataclass(frozen=True)
class Family:
    """A network kind of the comparison: shortcut depth (0: plain, layers paired) and initialisation."""

    shortcut_depth: int
    initialisation: str
    perturbed: bool          # scaled by the config's ``perturbation`` (zero plus a small perturbation)

    def system(self, depth: int, width: int) -> ShortcutNetwork:
        """The network with ``depth`` weight layers."""
        per_unit = self.shortcut_depth or 1
        return ShortcutNetwork(state_dim=width, units=depth // per_unit, shortcut_depth=per_unit,
                               shortcut=self.shortcut_depth > 0, initialisation=self.initialisation)


FAMILIES = {
    "xavier": Family(0, "xavier", False),
    "orthogonal": Family(0, "orthogonal", False),
    "shortcut2": Family(2, "xavier", True),
    "shortcut1": Family(1, "xavier", True),
}


@dataclass
class HessianConfig:
    dataset: str = "mnist"                        # mnist (embedded subset) | fashion-mnist
    data_dir: str | None = None
    components: int = 10                          # principal components kept = state width
    families: tuple = ("xavier", "orthogonal", "shortcut2")
    depths: tuple = (2, 4, 8, 16, 32)             # weight layers
    runs: int = 5                                 # initial draws per (family, depth) for Fig. 4
    train_runs: int = 3                           # training runs per (family, depth, learning rate)
    steps: int = 500                              # gradient-descent steps (full batch)
    learning_rates: tuple = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
    perturbation: float = 0.01                    # Xavier × this for the perturbed families
    path_depth: int = 16                          # Fig. 5–6
    path_points: int = 12                         # Hessians along each training path (log-spaced steps)
    seed: int = 0
    # torch threads (eigensolver included): one thread is 4× faster than two on a 2-core
    # machine with any other load (1.7 s vs 7.8 s for 3,200 × 3,200), and the networks are tiny
    threads: int = 1

    def __post_init__(self):
        _checks.choice("dataset", self.dataset, DATASETS)
        for name in self.families:
            _checks.choice("families", name, FAMILIES)
        for name in ("components", "runs", "train_runs", "steps", "path_points", "path_depth", "threads"):
            _checks.integer(name, getattr(self, name), minimum=1)
        self.depths = tuple(_checks.integer("depths", depth, minimum=1) for depth in self.depths)
        self.families, self.learning_rates = tuple(self.families), tuple(self.learning_rates)
        for family in self.families:
            per_unit = FAMILIES[family].shortcut_depth or 2    # plain networks pair their layers
            for name, depth in (*(("depths", d) for d in self.depths), ("path_depth", self.path_depth)):
                if depth % per_unit:
                    _checks.fail(name, f"multiples of {per_unit} for family {family!r}", depth)
        for rate in self.learning_rates:
            _checks.real("learning_rates", rate, minimum=0.0, strict_min=True)
        _checks.real("perturbation", self.perturbation, minimum=0.0)


def _draw(config, family_name: str, depth: int, run: int):
    """(system, θ_0) of one draw: the seed depends on (seed, family, depth, run) only."""
    family = FAMILIES[family_name]
    system = family.system(depth, config.components)
    stream = np.random.default_rng([config.seed, list(FAMILIES).index(family_name), depth, run])
    return system, system.initial_controls(stream, config.perturbation if family.perturbed else 1.0)


class _Partial:
    """Finished pieces of work, saved after each one (``partial.json``) so a killed run resumes.

    The run folder's contract (``claim_run_folder``) has checked a resumed run's settings, so the
    pieces stored there are pieces of this run."""

    def __init__(self, path: Path, resume: bool):
        self.path = path
        if resume and path.is_file():
            try:
                self.done = json.loads(path.read_text())["done"]
            except (OSError, ValueError, KeyError, TypeError) as error:
                raise ValueError(f"{path}: expected the finished pieces of the run, got an unreadable file "
                                 f"({error}); --overwrite starts the run again") from None
        else:
            self.done = {}

    def get(self, name: str, compute):
        if name not in self.done:
            self.done[name] = compute()
            write_json(self.path, {"done": self.done})
        return self.done[name]


def initial_conditioning(config, summary, partial) -> dict:
    """Fig. 4: for each family, [{depth, mean, std}] of the initial (robust) condition number."""
    robust, exact = {}, {}
    for name in config.families:
        robust[name], exact[name] = [], []
        for depth in config.depths:
            def measure(depth=depth, name=name):
                values = []
                for run in range(config.runs):
                    system, theta = _draw(config, name, depth, run)
                    spectrum = HessianSpectrum.of(hessian(regression_ocp(system, *summary), theta))
                    values.append([spectrum.robust_condition_number, spectrum.condition_number])
                return values
            values = np.array(partial.get(f"initial/{name}/{depth}", measure), dtype=float)
            robust[name].append({"depth": depth, "mean": float(np.mean(values[:, 0])), "std": float(np.std(values[:, 0]))})
            exact[name].append({"depth": depth, "mean": float(np.mean(values[:, 1])), "std": float(np.std(values[:, 1]))})
    return {"initial_condition_number": robust, "initial_exact_condition_number": exact}


def _train(config, name, depth, run, rate, summary, *, callback=None):
    system, theta = _draw(config, name, depth, run)
    solution = solve_ocp(regression_ocp(system, *summary), method="sgd", steps=config.steps,
                         options={"lr": rate, "momentum": 0.0, "schedule": "constant"}, initial_controls=theta,
                         keep_states=False, progress=False, callback=callback)
    failed = solution.status == "diverged" or not np.isfinite(solution.objective)
    return float("inf") if failed else float(solution.objective)


def final_losses(config, summary, partial) -> dict:
    """Fig. 7: the mean final excess loss L − L* at the best learning rate, for each (family, depth)."""
    results = {}
    for name in config.families:
        results[name] = []
        for depth in sorted({*config.depths, config.path_depth}):
            grid = []
            for rate in config.learning_rates:
                losses = partial.get(f"train/{name}/{depth}/{rate}", lambda: [
                    _train(config, name, depth, run, rate, summary) for run in range(config.train_runs)])
                # a diverged run (inf, stored as null in JSON) disqualifies the rate
                losses = [float("inf") if value is None else value for value in losses]
                grid.append(float(np.mean(losses)))
            best = int(np.argmin(grid))
            results[name].append({"depth": depth, "best_lr": config.learning_rates[best],
                                  "excess_loss": float(grid[best]), "excess_loss_by_lr": grid})
    return {"final_excess_loss": results}


def _path_steps(steps: int, points: int) -> set:
    """Step 0 and ``points`` − 1 log-spaced steps up to the last: the index drops in the first few."""
    spaced = np.geomspace(1, steps - 1, max(points - 1, 1)).round().astype(int) if steps > 1 else []
    return {0, *map(int, spaced)}


def training_paths(config, summary, losses: dict, partial) -> dict:
    """Fig. 5–6: spectra along gradient descent at ``path_depth`` and each family's best rate."""
    paths = {}
    marks = _path_steps(config.steps, config.path_points)
    for name in config.families:
        rate = next(row["best_lr"] for row in losses[name] if row["depth"] == config.path_depth)

        def record(name=name, rate=rate):
            runs = []
            for run in range(min(config.runs, config.train_runs)):
                kept = []

                def keep(step, value, theta):
                    if step in marks:
                        kept.append((step, theta))

                _train(config, name, config.path_depth, run, rate, summary, callback=keep)
                system, _ = _draw(config, name, config.path_depth, run)
                ocp = regression_ocp(system, *summary)
                points = []
                for step, theta in kept:
                    value, gradient = autograd_objective(ocp, theta, ocp.inputs, ocp.labels)
                    spectrum = HessianSpectrum.of(hessian(ocp, theta))
                    points.append({"step": step, "excess_loss": value, "gradient_norm": float(np.linalg.norm(gradient)),
                                   **spectrum.summary()})
                runs.append(points)
            return {"learning_rate": rate, "runs": runs}
        paths[name] = partial.get(f"path/{name}/{config.path_depth}", record)
    return {"training_paths": paths}


def load_regression_data(config):
    """(X, Y) of App. B from the configured data set: whitened components, one-hot targets."""
    (images, labels), _, source = load_raw_images(config.dataset, config.data_dir)
    inputs, targets = whitened_regression_data(images, labels, components=config.components,
                                               classes=config.components)
    return inputs, targets, source


#: what a hessian run writes in its folder (``overwrite`` removes these, nothing else)
RUN_FILES = ("config.json", "partial.json", "metrics.json", "*.png")
#: settings a resumed run may change: they do not change its result
RESUMABLE = ("data_dir", "threads")


def run_hessian(config: HessianConfig | None = None, out=None, *, plots: bool = True, resume: bool = False,
                overwrite: bool = False) -> dict:
    """Run the three experiments into the run folder ``out``; returns the metrics.

    A folder that holds a run is refused unless ``resume`` (keep its finished pieces and compute the
    rest; every setting but :data:`RESUMABLE` must match) or ``overwrite`` (its run files are
    removed first)."""
    config = HessianConfig() if config is None else _checks.instance("config", config, HessianConfig, "a HessianConfig")
    out = Path(out or "runs/hessian")
    continues = resume and holds_run(out)
    claim_run_folder(out, config, command="hessian", resume=resume, overwrite=overwrite, resumable=RESUMABLE,
                     run_files=RUN_FILES)
    start = time.perf_counter()
    inputs, targets, source = load_regression_data(config)
    if config.components != 10:
        raise ValueError(f"components: expected 10 (one-hot targets of the 10 classes need square 10×10 layers), "
                         f"got {config.components}")
    summary = least_squares_summary(inputs, targets)
    if not continues:                       # config.json is written once, when the run starts
        write_run_config(out, config, command="hessian", data_source=source, samples=len(inputs))
    partial = _Partial(out / "partial.json", continues)
    metrics = {"samples": len(inputs), "data_source": source, "optimal_loss": summary.optimal_loss,
               "theorem2_condition_number": theorem2_condition_number(inputs, targets)}
    data = (summary.inputs, summary.targets)
    threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        metrics |= initial_conditioning(config, data, partial)
        metrics |= final_losses(config, data, partial)
        metrics |= training_paths(config, data, metrics["final_excess_loss"], partial)
    finally:
        torch.set_num_threads(threads)
    metrics["wall_time_s"] = time.perf_counter() - start
    write_metrics(out, metrics, RUN_FILES)            # before the figures: a plotting error loses no result
    if plots:
        from ._hessian_plots import hessian_figures
        metrics["figures"] = hessian_figures(metrics, out)
        write_metrics(out, metrics, RUN_FILES)
    return metrics
