r"""The two-spirals problem as a neural ODE: the measure turnpike of Prop. 16 (2024 paper, Sec. 5).

For each horizon T the continuous-time OCP (20) with the stage cost (17),

.. math:: \min_u \int_0^T \tilde\ell(x(t)) + r\|u(t)\|^2\,dt + γ\,\tilde\ell(x(T)),
          \qquad \dot x = σ_2(A_2(t)σ_1(A_1(t)x + b_1(t)) + b_2(t)),

is solved with controls piecewise constant on intervals of a fixed length h (K = T/h
intervals), and the time spent away from the turnpike, :math:`μ[Θ_{ε,T}]`, is measured on
a dense time grid. Prop. 16 predicts :math:`μ[Θ_{ε,T}] ≤ ν(ε)` independent of T, so the
time spent near the turnpike, :math:`T - μ[Θ_{ε,T}]`, grows with T.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import _checks
from .._costs import InputPenalty, SoftCrossEntropy
from ..systems._node import ODE_METHODS, PARAMETRISATIONS, NeuralODE
from .._ocp import OCP
from ..backends import method_schedule
from .._runs import write_metrics
from .._solve import solve_ocp
from ._spirals import RUN_FILES, SPIRALS_OPTIONS, solution_summary, spirals_run_start
from ..results import Network, exceedance_intervals
from ..theory import distance_to_minimisers


@dataclass
class NodeSpiralsConfig:
    seed: int = 0
    num_train: int = 480
    num_test: int = 480
    turns: float = 1.0
    horizons: tuple = (5.0, 10.0, 20.0, 40.0)   # T
    interval: float = 0.5                      # h, length of one control interval: K = T / h
    hidden_dim: int = 8
    activations: tuple = ("tanh", "identity")
    parametrisation: str = "piecewise_constant"
    # fixed-step RK4 (3/8 rule) trained through its exact adjoint (engine "scheme"); the optimiser
    # cannot exploit its step error unnoticed: every solution is re-integrated with ``check_method``
    ode_method: str = "rk4"
    rtol: float = 1e-4                         # adaptive methods only
    atol: float = 1e-6
    substeps: int = 1                          # fixed-grid methods only
    step_bound: float | None = 0.5             # fixed-grid: substeps keep h_s·Lip(F) ≤ this (None: off)
    adjoint: bool = False
    check_method: str | None = "dopri5"        # a-posteriori reference solve (None: no check)
    check_rtol: float = 1e-8
    check_atol: float = 1e-10
    # start each horizon from the previous one's controls, the added time on the turnpike (zero
    # controls in the middle): long horizons then start near their optimum instead of at random
    warm_start: bool = True
    # independent random starts of the first horizon: from random controls the short horizon lands
    # in a worse local minimum on some seeds (3 of 10 with one start); the lowest J is kept. (Comparing
    # the starts after Adam alone does not work: 100 Adam steps leave J near 3.36 from every start)
    starts: int = 4
    # methods of the warm-started horizons (None: ``method``), with the steps and options given for
    # the same method in ``method``: a warm start lies in the basin already, where Adam's first
    # steps of size lr in every control only move it away (seed 0: same J to 4 digits, a quarter less time)
    warm_method: tuple | None = ("lbfgs",)
    p_d: float = 0.95
    input_penalty: float = 0.005               # r
    terminal_weight: float = 3.0               # γ
    method: tuple = ("adam", "lbfgs")
    steps: tuple | None = None           # None: 100 per method
    options: tuple | None = None         # None: lr 0.02 for Adam/SGD, defaults otherwise
    init_scale: float = 0.1
    eps_fraction: float = 0.1                  # ε = eps_fraction × RMS distance of the inputs to X*_y
    resolution: int = 8                        # dense evaluation: points per control interval

    def __post_init__(self):
        _checks.integer("seed", self.seed)
        self.horizons = tuple(_checks.real("horizons", float(t), minimum=0.0, strict_min=True)
                              for t in (self.horizons if isinstance(self.horizons, (list, tuple))
                                        else (self.horizons,)))
        if not self.horizons:
            _checks.fail("horizons", "at least one horizon T", self.horizons)
        _checks.real("interval", self.interval, minimum=0.0, strict_min=True)
        for t in self.horizons:
            if t < self.interval:
                _checks.fail("horizons", f"horizons of at least one interval h={self.interval:g}", self.horizons)
        _checks.real("eps_fraction", self.eps_fraction, minimum=0.0, strict_min=True)
        _checks.integer("resolution", self.resolution, minimum=1)
        _checks.integer("starts", self.starts, minimum=1)
        _checks.choice("parametrisation", self.parametrisation, PARAMETRISATIONS)
        _checks.choice("ode_method", self.ode_method, ODE_METHODS)
        _checks.integer("substeps", self.substeps, minimum=1)
        if self.check_method is not None:
            _checks.choice("check_method", self.check_method, [m for m, kind in ODE_METHODS.items() if kind == "adaptive"])
        if self.warm_start and list(self.horizons) != sorted(self.horizons):
            _checks.fail("horizons", "increasing horizons with warm_start (each starts from the previous one)",
                         self.horizons)
        self.method, self.steps, self.options = method_schedule(
            self.method, self.steps, self.options, default_steps=100,
            default_options=SPIRALS_OPTIONS)
        if self.warm_method is not None:
            self.warm_method = tuple(self.warm_method) if isinstance(self.warm_method, (list, tuple)) \
                else (self.warm_method,)
            missing = [m for m in self.warm_method if m not in self.method]
            if missing or not self.warm_method:
                _checks.fail("warm_method", f"methods among method={self.method} (their steps and options "
                                            f"are used), or None for the same schedule", self.warm_method)

    def schedule(self, warm: bool) -> dict:
        """``method``, ``steps`` and ``options`` for ``solve_ocp``: the warm-start schedule if ``warm``."""
        methods = self.warm_method if warm and self.warm_method is not None else self.method
        index = [self.method.index(m) for m in methods]
        return {"method": methods, "steps": tuple(self.steps[i] for i in index),
                "options": tuple(self.options[i] for i in index)}

    def system(self, horizon: float) -> NeuralODE:
        depth = max(1, int(round(horizon / self.interval)))
        return NeuralODE(state_dim=2, depth=depth, horizon=horizon, hidden_dim=self.hidden_dim,
                         activations=self.activations, parametrisation=self.parametrisation,
                         method=self.ode_method, rtol=self.rtol, atol=self.atol, substeps=self.substeps,
                         step_bound=self.step_bound, adjoint=self.adjoint)


def _problem(config: NodeSpiralsConfig, horizon: float, inputs, labels) -> OCP:
    soft = SoftCrossEntropy(num_classes=2, p_d=config.p_d)
    return OCP(config.system(horizon), inputs, labels, stage_cost=soft + InputPenalty(config.input_penalty),
               terminal_cost=soft, stage_weight=1.0, terminal_weight=config.terminal_weight)


def summarise_horizon(solution, eps: float, resolution: int) -> dict:
    """Measure-turnpike metrics of one trained neural ODE."""
    times, distance = solution.distance_over_time("train", resolution=resolution)
    _, test_distance = solution.distance_over_time("test", resolution=resolution)
    intervals = exceedance_intervals(times, distance, eps)
    measure = float((intervals[:, 1] - intervals[:, 0]).sum())
    # the pair (x(t), u(t)) from the states just rolled out (theta_measure(include_controls) would roll out again)
    with_control_distance = np.sqrt(distance ** 2 + solution.control_norm_at(times) ** 2)
    with_controls_intervals = exceedance_intervals(times, with_control_distance, eps)
    with_controls = float((with_controls_intervals[:, 1] - with_controls_intervals[:, 0]).sum())
    test_intervals = exceedance_intervals(times, test_distance, eps)
    horizon = solution.horizon
    turnpike_time = 0.0 if intervals.shape[0] == 0 else (
        None if intervals[-1, 1] >= horizon else float(intervals[-1, 1]))
    return {
        "horizon": horizon,
        "depth": solution.depth,
        "interval": solution.system.step_size,
        **solution_summary(solution, eps),
        "theta_measure": measure,
        "theta_set": intervals,
        "time_near_turnpike": horizon - measure,
        "fraction_near_turnpike": (horizon - measure) / horizon,
        "theta_measure_with_controls": with_controls,
        "test_theta_measure": float((test_intervals[:, 1] - test_intervals[:, 0]).sum()),
        "turnpike_time": turnpike_time,
        "times": times,
        "distance_over_time": distance,
        "test_distance_over_time": test_distance,
        "distance_per_node": solution.distance_to_turnpike("train"),
        "control_norm_per_interval": solution.control_norms(),
        "steps": int(solution.history["objective"].size),
        "train_time_s": solution.wall_time_s,
    }


def warm_start_controls(previous, system: NeuralODE) -> np.ndarray:
    """Controls for the longer ``system`` from the ``previous`` solution's: its first and last arcs
    (halves) kept, zero controls in between. Zero controls are an equilibrium of the ODE (σ(0) = 0),
    so the added time is spent where the previous states were at the middle of their horizon: on
    the turnpike."""
    shorter = previous.system
    if shorter.parametrisation != "piecewise_constant" or system.depth < shorter.depth:
        _checks.fail("system", f"piecewise-constant controls on at least {shorter.depth} intervals", system)
    head = shorter.depth // 2
    blocks = shorter.unpack(previous.controls)
    longer = {name: np.zeros((system.depth, *b.shape[1:])) for name, b in blocks.items()}
    for name, b in blocks.items():
        longer[name][:head] = b[:head]
        longer[name][system.depth - (shorter.depth - head):] = b[head:]
    return system.pack(longer)


def _random_starts(config, system) -> list:
    """``config.starts`` random controls (the first is the seed's usual draw)."""
    draws = [np.random.default_rng(config.seed)] + [np.random.default_rng([config.seed, start])
                                                    for start in range(1, config.starts)]
    return [system.initial_controls(draw, config.init_scale) for draw in draws]


def a_posteriori_check(solution, config, eps: float, scheme_measure: float | None = None) -> dict:
    """Re-integrate the trained controls with an adaptive reference solver at tight tolerance.

    The training scheme's J is exact for the scheme, not for the ODE; this reports how far the
    scheme's states at the control nodes, and μ[Θ_ε,T], are from the ODE's (``check_method`` at
    ``check_rtol``/``check_atol``). ``scheme_measure``: the scheme's μ[Θ_ε,T] if already measured.
    """
    from dataclasses import replace

    reference_system = replace(solution.system, method=config.check_method, rtol=config.check_rtol,
                               atol=config.check_atol, options=dict(solution.system.options))
    reference = replace(solution, network=Network(reference_system, solution.controls))
    # the scheme's own states at the nodes (what training saw) against the reference ODE's
    difference = np.abs(reference.states_at(solution.times) - solution.train_states).max()
    measure = reference.theta_measure(eps, resolution=config.resolution)
    return {"method": config.check_method, "rtol": config.check_rtol, "atol": config.check_atol,
            "max_state_difference": float(difference), "theta_measure": measure,
            "theta_measure_difference": abs(measure - (solution.theta_measure(eps, resolution=config.resolution)
                                                       if scheme_measure is None else scheme_measure))}


def run_node_spirals(config: NodeSpiralsConfig | None = None, out: str | Path | None = None, *,
                     plots: bool = True, progress: bool = False, callback=None, overwrite: bool = False) -> dict:
    """Train the neural ODE for every horizon in ``config.horizons``; return the metrics.

    ``callback(horizon, metrics)`` is called after each horizon (the CLI prints from it).
    With ``out`` the run folder receives ``config.json``, ``metrics.json`` (rewritten after
    every horizon, atomically) and, with ``plots``, the figures. The solutions are returned
    under ``"solutions"`` (keyed by T). A folder that holds a run is refused unless ``overwrite``.
    """
    config = NodeSpiralsConfig() if config is None else _checks.instance("config", config, NodeSpiralsConfig, "a NodeSpiralsConfig")
    start = time.perf_counter()
    inputs, labels, test, out = spirals_run_start(config, out, command="node-spirals", overwrite=overwrite)
    soft = SoftCrossEntropy(num_classes=2, p_d=config.p_d)
    initial = float(np.sqrt((distance_to_minimisers(inputs, labels, 2, soft.p_d) ** 2).mean()))
    eps = config.eps_fraction * initial
    metrics = {"eps": eps, "horizons": list(config.horizons), "per_horizon": {}}
    solutions, previous = {}, None
    for horizon in config.horizons:
        ocp = _problem(config, horizon, inputs, labels)
        warm = config.warm_start and previous is not None
        settings = dict(seed=config.seed, test_data=test, progress=progress)
        if warm:
            solution = solve_ocp(ocp, **config.schedule(warm=True),
                                 initial_controls=warm_start_controls(previous, ocp.system), **settings)
        else:       # independent random starts, the lowest J kept
            solution = min((solve_ocp(ocp, **config.schedule(warm=False), initial_controls=controls, **settings)
                            for controls in _random_starts(config, ocp.system)),
                           key=lambda candidate: candidate.objective)
        solutions[horizon], previous = solution, solution
        summary = summarise_horizon(solution, eps, config.resolution)
        summary["engine"], summary["warm_started"] = solution.extra["engine"], warm
        if config.check_method is not None:
            summary["a_posteriori"] = a_posteriori_check(solution, config, eps, summary["theta_measure"])
        metrics["per_horizon"][f"{horizon:g}"] = summary
        _collect(metrics)
        metrics["wall_time_s"] = time.perf_counter() - start
        if out is not None:
            write_metrics(out, metrics, RUN_FILES)
        if callback is not None:
            callback(horizon, metrics["per_horizon"][f"{horizon:g}"])
    if out is not None and plots:
        from ._node_plots import node_figures
        metrics["figures"] = [str(p) for p in node_figures(solutions, metrics, out, config.resolution)]
        write_metrics(out, metrics, RUN_FILES)
    metrics["solutions"] = solutions
    return metrics


def _collect(metrics: dict) -> None:
    """The headline numbers across horizons: μ[Θ_ε,T] and T − μ against T."""
    rows = list(metrics["per_horizon"].values())
    metrics["theta_measure"] = [m["theta_measure"] for m in rows]
    metrics["time_near_turnpike"] = [m["time_near_turnpike"] for m in rows]
    metrics["train_accuracy"] = [m["train_accuracy"] for m in rows]
    metrics["test_accuracy"] = [m["test_accuracy"] for m in rows]
    metrics["max_theta_measure"] = max(metrics["theta_measure"])
