"""``turnpike certify RUN_DIR``: dissipativity, turnpike and Prop. 12 bound reports for a two-spirals run.

Reads ``config.json`` and ``controls.npz`` of a run folder written by ``turnpike spirals``,
rebuilds the OCP and the layer-wise states, prints the reports and writes them to
``RUN_DIR/certificate.json`` (or ``--json``). The mathematics: ``theory/dissipativity.md`` and
``theory/turnpike-bound.md``.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def add_parser(sub):
    p = sub.add_parser("certify", help="dissipativity and turnpike certificates of a saved two-spirals run",
                       description="Check the strict dissipation inequality (10b) layer by layer and the "
                                   "turnpike count bound of Prop. 12 (2024 paper) on a saved two-spirals run.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="run folder of `turnpike spirals` (config.json, controls.npz)")
    p.add_argument("--eps", default=None,
                   help="RMS tolerances ε, comma-separated (default: 0.05,0.1,0.2,0.5 × the inputs' RMS "
                        "distance to X*_y)")
    p.add_argument("--json", default=None, help="where to write the reports (default RUN_DIR/certificate.json)")
    return p


def load_run(run_dir) -> dict:
    """The solutions of a saved spirals run, rebuilt from config.json and controls.npz: {name: Solution}."""
    from ..results import Network, Solution
    from ..experiments._spirals import SpiralsConfig, _problem
    from ..data import two_spirals

    run_dir = Path(run_dir)
    for name in ("config.json", "controls.npz"):
        if not (run_dir / name).is_file():
            raise ValueError(f"RUN_DIR: expected a spirals run folder with {name} (written by `turnpike spirals`), "
                             f"got {str(run_dir)!r} without it")
    try:
        config = SpiralsConfig(**json.loads((run_dir / "config.json").read_text())["config"])
        saved = dict(np.load(run_dir / "controls.npz"))
    except (OSError, KeyError, TypeError, ValueError) as error:
        raise ValueError(f"RUN_DIR: expected readable config.json and controls.npz, got {error}") from None
    inputs, labels = two_spirals(config.num_train, turns=config.turns, seed=config.seed)
    test_inputs, test_labels = two_spirals(config.num_test, turns=config.turns, seed=config.seed, test=True)
    solutions = {}
    for name, controls in saved.items():
        ocp = _problem(config, inputs, labels, with_stage_cost=(name == "stage_cost"))
        if controls.shape != (ocp.system.parameter_count,):
            raise ValueError(f"RUN_DIR: controls.npz[{name!r}] has shape {controls.shape}, expected "
                             f"({ocp.system.parameter_count},) for the config's network")
        states = ocp.system.rollout(controls, ocp.inputs)
        stage = ocp.stage_cost
        r = stage.input_coefficient()
        norms = ocp.system.control_norms(controls)
        per_layer = np.asarray(stage.state_per_sample(ocp.readout(states[:-1]), labels)).mean(axis=1) if stage.state_terms \
            else np.zeros(ocp.depth)
        objective = ocp.stage_weight * float((per_layer + r * norms ** 2).sum()) \
            + ocp.terminal_weight * float(np.mean(ocp.terminal_cost.state_per_sample(ocp.readout(states[-1]), labels)))
        solutions[name] = Solution(
            ocp=ocp, network=Network(ocp.system, controls), train_states=states,
            test_states=ocp.system.rollout(controls, test_inputs), test_labels=test_labels,
            objective=objective, status="loaded", message=f"loaded from {run_dir}", history={},
            wall_time_s=0.0, seed=config.seed)
    return solutions


def certify(solutions: dict, eps_values=None) -> dict:
    """The reports for every rebuilt solution, as plain data (what certificate.json holds)."""
    from ..theory import dissipation_margins, soft_ce_lower_bound, turnpike_bound, lipschitz_constant

    reference = solutions.get("stage_cost") or next(iter(solutions.values()))
    start = float(reference.distance_to_turnpike()[0])
    if eps_values is None:
        eps_values = [f * start for f in (0.05, 0.1, 0.2, 0.5)]
    soft = reference.ocp.soft_cross_entropy()
    alpha = soft_ce_lower_bound(soft.num_classes, soft.p_d)
    report = {"lemma_8": {"num_classes": soft.num_classes, "p_d": soft.p_d, "curvature": alpha.curvature,
                          "slope": alpha.slope,
                          "alpha": "α(s) = λ/2 s² (s <= 1), λ/2 + m(s - 1) (s > 1)"},
              "lipschitz": {"tight": lipschitz_constant(soft.num_classes, soft.p_d),
                            "paper": lipschitz_constant(soft.num_classes, soft.p_d, kind="paper")},
              "initial_rms_distance": start, "runs": {}}
    for name, solution in solutions.items():
        entry = {"objective": solution.objective, "train_accuracy": solution.accuracy("train"),
                 "distance_per_layer": solution.distance_to_turnpike()}
        try:
            entry["dissipation"] = dissipation_margins(solution).as_dict()
            entry["turnpike_bounds"] = [turnpike_bound(solution, eps).as_dict() for eps in eps_values]
        except ValueError as error:
            entry["not_applicable"] = str(error)
            entry["turnpike_sets"] = [{"eps": eps, "turnpike_set": solution.turnpike_set(eps),
                                       "turnpike_layer": solution.turnpike_layer(eps)} for eps in eps_values]
        report["runs"][name] = entry
    return report


def _print(report: dict) -> None:
    lemma = report["lemma_8"]
    print(f"Lemma 8 (corrected), C = {lemma['num_classes']}, p_d = {lemma['p_d']:g}: λ_Ω,min = {lemma['curvature']:.6g}, "
          f"m = {lemma['slope']:.6g}; {lemma['alpha']}")
    print(f"Lipschitz constant of one sample's soft CE: {report['lipschitz']['tight']:.6f} (tight, < √2); "
          f"paper's 2C = {report['lipschitz']['paper']:g}")
    for name, entry in report["runs"].items():
        print(f"\n[{name}] J = {entry['objective']:.6g}, train accuracy {entry['train_accuracy']:.3f}")
        if "not_applicable" in entry:
            print(f"  certificates not applicable: {entry['not_applicable']}")
            for row in entry["turnpike_sets"]:
                print(f"  ε = {row['eps']:.4g}: #Q_ε (layers 0..N) = {len(row['turnpike_set'])}, "
                      f"turnpike layer {row['turnpike_layer']}")
            continue
        d = entry["dissipation"]
        margins = np.asarray(d["margin"])
        print(f"  dissipation (10b), storage {d['storage']}, w.r.t. {d['steady_set']}:")
        print(f"    {d['lower_bound']}")
        print(f"    holds at every layer: {d['holds']}; min margin {margins.min():.4g} at layer {d['worst_layer']}, "
              f"max {margins.max():.4g}; min per-sample Lemma 8 margin {d['min_sample_margin']:.3g}")
        print("  Prop. 12: #Q̄_ε <= V̂/α_ℓ(√D ε), V̂ = L β(1/(1-ρ) + γ) + r β²/(1-ρ²) (units of J)")
        first = entry["turnpike_bounds"][0]
        print(f"    β = {first['beta']:.4g}, ρ = {first['rho']:.4g} (fitted on this trajectory), "
              f"L = {first['lipschitz']:.4g}, γ = {first['terminal_ratio']:g}, V̂ = {first['v_hat']:.4g}, "
              f"Σ w_s ℓ_k = {first['stage_cost_sum']:.4g}")
        print(f"    {'ε (RMS)':>9} {'α_ℓ(√Dε)':>10} {'#Q̄_ε':>6} {'#out 0..N':>9} {'V̂/α':>11} {'Σℓ/α':>10} holds")
        for row in entry["turnpike_bounds"]:
            print(f"    {row['eps']:>9.4g} {row['alpha_eps']:>10.4g} {row['measured']:>6d} "
                  f"{row['measured_state_only']:>9d} {row['bound']:>11.4g} {row['value_bound']:>10.4g} {row['holds']}")


def run(args) -> int:
    from .._runs import check_writable_file, write_json

    eps_values = None
    if args.eps is not None:
        try:
            eps_values = [float(v) for v in args.eps.split(",")]
        except ValueError:
            raise ValueError(f"--eps: expected comma-separated positive numbers, got {args.eps!r}") from None
        if not all(np.isfinite(v) and v > 0 for v in eps_values):
            raise ValueError(f"--eps: expected comma-separated positive numbers, got {args.eps!r}")
    solutions = load_run(args.run_dir)          # RUN_DIR checked before --json (whose default is inside it)
    path = check_writable_file("--json", Path(args.json) if args.json else Path(args.run_dir) / "certificate.json")
    report = certify(solutions, eps_values)
    _print(report)
    write_json(path, report)
    print(f"\nwrote {path}")
    return 0
