"""The two-spirals turnpike of the 2024 paper (Sec. 6, Figs. 2-4), as a reusable run.

Two trainings of architecture (26) on the same data: the dissipative formulation
(soft cross-entropy in the stage cost) and a baseline with the input penalty as the
only stage cost. Both have the soft cross-entropy terminal cost with weight γ.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path


from .. import _checks
from .._costs import InputPenalty, SoftCrossEntropy
from .._ocp import OCP
from ..backends import method_schedule
from .._runs import claim_run_folder, write_metrics, write_npz, write_run_config
from .._solve import solve_ocp
from ..systems._resnet import TwoLayerResNet
from ..data import two_spirals


# Adam and SGD on the spirals take twice the registry's default step
SPIRALS_OPTIONS = {"adam": {"lr": 0.02}, "sgd": {"lr": 0.02}}


#: what a spirals or node-spirals run writes in its folder (``--overwrite`` removes these, nothing else)
RUN_FILES = ("config.json", "metrics.json", "controls.npz", "*.png")


def claim_spirals_folder(out, config, *, command: str, overwrite: bool) -> None:
    """The run-folder contract of ``turnpike spirals`` / ``node-spirals`` runs (minutes long, so
    without resume): a folder holding a run is refused unless ``overwrite``."""
    claim_run_folder(out, config, command=command, resume=False, overwrite=overwrite, resumable=(),
                     run_files=RUN_FILES, can_resume=False)


def spirals_run_start(config, out, *, command: str, overwrite: bool):
    """The train and test spirals of ``config`` (num_train, num_test, turns, seed), and the run
    folder ``out`` as a Path, claimed (:func:`claim_spirals_folder`) with ``config.json`` written
    in it (None stays None)."""
    if out is not None:
        out = Path(out)
        claim_spirals_folder(out, config, command=command, overwrite=overwrite)
    inputs, labels = two_spirals(config.num_train, turns=config.turns, seed=config.seed)
    test = two_spirals(config.num_test, turns=config.turns, seed=config.seed, test=True)
    if out is not None:
        write_run_config(out, config, command=command)
    return inputs, labels, test, out


def solution_summary(solution, eps: float) -> dict:
    """The metrics every spirals-type run reports for a solution: ε, accuracies, J, status."""
    return {"eps": eps, "train_accuracy": solution.accuracy("train"), "test_accuracy": solution.accuracy("test"),
            "objective": solution.objective, "status": solution.status, "message": solution.message}


@dataclass
class SpiralsConfig:
    seed: int = 0
    num_train: int = 480                 # the paper's training set size
    num_test: int = 480
    turns: float = 1.0                   # revolutions of each spiral (see docs/spirals.md)
    depth: int = 30                      # N
    hidden_dim: int = 8                  # h
    activations: tuple = ("tanh", "identity")
    p_d: float = 0.95
    input_penalty: float = 0.005         # r in r‖u_k‖²
    terminal_weight: float = 3.0         # γ on the terminal cost (2024 convention)
    method: tuple = ("adam", "lbfgs")
    steps: tuple | None = None           # None: 200 per method
    options: tuple | None = None         # None: lr 0.02 for Adam/SGD, defaults otherwise
    init_scale: float = 0.1
    eps_fraction: float = 0.1            # ε = eps_fraction × RMS distance of the inputs to X*_y
    baseline: bool = True                # also train without the soft-CE stage cost

    def __post_init__(self):
        _checks.integer("seed", self.seed)
        _checks.integer("depth", self.depth, minimum=1)
        _checks.real("eps_fraction", self.eps_fraction, minimum=0.0, strict_min=True)
        self.method, self.steps, self.options = method_schedule(
            self.method, self.steps, self.options, default_steps=200,
            default_options=SPIRALS_OPTIONS)


def _problem(config: SpiralsConfig, inputs, labels, *, with_stage_cost: bool) -> OCP:
    system = TwoLayerResNet(state_dim=2, hidden_dim=config.hidden_dim, depth=config.depth,
                            activations=config.activations)
    soft = SoftCrossEntropy(num_classes=2, p_d=config.p_d)
    stage = InputPenalty(config.input_penalty)
    if with_stage_cost:
        stage = soft + stage
    return OCP(system, inputs, labels, stage_cost=stage, terminal_cost=soft,
               stage_weight=1.0, terminal_weight=config.terminal_weight)


def summarise(solution, eps: float) -> dict:
    """The turnpike metrics of one trained network."""
    norms = solution.control_norms()
    layer = solution.turnpike_layer(eps)
    inside = solution.turnpike_set(eps)
    metrics = {
        **solution_summary(solution, eps),
        "stage_cost_per_layer": solution.loss_per_layer("train"),
        "test_stage_cost_per_layer": solution.loss_per_layer("test"),
        "control_norm_per_layer": norms,
        "distance_per_layer": solution.distance_to_turnpike("train"),
        "test_distance_per_layer": solution.distance_to_turnpike("test"),
        "accuracy_per_layer": solution.accuracy_per_layer("train"),
        "test_accuracy_per_layer": solution.accuracy_per_layer("test"),
        "turnpike_layer": layer,
        "layers_in_Q_eps": inside,
        "num_layers_in_Q_eps": int(inside.size),
        "steps": int(solution.history["objective"].size),
        "train_time_s": solution.wall_time_s,
        "wall_time_s": solution.wall_time_s,   # the top level overwrites it with the whole run's
    }
    if layer is not None and 0 < layer < solution.depth:
        metrics["control_norm_ratio"] = float(norms[layer:].mean() / norms[:layer].mean())
        pruned = solution.prune(layer)
        metrics["pruned"] = {
            "depth": layer,
            "train_accuracy": float((pruned.predict(solution.ocp.inputs, 2) == solution.ocp.labels).mean()),
            "test_accuracy": float((pruned.predict(solution.test_states[0], 2) == solution.test_labels).mean()),
        }
    else:
        metrics["control_norm_ratio"] = None
        metrics["pruned"] = None
    return metrics


def run_spirals(config: SpiralsConfig | None = None, out: str | Path | None = None, *,
                plots: bool = True, progress: bool = False, overwrite: bool = False) -> dict:
    """Train with and without the soft-CE stage cost; return the metrics.

    With ``out`` the run folder receives ``config.json``, ``metrics.json``, ``controls.npz`` and,
    with ``plots``, the figures; the solutions are returned under ``"solutions"`` as well. A folder
    that holds a run is refused unless ``overwrite`` (its run files are removed first).
    """
    config = SpiralsConfig() if config is None else _checks.instance("config", config, SpiralsConfig, "a SpiralsConfig")
    start = time.perf_counter()
    inputs, labels, test, out = spirals_run_start(config, out, command="spirals", overwrite=overwrite)
    solve = dict(method=config.method, steps=config.steps, options=config.options, seed=config.seed,
                 init_scale=config.init_scale, test_data=test, progress=progress)
    solution = solve_ocp(_problem(config, inputs, labels, with_stage_cost=True), **solve)
    eps = config.eps_fraction * float(solution.distance_to_turnpike("train")[0])
    metrics = summarise(solution, eps)
    solutions = {"stage_cost": solution}
    if config.baseline:
        baseline = solve_ocp(_problem(config, inputs, labels, with_stage_cost=False), **solve)
        metrics["baseline"] = summarise(baseline, eps)
        solutions["baseline"] = baseline
    metrics["wall_time_s"] = time.perf_counter() - start
    if out is not None:
        write_npz(out / "controls.npz", **{name: s.controls for name, s in solutions.items()})
        write_metrics(out, metrics, RUN_FILES)        # before the figures: a plotting error loses no result
        if plots:
            from ._plots import spirals_figures
            metrics["figures"] = [str(p) for p in spirals_figures(solutions, eps, out)]
            write_metrics(out, metrics, RUN_FILES)
    metrics["solutions"] = solutions
    return metrics
