"""Discretise-then-optimise: the exact adjoint of fixed-step Runge–Kutta schemes of the neural ODE.

The independent reference is back-propagation through torchdiffeq's solve with the same scheme
(engine "system"): the scheme's J and gradient must agree with it to round-off.
"""
import numpy as np
import pytest
import torch

import turnpike as tp
from turnpike import OCP, InputPenalty, NeuralODE, SoftCrossEntropy
from turnpike.backends import available_engines
from turnpike.backends._engines import adjoint_objective, scheme_objective, system_objective

from _compare import assert_same_objective

torch.set_num_threads(1)


def _ocp(node, *, stage=True, terminal=True, count=12, seed=0):
    inputs, labels = tp.data.two_spirals(count, turns=1.0, seed=seed)
    soft = SoftCrossEntropy(num_classes=2, p_d=0.9)
    return OCP(node, inputs, labels, stage_cost=(soft + InputPenalty(0.02)) if stage else InputPenalty(0.02),
               terminal_cost=soft if terminal else None, stage_weight=0.8, terminal_weight=2.5)


@pytest.mark.parametrize("method", ["euler", "midpoint", "rk4"])
@pytest.mark.parametrize("substeps", [1, 3])
@pytest.mark.parametrize("hidden_dim,activations", [(None, "tanh"), (5, ("tanh", "identity")), (4, ("relu", "tanh"))])
@pytest.mark.parametrize("stage,terminal", [(True, True), (False, True), (True, False)])
def test_scheme_adjoint_equals_backpropagation_through_the_same_scheme(method, substeps, hidden_dim, activations,
                                                                       stage, terminal):
    node = NeuralODE(state_dim=2, depth=4, horizon=2.0, hidden_dim=hidden_dim, activations=activations,
                     method=method, substeps=substeps)
    ocp = _ocp(node, stage=stage, terminal=terminal)
    theta = node.initial_controls(np.random.default_rng(1), 0.9)
    assert_same_objective(scheme_objective(ocp, theta, ocp.inputs, ocp.labels),
                          system_objective(ocp, theta, ocp.inputs, ocp.labels))


def test_euler_with_one_substep_is_the_resnet_exactly():
    h = 0.25
    for resnet in (tp.SingleLayerResNet(state_dim=2, depth=6, step_size=h),
                   tp.TwoLayerResNet(state_dim=2, depth=6, hidden_dim=3, step_size=h)):
        node = NeuralODE.from_resnet(resnet)
        continuous = _ocp(node)
        discrete = OCP(resnet, continuous.inputs, continuous.labels, stage_cost=continuous.stage_cost,
                       terminal_cost=continuous.terminal_cost, stage_weight=0.8 * h, terminal_weight=2.5)
        theta = resnet.initial_controls(np.random.default_rng(2), 0.7)
        assert_same_objective(scheme_objective(continuous, theta, continuous.inputs, continuous.labels),
                              adjoint_objective(discrete, theta, discrete.inputs, discrete.labels),
                              rtol=1e-10, atol=1e-13)


def test_engines_declared_and_chosen():
    assert available_engines(NeuralODE(state_dim=2, depth=3, horizon=1.0)) == ("scheme", "system")      # rk4
    for settings in (dict(method="dopri5"), dict(parametrisation="piecewise_linear"), dict(adjoint=True),
                     dict(method="heun3")):
        node = NeuralODE(state_dim=2, depth=3, horizon=1.0, **settings)
        assert available_engines(node) == ("system",)
        with pytest.raises(ValueError, match="engine: expected 'auto' or 'system'"):
            tp.solve_ocp(_ocp(node), engine="scheme", steps=1, progress=False)
    node = NeuralODE(state_dim=2, depth=3, horizon=1.5, hidden_dim=4, method="midpoint", substeps=2)
    ocp = _ocp(node)
    # SGD, not Adam: Adam turns round-off in a zero gradient component into a full step
    runs = {engine: tp.solve_ocp(ocp, engine=engine, method="sgd", steps=8, options={"lr": 0.05}, seed=3,
                                 progress=False) for engine in ("auto", "system")}
    assert runs["auto"].extra["engine"] == "scheme" and runs["system"].extra["engine"] == "system"
    np.testing.assert_allclose(runs["auto"].history["objective"], runs["system"].history["objective"], rtol=1e-10)
    np.testing.assert_allclose(runs["auto"].controls, runs["system"].controls, rtol=1e-9, atol=1e-12)


def test_step_bound_adds_substeps_where_the_controls_are_large():
    node = NeuralODE(state_dim=2, depth=3, horizon=1.5, hidden_dim=4, method="rk4", step_bound=0.5)
    theta = node.initial_controls(np.random.default_rng(4), 0.1)
    blocks = node.unpack(theta)
    blocks["A1"][1] *= 40.0                                      # a stiff middle interval
    theta = node.pack(blocks)
    lipschitz = [np.linalg.norm(blocks["A2"][k], 2) * np.linalg.norm(blocks["A1"][k], 2) for k in range(3)]
    expected = [max(1, int(np.ceil(0.5 * bound / 0.5))) for bound in lipschitz]
    assert node.interval_substeps(theta) == expected and expected[1] > 1 == expected[0]
    ocp = _ocp(node)
    assert_same_objective(scheme_objective(ocp, theta, ocp.inputs, ocp.labels),
                          system_objective(ocp, theta, ocp.inputs, ocp.labels))
    # the states on the grid are the scheme's: refining interval 1 by hand gives the same result
    by_hand = NeuralODE(state_dim=2, depth=3, horizon=1.5, hidden_dim=4, method="rk4", substeps=expected[1])
    np.testing.assert_allclose(node.rollout(theta, ocp.inputs)[2], by_hand.rollout(theta, ocp.inputs)[2], atol=1e-3)
    with pytest.raises(ValueError, match="step_bound: expected a number > 0"):
        NeuralODE(state_dim=2, depth=3, horizon=1.0, step_bound=0.0)


def test_warm_start_keeps_the_arcs_and_waits_on_the_turnpike_in_between():
    from turnpike.experiments._node import NodeSpiralsConfig, a_posteriori_check, warm_start_controls

    config = NodeSpiralsConfig(num_train=40, num_test=40, horizons=(2.0, 4.0), steps=(10, 5), resolution=2)
    short = config.system(2.0)
    ocp = _ocp(short, count=40)
    solution = tp.solve_ocp(ocp, method="adam", steps=10, options={"lr": 0.05}, progress=False)
    longer = config.system(4.0)
    theta = warm_start_controls(solution, longer)
    blocks, old = longer.unpack(theta), short.unpack(solution.controls)
    for name in blocks:
        np.testing.assert_array_equal(blocks[name][:2], old[name][:2])
        np.testing.assert_array_equal(blocks[name][-2:], old[name][2:])
        assert not blocks[name][2:6].any()
    # zero controls hold the state: the longer network ends where the shorter one did
    np.testing.assert_allclose(longer.rollout(theta, ocp.inputs)[-1], short.rollout(solution.controls, ocp.inputs)[-1],
                               atol=1e-12)
    check = a_posteriori_check(solution, config, eps=0.2)
    assert check["method"] == "dopri5" and check["max_state_difference"] < 1e-2
    with pytest.raises(ValueError, match="horizons: expected increasing horizons with warm_start"):
        NodeSpiralsConfig(horizons=(10.0, 5.0))


@pytest.mark.parametrize("method", ["euler", "midpoint", "rk4"])
@pytest.mark.parametrize("step_bound", [None, 0.3])
def test_numpy_rollout_steps_like_torchdiffeqs_fixed_grid(method, step_bound):
    """The numpy rollout of a fixed-step ODE (dense μ[Θ_ε,T] evaluations) against torchdiffeq on
    the same grid: the substeps merged with the requested times, also times between grid points."""
    from turnpike.systems._rk import scheme_states

    rng = np.random.default_rng(5)
    node = NeuralODE(state_dim=2, depth=5, horizon=2.5, hidden_dim=6, method=method, substeps=2,
                     step_bound=step_bound)
    theta, inputs = node.initial_controls(rng, 2.0), rng.standard_normal((20, 2))
    for times in (list(node.dense_times(3)), [0.0, 0.37, 1.0, 2.2], [0.0, 0.5]):
        with torch.no_grad():
            reference, _ = node.integrate(torch.as_tensor(theta), torch.as_tensor(inputs), times)
        np.testing.assert_allclose(scheme_states(node, theta, inputs, times), reference.numpy(),
                                   rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(node.rollout(theta, inputs), scheme_states(node, theta, inputs, node._nodes()))
    assert node.rollout(theta.astype(np.float32), inputs.astype(np.float32)).dtype == np.float32


def test_warm_started_horizons_run_the_warm_schedule():
    from turnpike.experiments._node import NodeSpiralsConfig

    config = NodeSpiralsConfig(method=("adam", "lbfgs"), steps=(30, 40), warm_method="lbfgs")
    assert config.schedule(warm=False) == {"method": ("adam", "lbfgs"), "steps": (30, 40),
                                           "options": config.options}
    assert config.schedule(warm=True) == {"method": ("lbfgs",), "steps": (40,), "options": config.options[1:]}
    assert NodeSpiralsConfig(warm_method=None).schedule(warm=True)["method"] == ("adam", "lbfgs")
    with pytest.raises(ValueError, match=r"warm_method: expected methods among method=\('adam',\)"):
        NodeSpiralsConfig(method="adam", warm_method=("lbfgs",))
