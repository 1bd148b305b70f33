"""Neural ODEs (OCP (20)): Euler = ResNet, equilibria, adjoint gradients, running-cost integral, Θ_ε,T."""
import itertools
import json

import numpy as np
import pytest
import torch

import turnpike as tp
from turnpike import ACTIVATIONS, OCP, InputPenalty, NeuralODE, SoftCrossEntropy, exceedance_intervals
from turnpike.backends._engines import adjoint_objective
from turnpike.theory import distance_to_minimisers

torch.set_num_threads(1)
ACTS = sorted(ACTIVATIONS)
N, H, C, B = 3, 4, 3, 6


def resnets(step_size):
    out = [tp.SingleLayerResNet(state_dim=N, depth=5, activation=a, step_size=step_size) for a in ACTS]
    out += [tp.TwoLayerResNet(state_dim=N, depth=5, hidden_dim=H, activations=pair, step_size=step_size)
            for pair in itertools.product(ACTS, ACTS)]
    return out


def problem(seed, system, scale=0.6):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(B, N)), rng.integers(0, C, B), rng.normal(0.0, scale, system.parameter_count)


# --- Euler with step h on piecewise-constant controls is the ResNet (1) / (26) -------------------------
@pytest.mark.parametrize("resnet", resnets(0.3), ids=repr)
def test_euler_rollout_is_the_resnet_rollout(resnet):
    node = NeuralODE.from_resnet(resnet)
    assert node.method == "euler" and node.step_size == pytest.approx(0.3)
    assert node.parameter_count == resnet.parameter_count
    x0, _, theta = problem(0, resnet)
    np.testing.assert_allclose(node.rollout(theta, x0), resnet.rollout(theta, x0), rtol=0, atol=1e-12)
    assert node.to_resnet() == resnet


def test_euler_objective_and_gradient_equal_the_discrete_ocp_with_stage_weight_h():
    """J_c(Euler) = h Σ_k ℓ(x_k, u_k) + γ ℓ_f(x_N): the discrete OCP with stage_weight = h."""
    h = 0.25
    soft = SoftCrossEntropy(num_classes=C, p_d=0.8)
    for resnet in (tp.SingleLayerResNet(state_dim=N, depth=6, step_size=h),
                   tp.TwoLayerResNet(state_dim=N, depth=6, hidden_dim=H, step_size=h)):
        node = NeuralODE.from_resnet(resnet)
        x0, y, theta = problem(1, resnet)
        costs = dict(stage_cost=soft + InputPenalty(0.03), terminal_cost=soft, terminal_weight=2.0)
        discrete = OCP(resnet, x0, y, stage_weight=0.7 * h, **costs)
        continuous = OCP(node, x0, y, stage_weight=0.7, **costs)
        v1, g1 = adjoint_objective(discrete, theta, x0, y)
        v2, g2 = node.objective(continuous, theta, x0, y)
        assert v2 == pytest.approx(v1, rel=1e-12)
        np.testing.assert_allclose(g2, g1, rtol=1e-10, atol=1e-12)


def test_resnet_controls_are_valid_node_controls_and_initialisation_matches():
    resnet = tp.TwoLayerResNet(state_dim=2, depth=7, hidden_dim=5)
    node = NeuralODE(state_dim=2, depth=7, horizon=3.5, hidden_dim=5)
    a = resnet.initial_controls(np.random.default_rng(3), 0.4)
    b = node.initial_controls(np.random.default_rng(3), 0.4)
    np.testing.assert_array_equal(a, b)
    for name in ("A1", "b1", "A2", "b2"):
        np.testing.assert_array_equal(node.unpack(a)[name], resnet.unpack(a)[name])


# --- equilibrium consistency (Def. 17) ------------------------------------------------------------------
@pytest.mark.parametrize("method", ["euler", "rk4", "dopri5"])
@pytest.mark.parametrize("parametrisation", tp.PARAMETRISATIONS)
def test_zero_controls_give_a_steady_state(method, parametrisation):
    rng = np.random.default_rng(2)
    x0 = rng.normal(size=(B, N))
    for hidden, acts in [(None, a) for a in ACTS] + [(H, pair) for pair in itertools.product(ACTS, ACTS)]:
        node = NeuralODE(state_dim=N, depth=4, horizon=2.0, hidden_dim=hidden, activations=acts, method=method,
                         parametrisation=parametrisation)
        states = node.rollout(np.zeros(node.parameter_count), x0, node.dense_times(3))
        # exactly x0 on the steps; dopri5's dense interpolant adds only rounding
        np.testing.assert_allclose(states, np.broadcast_to(x0, states.shape), rtol=0, atol=1e-14)


def test_equilibria_are_preserved_by_the_euler_discretisation():
    """Def. 17 beyond u = 0: with relu and A = 0, b < 0, F ≡ 0, so every state is an equilibrium of
    the ODE and of its Euler scheme (the ResNet); with b > 0 neither has one."""
    node = NeuralODE(state_dim=N, depth=3, horizon=1.5, activations="relu", method="rk4")
    resnet = node.to_resnet()
    x0 = np.random.default_rng(4).normal(size=(B, N))
    blocks = {"A": np.zeros((3, N, N)), "b": -np.ones((3, N))}
    theta = node.pack(blocks)
    for system in (node, resnet):
        np.testing.assert_array_equal(system.rollout(theta, x0)[-1], x0)
    moving = node.pack({"A": np.zeros((3, N, N)), "b": np.ones((3, N))})
    for system in (node, resnet):                           # ẋ = 1: x(T) = x0 + T
        np.testing.assert_allclose(system.rollout(moving, x0)[-1], x0 + 1.5, rtol=1e-13)


# --- gradients -------------------------------------------------------------------------------------------
def _spiral_ocp(system, count=40, r=0.01):
    inputs, labels = tp.data.two_spirals(count, turns=1.0)
    soft = SoftCrossEntropy(num_classes=2, p_d=0.9)
    return OCP(system, inputs, labels, stage_cost=soft + InputPenalty(r), terminal_cost=soft, terminal_weight=3.0)


@pytest.mark.parametrize("method,settings,tolerance", [
    ("rk4", dict(substeps=8), 1e-4),
    ("dopri5", dict(rtol=1e-9, atol=1e-11), 1e-6),
])
@pytest.mark.parametrize("parametrisation", tp.PARAMETRISATIONS)
def test_adjoint_gradient_matches_direct_backpropagation(method, settings, tolerance, parametrisation):
    kwargs = dict(state_dim=2, depth=4, horizon=2.0, hidden_dim=5, method=method,
                  parametrisation=parametrisation, **settings)
    direct, adjoint = NeuralODE(**kwargs), NeuralODE(adjoint=True, **kwargs)
    ocp = _spiral_ocp(direct)
    theta = direct.initial_controls(np.random.default_rng(5), 1.5)
    theta[direct.parameter_count // 4:] += 0.2          # non-zero biases too
    v1, g1 = direct.objective(ocp, theta, ocp.inputs, ocp.labels)
    v2, g2 = adjoint.objective(ocp, theta, ocp.inputs, ocp.labels)
    assert v2 == pytest.approx(v1, rel=1e-12)
    assert np.abs(g2 - g1).max() <= tolerance * np.abs(g1).max()
    assert np.abs(g1).max() > 1e-3


@pytest.mark.parametrize("parametrisation", tp.PARAMETRISATIONS)
def test_direct_gradient_matches_finite_differences(parametrisation):
    node = NeuralODE(state_dim=2, depth=3, horizon=1.5, hidden_dim=3, parametrisation=parametrisation,
                     method="rk4", substeps=2)
    ocp = _spiral_ocp(node, count=10)
    theta = np.random.default_rng(6).normal(0, 0.8, node.parameter_count)
    _, gradient = node.objective(ocp, theta, ocp.inputs, ocp.labels)
    rng = np.random.default_rng(7)
    for _ in range(4):
        direction = rng.normal(size=theta.size)
        step = 1e-6
        plus, _ = node.objective(ocp, theta + step * direction, ocp.inputs, ocp.labels)
        minus, _ = node.objective(ocp, theta - step * direction, ocp.inputs, ocp.labels)
        assert (plus - minus) / (2 * step) == pytest.approx(gradient @ direction, rel=1e-6, abs=1e-9)


# --- the running cost: augmented state vs quadrature ----------------------------------------------------
@pytest.mark.parametrize("method,settings", [("rk4", dict(substeps=64)), ("dopri5", dict(rtol=1e-10, atol=1e-12))])
@pytest.mark.parametrize("parametrisation", tp.PARAMETRISATIONS)
def test_integral_cost_augmentation_matches_quadrature_of_the_trajectory(method, settings, parametrisation):
    node = NeuralODE(state_dim=2, depth=4, horizon=2.0, hidden_dim=5, method=method,
                     parametrisation=parametrisation, **settings)
    dense_grid = node.dense_times(64)     # for rk4: the solver's own grid, so the trajectories are the same
    inputs, labels = tp.data.two_spirals(40, turns=1.0)
    soft = SoftCrossEntropy(num_classes=2, p_d=0.9)
    theta = node.initial_controls(np.random.default_rng(8), 2.0)
    theta_t, x0 = torch.tensor(theta), torch.tensor(inputs)
    _, cost = node.integrate(theta_t, x0, running_cost=soft, labels=labels, running_weight=1.3)
    integral = float(cost[-1])
    # composite Simpson on a fine grid, with the states of the same solver
    times = dense_grid
    states = node.rollout(theta, inputs, times)
    values = 1.3 * soft.per_sample(states, labels).mean(axis=1)
    dt = times[1] - times[0]
    simpson = dt / 3 * (values[0] + values[-1] + 4 * values[1:-1:2].sum() + 2 * values[2:-1:2].sum())
    assert integral == pytest.approx(simpson, rel=1e-7)
    # the running cost at the grid nodes is the cumulative integral
    assert cost.shape == (node.depth + 1,) and float(cost[0]) == 0.0 and np.all(np.diff(cost.numpy()) > 0)


@pytest.mark.parametrize("parametrisation", tp.PARAMETRISATIONS)
def test_input_penalty_integral_in_closed_form(parametrisation):
    node = NeuralODE(state_dim=2, depth=3, horizon=1.2, parametrisation=parametrisation)
    theta = np.random.default_rng(9).normal(size=node.parameter_count)
    edges = np.linspace(0, 1.2, 3 * 1000 + 1)          # no cell straddles a control switch
    norms = node.control_norm_at(theta, (edges[1:] + edges[:-1]) / 2)
    midpoint = float((norms ** 2 * np.diff(edges)).sum())
    assert float(node.control_energy(theta)) == pytest.approx(midpoint, rel=1e-6)
    assert float(node.control_energy(torch.tensor(theta))) == pytest.approx(float(node.control_energy(theta)))


# --- Θ_ε,T and its measure --------------------------------------------------------------------------------
def test_exceedance_intervals_locate_crossings_by_linear_interpolation():
    times = np.array([0.0, 1.0, 2.0, 3.0, 4.0, 5.0])
    values = np.array([3.0, 1.0, 0.0, 2.0, 0.5, 0.5])
    intervals = exceedance_intervals(times, values, 1.5)
    np.testing.assert_allclose(intervals, [[0.0, 0.75], [2.75, 3 + 1 / 3]])
    assert exceedance_intervals(times, values, 5.0).shape == (0, 2)
    np.testing.assert_allclose(exceedance_intervals(times, values, 0.1), [[0.0, 1.9], [2.05, 5.0]])
    # a smooth function: measure of {t ∈ [0, 2π]: sin t > 1/2} = 2π/3
    t = np.linspace(0, 2 * np.pi, 2001)
    intervals = exceedance_intervals(t, np.sin(t), 0.5)
    assert (intervals[:, 1] - intervals[:, 0]).sum() == pytest.approx(2 * np.pi / 3, abs=1e-5)


@pytest.fixture(scope="module")
def trained():
    """A short neural-ODE training on a small two-spirals set (piecewise-constant controls)."""
    node = NeuralODE(state_dim=2, depth=6, horizon=3.0, hidden_dim=6, method="dopri5", rtol=1e-5, atol=1e-7)
    ocp = _spiral_ocp(node, count=40, r=0.005)
    test = tp.data.two_spirals(40, turns=1.0, test=True)
    return tp.solve_ocp(ocp, method=("adam", "lbfgs"), steps=(30, 30), options=({"lr": 0.05}, {}), seed=0,
                        test_data=test, progress=False)


def test_solve_ocp_returns_an_ode_solution_that_answers_turnpike_questions(trained):
    s = trained
    assert isinstance(s, tp.ODESolution) and s.extra["engine"] == "system"
    assert s.history["objective"][-1] < 0.5 * s.history["objective"][0]
    assert s.train_states.shape == (7, 40, 2)
    np.testing.assert_allclose(s.times, np.linspace(0, 3, 7))
    # dense evaluation agrees with the grid states at the grid times (the refined grid is more accurate)
    dense = s.states_at(s.system.dense_times(4))
    np.testing.assert_allclose(dense[::4], s.train_states, atol=1e-3)
    times, distance = s.distance_over_time(resolution=4)
    assert times.shape == distance.shape == (25,)
    manual = np.sqrt((distance_to_minimisers(dense, s.ocp.labels, 2, 0.9) ** 2).mean(axis=1))
    np.testing.assert_allclose(distance, manual)
    eps = 0.5 * (distance[0] + distance.min())       # d(0) > ε > min d: Θ is neither empty nor [0, T]
    intervals = s.theta_set(eps, resolution=4)
    measure = s.theta_measure(eps, resolution=4)
    assert measure == pytest.approx((intervals[:, 1] - intervals[:, 0]).sum())
    assert 0 < measure < s.horizon
    assert s.time_near_turnpike(eps, resolution=4) == pytest.approx(s.horizon - measure)
    # Θ is where d > ε: check against the dense samples
    inside = np.zeros_like(times, dtype=bool)
    for a, b in intervals:
        inside |= (times >= a) & (times <= b)
    assert np.all(distance[~inside] <= eps)
    assert np.all(inside[distance > eps])
    # with the controls, the pair distance to (X*_y, {0}) is larger, so Θ is too
    assert s.theta_measure(eps, resolution=4, include_controls=True) >= measure - 1e-12
    assert s.distance_over_time("test", resolution=2)[1].shape == (13,)
    assert repr(s).startswith("Solution(status=")


def test_prune_cuts_the_horizon(trained):
    shorter = trained.prune(3)
    assert isinstance(shorter.system, NeuralODE)
    assert shorter.system.horizon == pytest.approx(1.5) and shorter.system.depth == 3
    np.testing.assert_allclose(shorter.states(trained.ocp.inputs), trained.train_states[:4], atol=1e-4)


def test_engine_dispatch():
    node = NeuralODE(state_dim=2, depth=2, horizon=1.0)
    ocp = _spiral_ocp(node, count=10)
    for engine in ("adjoint", "autograd"):
        with pytest.raises(ValueError, match=r"engine: expected 'auto' or one of \['scheme', 'system'\]"):
            tp.solve_ocp(ocp, engine=engine, steps=1, progress=False)
    resnet_ocp = _spiral_ocp(tp.SingleLayerResNet(state_dim=2, depth=2), count=10)
    with pytest.raises(ValueError, match="engine"):
        tp.solve_ocp(resnet_ocp, engine="system", steps=1, progress=False)
    solution = tp.solve_ocp(ocp, engine="system", method="lbfgs", steps=2, progress=False)
    assert isinstance(solution, tp.ODESolution)


@pytest.mark.parametrize("kwargs,argument", [
    (dict(method="rk45"), "method"),
    (dict(parametrisation="spline"), "parametrisation"),
    (dict(horizon=0.0), "horizon"),
    (dict(depth=0), "depth"),
    (dict(activations=("tanh", "relu")), "activations"),
    (dict(hidden_dim=4, activations="tanh"), "activations"),
    (dict(substeps=0), "substeps"),
    (dict(rtol=-1.0), "rtol"),
    (dict(options={"perturb": False}), "options"),
    (dict(adjoint="yes"), "adjoint"),
])
def test_bad_arguments_name_themselves(kwargs, argument):
    settings = dict(state_dim=2, depth=3, horizon=1.0)
    settings.update(kwargs)
    with pytest.raises(ValueError, match=f"^{argument}"):
        NeuralODE(**settings)


def test_bad_method_lists_the_valid_names_and_bad_times_and_theta_are_refused():
    with pytest.raises(ValueError, match="dopri5.*rk4"):
        NeuralODE(state_dim=2, depth=3, horizon=1.0, method="rk45")
    node = NeuralODE(state_dim=2, depth=3, horizon=1.0)
    x0 = np.zeros((4, 2))
    theta = np.zeros(node.parameter_count)
    with pytest.raises(ValueError, match="^times"):
        node.rollout(theta, x0, [0.0, 0.6, 0.5])
    with pytest.raises(ValueError, match="^times"):
        node.rollout(theta, x0, [0.1, 0.5])
    with pytest.raises(ValueError, match="^times"):
        node.rollout(theta, x0, [0.0, 2.0])
    with pytest.raises(ValueError, match="^theta"):
        node.rollout(np.zeros(5), x0)
    with pytest.raises(ValueError, match="^x0"):
        node.rollout(theta, np.zeros((4, 3)))


def test_cli_node_spirals_writes_a_run_folder(tmp_path):
    from turnpike.cli import main

    out = tmp_path / "node"
    code = main(["node-spirals", "--out", str(out), "--horizons", "1,2", "--interval", "0.5", "--steps", "2,2",
                 "--ode-method", "rk4", "--no-plots", "--quiet"])
    assert code == 0
    config = json.loads((out / "config.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    assert config["config"]["horizons"] == [1.0, 2.0] and config["seed"] == 0
    assert set(metrics["per_horizon"]) == {"1", "2"}
    m = metrics["per_horizon"]["2"]
    assert m["depth"] == 4 and len(m["times"]) == len(m["distance_over_time"]) == 4 * 8 + 1
    assert m["theta_measure"] + m["time_near_turnpike"] == pytest.approx(2.0)
    assert metrics["theta_measure"] == [metrics["per_horizon"][k]["theta_measure"] for k in ("1", "2")]
    assert config["config"]["warm_method"] == ["lbfgs"]
    assert [m["steps"] for m in metrics["per_horizon"].values()] == [4, 2]      # the warm horizon: L-BFGS only
    assert main(["node-spirals", "--out", str(out), "--ode-method", "rk45", "--quiet"]) == 2
    assert main(["node-spirals", "--out", str(out), "--warm-method", "sgd", "--quiet"]) == 2
    assert main(["node-spirals", "--out", str(tmp_path / "all"), "--horizons", "1,2", "--steps", "2,2",
                 "--warm-method", "all", "--no-plots", "--quiet"]) == 0
    all_metrics = json.loads((tmp_path / "all" / "metrics.json").read_text())
    assert [m["steps"] for m in all_metrics["per_horizon"].values()] == [4, 4]


@pytest.mark.slow
def test_measure_turnpike_on_the_two_spirals(tmp_path):
    """Prop. 16 measured: μ[Θ_ε,T] stays bounded while the time near the turnpike grows."""
    config = tp.experiments.NodeSpiralsConfig(horizons=(5.0, 10.0, 20.0))
    metrics = tp.experiments.run_node_spirals(config, tmp_path, plots=False)
    measures, near = metrics["theta_measure"], metrics["time_near_turnpike"]
    assert all(a == 1.0 for a in metrics["train_accuracy"])
    assert max(measures) <= 2.0 * min(measures) and max(measures) < 3.0
    assert near[0] < near[1] < near[2] and near[2] > 15.0


def test_horizon_summary_measures_agree_with_the_solution_s_own(trained):
    from turnpike.experiments._node import summarise_horizon

    eps = 0.5 * float(trained.distance_over_time(resolution=4)[1].max())
    summary = summarise_horizon(trained, eps, resolution=4)
    assert summary["theta_measure"] == pytest.approx(trained.theta_measure(eps, resolution=4))
    assert summary["theta_measure_with_controls"] == pytest.approx(
        trained.theta_measure(eps, resolution=4, include_controls=True))
    assert summary["theta_measure_with_controls"] >= summary["theta_measure"] > 0
