"""OCP validation, solve_ocp (optimisers, engines, seeds, divergence guard) and the Solution object."""
import math

import numpy as np
import pytest
import torch

import turnpike
from turnpike import (OCP, CrossEntropy, InputPenalty, L2Tracking, SingleLayerResNet, SoftCrossEntropy,
                      TwoLayerResNet, solve_ocp)
from turnpike.backends._engines import adjoint_objective, autograd_objective


def pad(x, width=3):
    return np.concatenate([x, np.zeros((len(x), width - x.shape[1]))], axis=1)


def small_ocp(depth=4, samples=16, system=None, **weights):
    inputs, labels = turnpike.data.two_spirals(samples, turns=0.5)
    system = system or TwoLayerResNet(state_dim=3, depth=depth, hidden_dim=4)
    soft = SoftCrossEntropy(num_classes=2, p_d=0.9)
    return OCP(system, pad(inputs), labels, stage_cost=soft + InputPenalty(1e-3), terminal_cost=soft,
               **{"terminal_weight": 2.0, **weights})


def objective_at(ocp, theta):
    return adjoint_objective(ocp, theta, ocp.inputs, ocp.labels)[0]


def initial(ocp, seed=0, scale=0.1):
    """The controls solve_ocp starts from for this seed (documented: system.initial_controls)."""
    return ocp.system.initial_controls(np.random.default_rng(seed), scale)


# --- OCP validation -----------------------------------------------------------------------------

SYSTEM = SingleLayerResNet(state_dim=3, depth=3)
X = np.random.default_rng(0).normal(size=(6, 3))
Y = np.array([0, 1, 2, 0, 1, 2])
CE = CrossEntropy(num_classes=3)


def nan_inputs():
    x = X.copy()
    x[2, 1] = np.nan
    return x


def inf_inputs():
    x = X.copy()
    x[0, 0] = np.inf
    return x


@pytest.mark.parametrize("kwargs, argument", [
    (dict(inputs=nan_inputs()), "inputs"),
    (dict(inputs=inf_inputs()), "inputs"),
    (dict(inputs=X[:, :2]), "inputs"),
    (dict(inputs=X.reshape(-1)), "inputs"),
    (dict(inputs=X[None]), "inputs"),
    (dict(inputs=np.zeros((0, 3)), labels=np.zeros(0, dtype=int)), "inputs"),
    (dict(labels=Y[:5]), "labels"),
    (dict(labels=Y.reshape(2, 3)), "labels"),
    (dict(labels=np.array([0, 1, 3, 0, 1, 2])), "labels"),
    (dict(labels=np.array([0, 1, -1, 0, 1, 2])), "labels"),
    (dict(labels=np.array([0, 1, 0.5, 0, 1, 2])), "labels"),
    (dict(stage_weight=-0.1), "stage_weight"),
    (dict(terminal_weight=-1.0), "terminal_weight"),
    (dict(terminal_weight=float("nan")), "terminal_weight"),
    (dict(terminal_cost=CE + InputPenalty(0.1)), "terminal_cost"),
    (dict(terminal_cost=None, stage_cost=None), "cost"),
    (dict(terminal_cost=CrossEntropy(num_classes=4)), "terminal_cost"),
    (dict(stage_cost=SoftCrossEntropy(num_classes=5, p_d=0.9)), "stage_cost"),
    (dict(terminal_cost=L2Tracking(np.zeros(4))), "terminal_cost"),
    (dict(terminal_cost="cross-entropy"), "terminal_cost"),
    (dict(system="resnet"), "system"),
])
def test_ocp_rejects_bad_input(kwargs, argument):
    arguments = dict(system=SYSTEM, inputs=X, labels=Y, terminal_cost=CE)
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=argument):
        OCP(**arguments)


def test_ocp_nan_message_counts_bad_entries():
    with pytest.raises(ValueError, match=r"inputs: expected finite values, got 1 NaN"):
        OCP(SYSTEM, nan_inputs(), Y, terminal_cost=CE)


def test_ocp_accepts_integral_float_labels_and_torch_free_arrays():
    ocp = OCP(SYSTEM, X.tolist(), Y.astype(float), terminal_cost=CE)
    assert ocp.labels.dtype == np.int64 and np.array_equal(ocp.labels, Y)
    assert ocp.inputs.dtype == np.float64 and ocp.num_classes == 3 and ocp.depth == 3


def test_ocp_weights_and_input_penalty():
    ocp = OCP(SYSTEM, X, Y, stage_cost=CE + InputPenalty(0.2) + 0.5 * InputPenalty(0.1), stage_weight=3.0)
    assert ocp.input_penalty == pytest.approx(3.0 * 0.25)
    assert ocp.soft_cross_entropy() is None
    assert ocp.stage_state_cost.input_coefficient() == 0.0
    soft = SoftCrossEntropy(num_classes=3, p_d=0.7)
    assert OCP(SYSTEM, X, Y, stage_cost=InputPenalty(0.1), terminal_cost=soft).soft_cross_entropy() is soft
    assert OCP(SYSTEM, X, Y, stage_cost=InputPenalty(0.1), terminal_cost=soft).stage_state_cost is None


def test_labels_checked_against_l2_tracking_table():
    with pytest.raises(ValueError, match="labels"):
        OCP(SYSTEM, X, np.array([0, 1, 5, 0, 1, 1]), terminal_cost=L2Tracking(np.zeros((2, 3))))


def test_engines_agree_when_objective_has_no_active_term():
    try:
        ocp = OCP(SYSTEM, X, Y, terminal_cost=CE, terminal_weight=0.0)
    except ValueError:
        return   # refusing an identically-zero objective would be a fix too
    theta = np.ones(SYSTEM.parameter_count)
    value_adj, grad_adj = adjoint_objective(ocp, theta, ocp.inputs, ocp.labels)
    value_auto, grad_auto = autograd_objective(ocp, theta, ocp.inputs, ocp.labels)
    assert value_adj == value_auto == 0.0
    np.testing.assert_array_equal(grad_adj, grad_auto)


# --- solve_ocp argument validation ----------------------------------------------------------------

@pytest.mark.parametrize("kwargs, pattern", [
    (dict(method="newton"), r"method.*'adam'.*'lbfgs'.*'sgd'"),
    (dict(method=[]), "method"),
    (dict(method="adam", options={"learning_rate": 0.1}), r"expected valid options .*'lr'.*got unknown option\(s\) \['learning_rate'\]"),
    (dict(method="lbfgs", options={"lr": 0.1}), r"expected valid options .*'memory'.*got unknown option\(s\) \['lr'\]"),
    (dict(method="lbfgs", batch_size=4), "batch_size"),
    (dict(method=("adam", "lbfgs"), steps=(3, 3), batch_size=4), "batch_size"),
    (dict(method="adam", batch_size=0), "batch_size"),
    (dict(steps=0), "steps"),
    (dict(steps=-5), "steps"),
    (dict(method=("adam", "lbfgs"), steps=(3, 3, 3)), "steps"),
    (dict(method=("adam", "lbfgs"), options=({},)), "options"),
    (dict(engine="jax"), "engine"),
    (dict(init_scale=-1.0), "init_scale"),
    (dict(seed=1.5), "seed"),
    (dict(initial_controls=np.zeros(5)), "initial_controls"),
    (dict(initial_controls=np.full(SYSTEM.parameter_count, np.nan)), "initial_controls"),
    (dict(test_data=(X[:, :2], Y)), r"test_data\[0\]"),
    (dict(test_data=(X, Y + 1)), r"test_data\[1\]"),
    (dict(method="adam", options={"lr": -0.1}), "lr"),
    (dict(method="adam", options={"schedule": "linear"}), "schedule"),
    (dict(device="tpu"), "device.*'cpu', 'cuda' or 'cuda:N'"),
    (dict(device=7), "device"),
])
def test_solve_rejects_bad_arguments(kwargs, pattern):
    ocp = OCP(SYSTEM, X, Y, terminal_cost=CE)
    with pytest.raises(ValueError, match=pattern):
        solve_ocp(ocp, progress=False, **{"steps": 2, **kwargs})


# --- repeatability --------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs", [
    dict(method="adam", steps=12, batch_size=5, options={"lr": 0.05}),
    dict(method="sgd", steps=12, batch_size=6),
    dict(method="lbfgs", steps=10),
], ids=["adam-minibatch", "sgd-minibatch", "lbfgs"])
def test_same_seed_same_result_different_seed_different_result(kwargs):
    ocp = small_ocp()
    a = solve_ocp(ocp, seed=3, progress=False, **kwargs)
    b = solve_ocp(ocp, seed=3, progress=False, **kwargs)
    c = solve_ocp(ocp, seed=4, progress=False, **kwargs)
    assert np.array_equal(a.controls, b.controls)
    assert np.array_equal(a.history["objective"], b.history["objective"])
    assert np.array_equal(a.train_states, b.train_states)
    assert a.seed == 3
    assert not np.allclose(a.controls, c.controls)


def test_minibatch_order_depends_on_seed_not_only_initial_controls():
    """Same start, different seed: mini-batch Adam follows a different path."""
    ocp = small_ocp()
    theta0 = initial(ocp, seed=0)
    runs = [solve_ocp(ocp, method="adam", steps=8, batch_size=4, seed=s, initial_controls=theta0,
                      progress=False) for s in (0, 1)]
    assert not np.array_equal(runs[0].history["objective"], runs[1].history["objective"])
    full = [solve_ocp(ocp, method="adam", steps=8, seed=s, initial_controls=theta0, progress=False)
            for s in (0, 1)]
    assert np.array_equal(full[0].controls, full[1].controls)   # full batch: the seed only sets the start


# --- optimisation progress ----------------------------------------------------------------------

@pytest.mark.parametrize("method, steps, options", [
    ("adam", 40, {"lr": 0.03}),
    ("sgd", 40, {"lr": 0.1}),
    ("lbfgs", 30, None),
    (("adam", "lbfgs"), (15, 20), ({"lr": 0.03}, None)),
], ids=["adam", "sgd", "lbfgs", "adam+lbfgs"])
def test_solve_decreases_the_objective(method, steps, options):
    ocp = small_ocp()
    theta0 = initial(ocp, seed=2)
    start = objective_at(ocp, theta0)
    solution = solve_ocp(ocp, method=method, steps=steps, options=options, seed=2, progress=False)
    assert solution.success and solution.status in ("max_steps", "converged")
    assert solution.objective < 0.9 * start
    assert solution.objective == pytest.approx(objective_at(ocp, solution.controls), rel=1e-12)
    history = solution.history
    total = sum(steps) if isinstance(steps, tuple) else steps
    n = len(history["objective"])
    assert all(len(history[key]) == n for key in ("step", "objective", "method", "time_s"))
    np.testing.assert_array_equal(history["step"], np.arange(n))
    assert np.all(np.diff(history["time_s"]) >= 0)
    assert np.all(np.isfinite(history["objective"]))
    methods = (method,) if isinstance(method, str) else method
    per_method = steps if isinstance(steps, tuple) else (steps,)
    for name, count in zip(methods, per_method):
        recorded = int(np.sum(history["method"] == name))
        if name == "lbfgs":
            assert 1 <= recorded <= count
        else:   # first-order methods report once per step, before the update
            assert recorded == count
    assert n <= total
    if methods[0] in ("adam", "sgd"):
        assert history["objective"][0] == pytest.approx(start, rel=1e-12)
    if methods == ("lbfgs",):
        # L-BFGS's line search only accepts decreasing steps
        assert np.all(np.diff(history["objective"]) <= 1e-12)
        assert history["objective"][-1] == pytest.approx(solution.objective, rel=1e-12)


def test_sequence_warm_starts_second_method():
    ocp = small_ocp()
    first = solve_ocp(ocp, method="adam", steps=10, options={"lr": 0.03}, seed=5, progress=False)
    both = solve_ocp(ocp, method=("adam", "lbfgs"), steps=(10, 5), options=({"lr": 0.03}, None), seed=5,
                     progress=False)
    adam_part = both.history["objective"][both.history["method"] == "adam"]
    np.testing.assert_array_equal(adam_part, first.history["objective"])
    continued = solve_ocp(ocp, method="lbfgs", steps=5, initial_controls=first.controls, progress=False)
    np.testing.assert_allclose(both.controls, continued.controls, rtol=1e-10, atol=1e-12)


def test_autograd_and_adjoint_engines_give_the_same_solve():
    ocp = small_ocp(depth=3, samples=8)
    a = solve_ocp(ocp, method="lbfgs", steps=6, engine="adjoint", seed=1, progress=False)
    b = solve_ocp(ocp, method="lbfgs", steps=6, engine="autograd", seed=1, progress=False)
    assert a.extra["engine"] == "adjoint" and b.extra["engine"] == "autograd"
    assert len(a.history["objective"]) == len(b.history["objective"]) == 6
    np.testing.assert_allclose(a.controls, b.controls, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(a.history["objective"], b.history["objective"], rtol=1e-8)
    assert not np.allclose(a.controls, initial(ocp, seed=1))


# --- divergence guard and callbacks -------------------------------------------------------------

def exploding_ocp():
    """Linear residual layers (identity activation), 25 deep: a huge step makes the states overflow."""
    system = SingleLayerResNet(state_dim=4, depth=25, activation="identity")
    inputs, labels = turnpike.data.two_spirals(8, turns=0.5)
    return OCP(system, pad(inputs, 4), labels, terminal_cost=L2Tracking(np.zeros(4)))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("method", ["adam", "sgd"])
def test_divergence_guard_returns_last_finite_controls(method):
    ocp = exploding_ocp()
    theta0 = initial(ocp, seed=0)
    lr = 1e6 if method == "adam" else 1e12
    solution = solve_ocp(ocp, method=method, steps=10, options={"lr": lr}, initial_controls=theta0,
                         progress=False)
    assert solution.status == "diverged"
    assert not solution.success
    assert np.all(np.isfinite(solution.controls))
    assert "learning rate" in solution.message and "lr" in solution.message
    # the last finite objective was the one at the start: those controls come back
    assert len(solution.history["objective"]) == 1
    np.testing.assert_array_equal(solution.controls, theta0)
    assert np.isfinite(solution.objective)
    assert np.all(np.isfinite(solution.train_states))


def test_divergence_guard_catches_exploding_but_finite_objective():
    system = SingleLayerResNet(state_dim=3, depth=4, activation="relu")
    ocp = small_ocp(system=system)
    start = objective_at(ocp, initial(ocp))
    unguarded = solve_ocp(ocp, method="adam", steps=20, options={"lr": 1e6}, progress=False,
                          divergence_factor=1e300)
    assert unguarded.objective > 1e6 * start   # without the guard it really blows up ...
    solution = solve_ocp(ocp, method="adam", steps=20, options={"lr": 1e6}, progress=False)
    assert solution.status == "diverged"       # ... and the guard says so
    assert "exploding" in solution.message
    assert solution.objective <= 1e6 * start   # and returns the last good controls


@pytest.mark.parametrize("method", ["adam", "lbfgs"])
def test_callback_returning_false_stops(method):
    ocp = small_ocp()
    seen = []

    def callback(step, value, controls):
        seen.append((step, value, np.array(controls, copy=True)))
        return len(seen) < 3

    solution = solve_ocp(ocp, method=method, steps=20, callback=callback, progress=False)
    assert solution.status == "stopped" and not solution.success
    assert "stopped" in solution.message
    steps = [s for s, _, _ in seen]
    assert len(steps) == 3 and np.all(np.diff(steps) == 1)
    assert len(solution.history["objective"]) == 3
    np.testing.assert_array_equal(solution.history["objective"], [v for _, v, _ in seen])
    np.testing.assert_array_equal(solution.controls, seen[-1][2])


@pytest.mark.parametrize("method", [
    "adam",
    "lbfgs",
])
def test_callback_controls_are_a_snapshot_matching_the_reported_objective(method):
    ocp = small_ocp()
    seen = []
    solve_ocp(ocp, method=method, steps=6, callback=lambda s, v, c: seen.append((v, c)), progress=False)
    assert len(seen) >= 3
    for value, controls in seen:
        assert objective_at(ocp, controls) == pytest.approx(value, rel=1e-12)


# --- the Solution object on a trained two-spirals problem -----------------------------------------

C, P_D = 2, 0.9


@pytest.fixture(scope="module")
def spirals():
    inputs, labels = turnpike.data.two_spirals(64, turns=0.5)
    test_inputs, test_labels = turnpike.data.two_spirals(40, turns=0.5, test=True)
    system = TwoLayerResNet(state_dim=3, depth=8, hidden_dim=8)
    soft = SoftCrossEntropy(num_classes=C, p_d=P_D)
    ocp = OCP(system, pad(inputs), labels, stage_cost=soft + InputPenalty(1e-3), terminal_cost=soft,
              terminal_weight=5.0)
    return solve_ocp(ocp, method="lbfgs", steps=150, seed=0, progress=False,
                     test_data=(pad(test_inputs), test_labels))


def independent_distance(states, labels):
    delta = -math.log((C - 1) * P_D / (1 - P_D))
    logits = states[..., :C]
    projected = logits - logits.mean(axis=-1, keepdims=True)
    point = np.full(labels.shape + (C,), delta / C)
    point[np.arange(len(labels)), labels] = -(C - 1) * delta / C
    return np.sqrt((np.sum((projected - point) ** 2, axis=-1)).mean(axis=-1))


def brute_turnpike_layer(distance, eps):
    for k in range(len(distance)):
        if np.all(distance[k:] <= eps):
            return k
    return None


def test_solution_shapes(spirals):
    N, D = spirals.depth, 64
    assert spirals.train_states.shape == (N + 1, D, 3)
    assert spirals.test_states.shape == (N + 1, 40, 3)
    np.testing.assert_array_equal(spirals.train_states[0], spirals.ocp.inputs)
    np.testing.assert_allclose(spirals.train_states, spirals.network.states(spirals.ocp.inputs), rtol=1e-14)
    assert spirals.loss_per_layer().shape == (N + 1,)
    assert spirals.loss_per_layer("test").shape == (N + 1,)
    assert spirals.control_norms().shape == (N,)
    assert spirals.distance_to_turnpike().shape == (N + 1,)
    assert spirals.controls.shape == (spirals.ocp.system.parameter_count,)


def test_solution_loss_per_layer_is_mean_soft_ce(spirals):
    soft = spirals.ocp.soft_cross_entropy()
    for split, states, labels in (("train", spirals.train_states, spirals.ocp.labels),
                                  ("test", spirals.test_states, spirals.test_labels)):
        expected = [soft.per_sample(s[:, :C], labels).mean() for s in states]   # readout: first C
        np.testing.assert_allclose(spirals.loss_per_layer(split), expected, rtol=1e-12)
    other = CrossEntropy(num_classes=C)
    np.testing.assert_allclose(spirals.loss_per_layer(cost=other),
                               [other.per_sample(s[:, :C], spirals.ocp.labels).mean()
                                for s in spirals.train_states],
                               rtol=1e-12)


def test_training_reached_the_turnpike(spirals):
    """The trained net classifies the spirals, and its final states sit near the minimiser line."""
    assert spirals.accuracy() >= 0.95
    distance = spirals.distance_to_turnpike()
    assert distance[-1] < 0.2 * distance[0]
    assert spirals.loss_per_layer()[-1] < 0.05


def test_distance_to_turnpike_matches_independent_computation(spirals):
    np.testing.assert_allclose(spirals.distance_to_turnpike(),
                               independent_distance(spirals.train_states, spirals.ocp.labels), rtol=1e-12)
    np.testing.assert_allclose(spirals.distance_to_turnpike("test"),
                               independent_distance(spirals.test_states, spirals.test_labels), rtol=1e-12)


def test_turnpike_set_and_layer_agree_with_distance(spirals):
    distance = spirals.distance_to_turnpike()
    candidates = sorted(set(distance.tolist()) | {float(d) * 1.0001 for d in distance} | {0.5 * distance.min()})
    for eps in candidates:
        np.testing.assert_array_equal(spirals.turnpike_set(eps), np.flatnonzero(distance <= eps))
        assert spirals.turnpike_layer(eps) == brute_turnpike_layer(distance, eps)
    assert spirals.turnpike_layer(0.5 * distance[-1]) is None
    assert spirals.turnpike_layer(distance.max()) == 0
    with pytest.raises(ValueError, match="eps"):
        spirals.turnpike_layer(0.0)
    with pytest.raises(ValueError, match="eps"):
        spirals.turnpike_set(-1.0)


def test_prune_at_turnpike_layer_keeps_first_layers(spirals):
    distance = spirals.distance_to_turnpike()
    tested = 0
    for eps in distance * 1.0001:
        k = spirals.turnpike_layer(eps)
        if k is None or k < 1:
            continue
        pruned = spirals.prune(k)
        assert pruned.depth == k
        np.testing.assert_allclose(pruned.states(spirals.ocp.inputs), spirals.train_states[:k + 1],
                                   rtol=1e-13, atol=1e-15)
        tested += 1
    assert tested >= 1


def test_accuracy(spirals):
    for split, inputs, labels in (("train", spirals.ocp.inputs, spirals.ocp.labels),
                                  ("test", None, spirals.test_labels)):
        per_layer = spirals.accuracy_per_layer(split)
        assert per_layer.shape == (spirals.depth + 1,)
        assert np.all((per_layer >= 0) & (per_layer <= 1))
        assert per_layer[-1] == spirals.accuracy(split)
    predicted = spirals.network.predict(spirals.ocp.inputs, C)
    assert spirals.accuracy() == pytest.approx(np.mean(predicted == spirals.ocp.labels))
    states = spirals.train_states
    np.testing.assert_allclose(spirals.accuracy_per_layer(),
                               [(s[:, :C].argmax(1) == spirals.ocp.labels).mean() for s in states])
    with pytest.raises(ValueError, match="split"):
        spirals.accuracy("validation")


def test_progress_bar_does_not_change_the_result():
    ocp = small_ocp(depth=3, samples=8)
    quiet = solve_ocp(ocp, method="adam", steps=5, progress=False)
    shown = solve_ocp(ocp, method="adam", steps=5, progress=True)
    np.testing.assert_array_equal(quiet.controls, shown.controls)


def test_progress_bar_shows_objective_and_batch_accuracy(capsys):
    ocp = small_ocp(depth=3, samples=8)
    solve_ocp(ocp, method="adam", steps=20, progress=True)
    shown = capsys.readouterr().err
    assert "J=" in shown and "acc=" in shown


def test_cuda_device_is_refused_without_a_gpu():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ValueError, match="torch sees no CUDA GPU"):
        solve_ocp(small_ocp(), method="adam", steps=2, device="cuda", progress=False)


# --- Adam against torch.optim.Adam; updates never overwrite the controls they start from ---------

@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_adam_stepper_matches_torch_optim_adam(dtype):
    from turnpike.backends._optimizers import METHODS, AdamStepper
    rng = np.random.default_rng(0)
    theta = rng.normal(size=50).astype(dtype)
    options = {**METHODS["adam"].defaults, "lr": 0.05, "schedule": "constant"}
    stepper = AdamStepper(theta, 6, options)
    parameter = torch.nn.Parameter(torch.tensor(theta))
    reference = torch.optim.Adam([parameter], lr=0.05, betas=(0.9, 0.999), eps=1e-8, foreach=False)
    tolerance = 1e-12 if dtype == np.float64 else 1e-5
    for step in range(6):
        gradient = np.sin(theta * (step + 1)).astype(dtype)     # changes with θ and the step
        before = theta.copy()
        theta = stepper.update(theta, gradient, step)
        parameter.grad = torch.tensor(gradient)
        reference.step()
        np.testing.assert_allclose(theta, parameter.detach().numpy(), rtol=tolerance, atol=tolerance)
        assert not np.shares_memory(theta, before)


@pytest.mark.parametrize("name", ["adam", "sgd"])
def test_updates_leave_the_previous_controls_intact(name):
    """The solver keeps θ_t as the last good state while θ_{t+1} is formed: updates write elsewhere."""
    from turnpike.backends._optimizers import METHODS
    method = METHODS[name]
    theta = np.linspace(-1.0, 1.0, 30)
    stepper = method.stepper(theta, 10, method.defaults)
    history = [theta.copy()]
    for step in range(5):
        previous = theta
        theta = stepper.update(theta, np.cos(theta), step)
        np.testing.assert_array_equal(previous, history[-1])   # θ_t untouched by the update
        assert not np.array_equal(theta, previous)
        history.append(theta.copy())


@pytest.mark.parametrize("method, kwargs", [
    ("adam", dict(batch_size=5, options={"lr": 0.05})),
    (("adam", "lbfgs"), dict(steps=(8, 4), options=({"lr": 0.05}, {}))),
])
def test_device_resident_path_on_cpu_matches_numpy_path(monkeypatch, tmp_path, method, kwargs):
    """CPU smoke test of the GPU code path: controls, moments and data as torch tensors.

    Both runs take the buffered sweep: Adam turns round-off in near-zero gradient components
    into whole steps, so the plain numpy sweep would agree only to about 1e-5.
    """
    import turnpike.backends._flat as solve_module
    monkeypatch.setattr(solve_module, "_BUFFERED_PRODUCT_WORK", 0)
    ocp = small_ocp(depth=3, samples=12)
    settings = {"method": method, "steps": 8, "seed": 2, "progress": False, **kwargs}
    plain = solve_ocp(ocp, checkpoint=tmp_path / "plain.npz", **settings)
    monkeypatch.setattr(solve_module, "_resident", lambda device: True)
    resident = solve_ocp(ocp, checkpoint=tmp_path / "resident.npz", **settings)
    np.testing.assert_allclose(resident.controls, plain.controls, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(resident.history["objective"], plain.history["objective"], rtol=1e-9)
    assert resident.objective == pytest.approx(plain.objective, rel=1e-9)
    saved = turnpike._runs.read_npz(tmp_path / "resident.npz")
    np.testing.assert_allclose(saved["theta"], resident.controls, rtol=1e-12)


@pytest.mark.parametrize("resident", [False, True])
def test_float32_buffered_sweep_with_lbfgs_between_adam_phases(monkeypatch, resident):
    """L-BFGS steps in float64; its points and result are cast back to the solve's float32."""
    import turnpike.backends._flat as solve_module
    monkeypatch.setattr(solve_module, "_BUFFERED_PRODUCT_WORK", 0)
    if resident:
        monkeypatch.setattr(solve_module, "_resident", lambda device: True)
    ocp = small_ocp(depth=3, samples=12)
    solution = solve_ocp(ocp, method=("adam", "lbfgs", "adam"), steps=(5, 5, 5),
                         options=({"lr": 0.05}, {}, {"lr": 0.01}), dtype="float32", progress=False)
    assert solution.status == "max_steps", solution.message
    assert solution.history["objective"][-1] < solution.history["objective"][0]
    assert solution.objective == pytest.approx(objective_at(ocp, solution.controls), rel=1e-5)


def test_solution_without_test_data_or_soft_ce():
    ocp = OCP(SYSTEM, X, Y, terminal_cost=CE)
    solution = solve_ocp(ocp, method="lbfgs", steps=2, progress=False)
    assert solution.test_states is None
    with pytest.raises(ValueError, match="split"):
        solution.accuracy("test")
    with pytest.raises(ValueError, match="SoftCrossEntropy"):
        solution.distance_to_turnpike()
    tracking = OCP(SYSTEM, X, Y, terminal_cost=L2Tracking(np.zeros(3)))
    with pytest.raises(ValueError, match="classification"):
        solve_ocp(tracking, method="lbfgs", steps=2, progress=False).accuracy()


def test_method_kinds_say_who_owns_the_loop():
    import torch

    from turnpike.backends._module import MODULE_METHODS
    from turnpike.backends._protocol import LoopMethod, StepMethod

    kinds = {name: type(m) for name, m in turnpike.METHODS.items()}
    assert kinds == {"adam": StepMethod, "sgd": StepMethod, "lbfgs": LoopMethod}
    assert all(isinstance(m, StepMethod) for m in MODULE_METHODS.values())
    # a module method builds its torch optimiser, as a flat one builds its stepper: one mechanism, no names
    parameter = torch.nn.Parameter(torch.zeros(3))
    for name, method in MODULE_METHODS.items():
        built = method.stepper([{"params": [parameter]}], method.defaults, weight_decay=0.1, capturable=False)
        assert isinstance(built, torch.optim.Optimizer) and built.param_groups[0]["weight_decay"] == 0.1, name


@pytest.mark.parametrize("n,hidden,batch,expected", [
    (2, 8, 480, "adjoint"),          # two spirals: per-operation overhead, numpy
    (256, 8, 128, "adjoint"),        # wide state, small products (buffered 2-4x slower, benchmarks/sizes.py)
    (64, 64, 512, "adjoint"),        # 2.1e6 multiply-adds, one thread
    (784, 8, 512, "adjoint"),        # 401,408 state entries, 3.2e6 multiply-adds, two threads
    (256, 128, 256, "adjoint"),      # 8.4e6
    (784, 128, 128, "buffered"),     # 1.28e7: the MNIST size
])
def test_auto_engine_and_threads_follow_the_measured_thresholds(n, hidden, batch, expected):
    from turnpike._solve_context import solve_threads
    from turnpike.backends import make_backend

    rng = np.random.default_rng(0)
    system = TwoLayerResNet(state_dim=n, depth=2, hidden_dim=hidden)
    ocp = OCP(system, rng.standard_normal((batch, n)), rng.integers(0, 2, batch),
              terminal_cost=SoftCrossEntropy(num_classes=2, p_d=0.9))
    settings = dict(seed=0, batch_size=batch, device=torch.device("cpu"), test_data=None)
    auto = make_backend(ocp, settings={"engine": "auto", "dtype": "float64"}, **settings)
    assert auto.engine == expected and auto.engine_name == "adjoint"
    assert make_backend(ocp, settings={"engine": "adjoint"}, **settings).engine == "adjoint"   # explicit: never swapped
    assert solve_threads("auto", auto.layer_work) == (1 if batch * n * max(n, hidden) < 3e6 else None)


def test_threads_limit_numpys_blas_while_solving_and_restore_it():
    """threads=k holds for the BLAS pool numpy calls too (the numpy sweep's products), not only torch's;
    with the numpy sweep torch keeps one thread (two busy-waiting pools on the same cores fight)."""
    from threadpoolctl import threadpool_info, threadpool_limits

    def blas_threads():
        return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]

    if not blas_threads():
        pytest.skip("numpy calls no BLAS threadpoolctl can see")
    torch_before = torch.get_num_threads()
    for engine, threads, expected in (("adjoint", 1, (1, 1)), ("adjoint", 2, (1, 2)), ("buffered", 2, (2, 2))):
        seen = []
        with threadpool_limits(limits=3, user_api="blas"):
            before = blas_threads()
            turnpike.solve_ocp(small_ocp(), method="adam", steps=3, threads=threads, engine=engine,
                               progress=False, callback=lambda step, value, theta: seen.append(
                                   (torch.get_num_threads(), blas_threads())))
            assert blas_threads() == before
        assert torch.get_num_threads() == torch_before
        assert seen and all(torch_threads == expected[0] and blas == [expected[1]] * len(blas)
                            for torch_threads, blas in seen), (engine, threads, seen)


def _interrupt_at_third(step, value, controls):
    if step == 2:
        raise KeyboardInterrupt            # what Ctrl-C raises while the callback runs
    return True


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("method, ending, status, words", [
    ("adam", "callback", "stopped", "stopped by the callback after step 2"),
    ("lbfgs", "callback", "stopped", "stopped by the callback after step 2"),
    ("adam", "ctrl-c", "stopped", "stopped by the user (Ctrl-C) after step 2; resume=True continues"),
    ("lbfgs", "ctrl-c", "stopped", "stopped by the user (Ctrl-C) after step 2; resume=True continues"),
    ("adam", "time limit", "time_limit", "time limit of 0 s reached: stopped at step 1 of phase 0"),
    ("adam", "divergence", "diverged", "adam diverged (non-finite or exploding objective) after step 0"),
])
def test_each_ending_has_its_own_status_and_message(tmp_path, method, ending, status, words):
    """One stop signal, four endings: the callback's False, Ctrl-C, the time limit (at the first
    checkpoint), divergence; each with its documented status and a message that says which."""
    ocp = exploding_ocp() if ending == "divergence" else small_ocp()
    settings = dict(method=method, steps=8, progress=False, checkpoint=tmp_path / "run.npz", checkpoint_every=1)
    if method == "adam":
        settings["options"] = {"lr": 1e6 if ending == "divergence" else 0.01}
    if ending == "callback":
        settings["callback"] = lambda step, value, controls: step < 2
    elif ending == "ctrl-c":
        settings["callback"] = _interrupt_at_third
    elif ending == "time limit":
        settings["time_limit"] = 0.0
    solution = solve_ocp(ocp, **settings)
    assert solution.status == status, solution.message
    assert words in solution.message
    assert np.all(np.isfinite(solution.controls))
    if ending in ("callback", "ctrl-c"):          # the parameters of the last step recorded
        assert len(solution.history["objective"]) == 3


def _signal_at(step_number, number):
    import os
    import signal as signals

    def callback(step, value, controls):
        if step == step_number:
            os.kill(os.getpid(), number)
    assert signals.getsignal(number) in (signals.SIG_DFL, signals.default_int_handler)
    return callback


@pytest.mark.parametrize("name", ["SIGTERM", "SIGINT"])
def test_a_signal_stops_at_the_step_boundary_with_a_checkpoint_and_resume_loses_nothing(tmp_path, name):
    import signal as signals
    number = getattr(signals, name)
    ocp = small_ocp()
    settings = dict(method="adam", steps=12, options={"lr": 0.01}, progress=False, batch_size=8, seed=1)
    whole = solve_ocp(ocp, **settings)
    path = tmp_path / "run.npz"
    stopped = solve_ocp(ocp, checkpoint=path, callback=_signal_at(5, number), **settings)
    assert stopped.status == "interrupted" and stopped.extra["signal"] == name
    assert f"{name} received: stopped at step 5 of phase 0, just after writing {path}" in stopped.message
    assert signals.getsignal(number) in (signals.SIG_DFL, signals.default_int_handler)   # handlers put back
    resumed = solve_ocp(ocp, checkpoint=path, resume=True, **settings)
    np.testing.assert_array_equal(resumed.controls, whole.controls)
    np.testing.assert_array_equal(resumed.history["objective"], whole.history["objective"])


def test_a_signal_during_lbfgs_stops_it_and_says_where_resume_restarts():
    import signal as signals
    import tempfile
    from pathlib import Path
    with tempfile.TemporaryDirectory() as folder:
        solution = solve_ocp(small_ocp(), method="lbfgs", steps=30, progress=False,
                             checkpoint=Path(folder) / "run.npz", callback=_signal_at(2, signals.SIGTERM))
    assert solution.status == "interrupted"
    assert "SIGTERM received: stopped after step 2; resume=True continues from the last checkpoint" in solution.message
    assert len(solution.history["objective"]) == 3
