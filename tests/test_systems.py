"""Residual systems: dynamics, adjoint gradients, steady states, truncation, parameter layout."""
import itertools

import numpy as np
import pytest
import torch

import turnpike
from turnpike import (ACTIVATIONS, OCP, CrossEntropy, InputPenalty, L2Tracking, Network, SingleLayerResNet,
                      SoftCrossEntropy, TwoLayerResNet)
from turnpike.backends._engines import adjoint_objective, autograd_objective

STATE, HIDDEN, DEPTH, BATCH, C = 4, 3, 4, 5, 3
ACTS = sorted(ACTIVATIONS)
REFERENCE = {   # independent numpy activations
    "tanh": np.tanh,
    "relu": lambda z: np.maximum(z, 0.0),
    "leaky_relu": lambda z: np.where(z > 0, z, 0.01 * z),
    "identity": lambda z: z,
}


def systems(step_sizes=(1.0, 0.3)):
    out = []
    for tau in step_sizes:
        for a in ACTS:
            out.append(SingleLayerResNet(state_dim=STATE, depth=DEPTH, activation=a, step_size=tau))
        for pair in itertools.product(ACTS, ACTS):
            out.append(TwoLayerResNet(state_dim=STATE, depth=DEPTH, hidden_dim=HIDDEN, activations=pair,
                                      step_size=tau))
    return out


def system_id(s):
    acts = s.activation if isinstance(s, SingleLayerResNet) else "-".join(s.activations)
    return f"{type(s).__name__}[{acts},tau={s.step_size}]"


ALL_SYSTEMS = systems()


def random_problem(seed, system):
    rng = np.random.default_rng(seed)
    inputs = rng.normal(size=(BATCH, system.state_dim))
    labels = rng.integers(0, C, BATCH)
    theta = rng.normal(0.0, 0.6, system.parameter_count)   # random weights *and* biases
    return rng, inputs, labels, theta


def cost_configurations(rng):
    soft = SoftCrossEntropy(num_classes=C, p_d=0.8)
    return {
        "terminal_only": dict(terminal_cost=soft),
        "stage_only": dict(stage_cost=soft + InputPenalty(0.01)),
        "soft_stage_and_terminal": dict(stage_cost=soft + InputPenalty(0.02), terminal_cost=soft,
                                        terminal_weight=3.0),
        "ce_l2_stage": dict(stage_cost=CrossEntropy(num_classes=C) + 0.5 * L2Tracking(rng.normal(size=STATE))
                            + InputPenalty(0.01), terminal_cost=CrossEntropy(num_classes=C)
                            + L2Tracking(rng.normal(size=(C, STATE))), stage_weight=0.7, terminal_weight=2.0),
    }


def _relative_error(a, b):
    return np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300)


CONFIGS = ["terminal_only", "stage_only", "soft_stage_and_terminal", "ce_l2_stage"]


def uses(system, activation):
    acts = (system.activation,) if isinstance(system, SingleLayerResNet) else system.activations
    return activation in acts


TORCH_REFERENCE = {   # independent torch activations for the hand-written autograd reference
    "tanh": torch.tanh,
    "relu": torch.relu,
    "leaky_relu": lambda z: torch.nn.functional.leaky_relu(z, 0.01),
    "identity": lambda z: z,
}


def reference_objective(ocp, theta):
    """J and ∇J by torch autograd through a rollout written here, not the library's ``step``."""
    system = ocp.system
    theta_t = torch.tensor(theta, requires_grad=True)
    blocks = system.unpack(theta_t)
    x = torch.tensor(ocp.inputs)
    states = [x]
    for k in range(system.depth):
        if isinstance(system, SingleLayerResNet):
            branch = TORCH_REFERENCE[system.activation](x @ blocks["A"][k].T + blocks["b"][k])
        else:
            inner, outer = (TORCH_REFERENCE[a] for a in system.activations)
            branch = outer(inner(x @ blocks["A1"][k].T + blocks["b1"][k]) @ blocks["A2"][k].T + blocks["b2"][k])
        x = x + system.step_size * branch
        states.append(x)
    value = torch.zeros((), dtype=torch.float64)
    if ocp.stage_state_cost is not None:
        for s in states[:-1]:
            value = value + ocp.stage_weight * ocp.stage_state_cost.state_per_sample(ocp.readout(s), ocp.labels).mean()
    value = value + ocp.input_penalty * (theta_t * theta_t).sum()
    if ocp.terminal_cost is not None:
        value = value + ocp.terminal_weight * ocp.terminal_cost.state_per_sample(ocp.readout(states[-1]),
                                                                                 ocp.labels).mean()
    value.backward()
    return float(value.detach()), theta_t.grad.numpy()


def _buffered_objective(ocp, theta, inputs, labels):
    from turnpike.backends._sweep import Workspace, buffered_adjoint_objective
    return buffered_adjoint_objective(ocp, theta, inputs, labels, workspace=Workspace())


ENGINES = {"adjoint": adjoint_objective, "autograd": autograd_objective, "buffered": _buffered_objective}


@pytest.mark.parametrize("engine", sorted(ENGINES))
@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("system", ALL_SYSTEMS, ids=system_id)
def test_engine_matches_independent_autograd_reference(system, config, engine):
    """Every engine of the library (plain adjoint sweep, buffered torch sweep, autograd) agrees
    with a rollout and autograd written in this file, and so with the others."""
    rng, inputs, labels, theta = random_problem(7, system)
    ocp = OCP(system, inputs, labels, **cost_configurations(rng)[config])
    value, gradient = ENGINES[engine](ocp, theta, ocp.inputs, ocp.labels)
    value_ref, grad_ref = reference_objective(ocp, theta)
    assert value == pytest.approx(value_ref, rel=1e-12)
    assert np.linalg.norm(grad_ref) > 0
    assert _relative_error(gradient, grad_ref) < 1e-9


def test_leaky_relu_torch_path_is_float64_exact():
    act = ACTIVATIONS["leaky_relu"]
    z = np.array([-3.0, -1.0, 0.5, 2.0])
    zt = torch.tensor(z)
    np.testing.assert_array_equal(act.value(zt).numpy(), act.value(z))
    assert act.value(zt)[1].item() == -0.01


def test_autograd_engine_matches_adjoint_on_negative_leaky_branch():
    """Every pre-activation negative: ∇_A J is proportional to the slope, so its error shows at 1e-9."""
    system = SingleLayerResNet(state_dim=3, depth=2, activation="leaky_relu")
    rng = np.random.default_rng(0)
    inputs = rng.uniform(0.5, 1.5, (4, 3))
    blocks = {"A": np.stack([-2.0 * np.eye(3)] * 2), "b": np.full((2, 3), -1.0)}
    theta = system.pack(blocks)
    ocp = OCP(system, inputs, [0, 1, 2, 0], terminal_cost=L2Tracking(np.zeros(3)))
    _, grad_adj = adjoint_objective(ocp, theta, inputs, ocp.labels)
    _, grad_auto = autograd_objective(ocp, theta, inputs, ocp.labels)
    assert _relative_error(grad_adj, grad_auto) < 1e-9


@pytest.mark.parametrize("system", systems(step_sizes=(1.0, 0.3))[::5], ids=system_id)
def test_adjoint_gradient_matches_finite_differences(system):
    rng, inputs, labels, theta = random_problem(3, system)
    ocp = OCP(system, inputs, labels, **cost_configurations(rng)["ce_l2_stage"])
    _, grad = adjoint_objective(ocp, theta, ocp.inputs, ocp.labels)
    h = 1e-6
    for i in rng.choice(theta.size, 6, replace=False):
        plus, minus = theta.copy(), theta.copy()
        plus[i] += h
        minus[i] -= h
        fd = (adjoint_objective(ocp, plus, ocp.inputs, ocp.labels)[0]
              - adjoint_objective(ocp, minus, ocp.inputs, ocp.labels)[0]) / (2 * h)
        assert grad[i] == pytest.approx(fd, rel=1e-5, abs=1e-7)


def test_objective_value_matches_direct_formula():
    """J = w_s Σ_{k<N} (mean ℓ(x_k) + r‖u_k‖²) + w_f mean ℓ_f(x_N), from states rolled out by hand."""
    system = SingleLayerResNet(state_dim=STATE, depth=DEPTH, activation="tanh", step_size=0.5)
    rng, inputs, labels, theta = random_problem(5, system)
    soft = SoftCrossEntropy(num_classes=C, p_d=0.7)
    ocp = OCP(system, inputs, labels, stage_cost=soft + InputPenalty(0.05), terminal_cost=CrossEntropy(num_classes=C),
              stage_weight=0.4, terminal_weight=2.5)
    blocks = system.unpack(theta)
    x, states = inputs, [inputs]
    for k in range(DEPTH):
        x = x + 0.5 * np.tanh(x @ blocks["A"][k].T + blocks["b"][k])
        states.append(x)
    expected = 0.4 * sum(soft.per_sample(s[:, :C], labels).mean() for s in states[:-1])   # readout: first C
    expected += 0.4 * 0.05 * float(theta @ theta)
    expected += 2.5 * CrossEntropy(num_classes=C).per_sample(states[-1][:, :C], labels).mean()
    assert adjoint_objective(ocp, theta, inputs, labels)[0] == pytest.approx(expected, rel=1e-12)


# --- forward dynamics ---------------------------------------------------------------------------

@pytest.mark.parametrize("system", ALL_SYSTEMS, ids=system_id)
def test_rollout_matches_reference_recursion(system):
    """x_{k+1} = x_k + τ F(x_k, u_k) written out independently (explicit Euler of the neural ODE)."""
    _, inputs, _, theta = random_problem(1, system)
    blocks = system.unpack(theta)
    x, expected = inputs, [inputs]
    for k in range(system.depth):
        if isinstance(system, SingleLayerResNet):
            branch = REFERENCE[system.activation](x @ blocks["A"][k].T + blocks["b"][k])
        else:
            inner, outer = (REFERENCE[a] for a in system.activations)
            hidden = inner(x @ blocks["A1"][k].T + blocks["b1"][k])
            branch = outer(hidden @ blocks["A2"][k].T + blocks["b2"][k])
        x = x + system.step_size * branch
        expected.append(x)
    states = system.rollout(theta, inputs)
    assert states.shape == (system.depth + 1, BATCH, STATE)
    np.testing.assert_allclose(states, np.stack(expected), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("system", ALL_SYSTEMS[::3], ids=system_id)
def test_torch_rollout_matches_numpy_rollout(system):
    _, inputs, _, theta = random_problem(1, system)
    states = system.rollout(theta, inputs)
    torch_states = system.rollout(torch.tensor(theta), torch.tensor(inputs))
    assert torch_states.dtype == torch.float64
    np.testing.assert_allclose(torch_states.numpy(), states, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("system", ALL_SYSTEMS, ids=system_id)
def test_zero_controls_make_every_state_a_steady_state(system):
    _, inputs, _, _ = random_problem(2, system)
    states = system.rollout(np.zeros(system.parameter_count), inputs)
    for k in range(system.depth + 1):
        np.testing.assert_array_equal(states[k], inputs)


@pytest.mark.parametrize("system", ALL_SYSTEMS[::2], ids=system_id)
@pytest.mark.parametrize("k", [1, 2, DEPTH - 1])
def test_zero_residual_branches_from_layer_k_freeze_the_state(system, k):
    _, inputs, _, theta = random_problem(4, system)
    blocks = system.unpack(theta)   # views: writing them edits theta
    outer_fields = ("A", "b") if isinstance(system, SingleLayerResNet) else ("A2", "b2")
    for name in outer_fields:
        blocks[name][k:] = 0.0
    states = system.rollout(theta, inputs)
    assert not np.allclose(states[k], inputs)   # the first k layers did move the data
    for j in range(k, system.depth + 1):
        np.testing.assert_array_equal(states[j], states[k])


# --- truncation / pruning -----------------------------------------------------------------------

@pytest.mark.parametrize("system", ALL_SYSTEMS[::7], ids=system_id)
def test_truncate_and_prune_keep_the_first_layers(system):
    _, inputs, _, theta = random_problem(6, system)
    full = system.rollout(theta, inputs)
    network = Network(system, theta)
    for M in range(1, system.depth + 1):
        shorter, controls = system.truncate(theta, M)
        assert shorter.depth == M and controls.shape == (shorter.parameter_count,)
        np.testing.assert_allclose(shorter.rollout(controls, inputs), full[:M + 1], rtol=1e-13, atol=1e-15)
        pruned = network.prune(M)
        assert pruned.depth == M
        np.testing.assert_allclose(pruned.states(inputs), full[:M + 1], rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(pruned(inputs), full[M], rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(pruned.control_norms(), network.control_norms()[:M], rtol=1e-14)


@pytest.mark.parametrize("M", [0, -1, DEPTH + 1, 100])
def test_prune_outside_depth_range_raises(M):
    system = TwoLayerResNet(state_dim=STATE, depth=DEPTH, hidden_dim=HIDDEN)
    network = Network(system, np.zeros(system.parameter_count))
    with pytest.raises(ValueError, match="depth"):
        network.prune(M)
    with pytest.raises(ValueError, match="depth"):
        system.truncate(network.controls, M)


# --- parameter layout ---------------------------------------------------------------------------

def test_parameter_counts():
    n, h, N = 5, 7, 3
    assert SingleLayerResNet(state_dim=n, depth=N).parameter_count == N * (n * n + n)
    assert TwoLayerResNet(state_dim=n, depth=N, hidden_dim=h).parameter_count == N * (h * n + h + n * h + n)


@pytest.mark.parametrize("system", [SingleLayerResNet(state_dim=3, depth=4),
                                    TwoLayerResNet(state_dim=3, depth=4, hidden_dim=5)], ids=system_id)
def test_unpack_pack_round_trip_and_control_norms(system):
    rng = np.random.default_rng(8)
    theta = rng.normal(size=system.parameter_count)
    blocks = system.unpack(theta)
    assert list(blocks) == [name for name, _ in system.fields]
    for name, shape in system.fields:
        assert blocks[name].shape == (system.depth, *shape)
    assert sum(b.size for b in blocks.values()) == theta.size
    np.testing.assert_array_equal(system.pack(blocks), theta)
    # blocks are distinct slices of theta: packing independently-built blocks gives back the same vector
    rebuilt = system.pack({name: np.array(b) for name, b in blocks.items()})
    np.testing.assert_array_equal(rebuilt, theta)
    # torch round trip
    torch.testing.assert_close(system.pack(system.unpack(torch.tensor(theta))), torch.tensor(theta))
    # control norms: per-layer Euclidean norm of every field's block
    expected = np.sqrt(sum(np.sum(b.reshape(system.depth, -1) ** 2, axis=1) for b in blocks.values()))
    np.testing.assert_allclose(system.control_norms(theta), expected, rtol=1e-14)
    direct = [np.sqrt(sum(np.sum(blocks[name][k] ** 2) for name in blocks)) for k in range(system.depth)]
    np.testing.assert_allclose(system.control_norms(theta), direct, rtol=1e-14)
    # the layer-k norm depends only on layer k's blocks
    changed = theta.copy()
    system.unpack(changed)[system.fields[0][0]][2] *= 3.0
    diff = system.control_norms(changed) - system.control_norms(theta)
    assert diff[2] > 0 and np.all(diff[[0, 1, 3]] == 0)
    with pytest.raises(ValueError, match="theta"):
        system.unpack(theta[:-1])


def test_initial_controls_are_small_and_seeded():
    system = TwoLayerResNet(state_dim=3, depth=4, hidden_dim=5)
    a = system.initial_controls(np.random.default_rng(0), 0.1)
    b = system.initial_controls(np.random.default_rng(0), 0.1)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (system.parameter_count,)
    blocks = system.unpack(a)
    assert np.all(blocks["b1"] == 0) and np.all(blocks["b2"] == 0)
    assert 0 < np.abs(blocks["A1"]).max() < 1.0
    assert np.all(system.initial_controls(np.random.default_rng(0), 0.0) == 0)


# --- validation -------------------------------------------------------------------------------

@pytest.mark.parametrize("make, argument", [
    (lambda: SingleLayerResNet(state_dim=2, depth=0), "depth"),
    (lambda: TwoLayerResNet(state_dim=2, depth=-3), "depth"),
    (lambda: SingleLayerResNet(state_dim=0, depth=2), "state_dim"),
    (lambda: TwoLayerResNet(state_dim=0, depth=2), "state_dim"),
    (lambda: TwoLayerResNet(state_dim=2, depth=2, hidden_dim=0), "hidden_dim"),
    (lambda: SingleLayerResNet(state_dim=2, depth=2, activation="sigmoid"), "activation"),
    (lambda: TwoLayerResNet(state_dim=2, depth=2, activations=("tanh", "softplus")), r"activations\[1\]"),
    (lambda: TwoLayerResNet(state_dim=2, depth=2, activations=("gelu", "tanh")), r"activations\[0\]"),
    (lambda: TwoLayerResNet(state_dim=2, depth=2, activations=("tanh",)), "activations"),
    (lambda: TwoLayerResNet(state_dim=2, depth=2, activations=("tanh", "tanh", "tanh")), "activations"),
    (lambda: SingleLayerResNet(state_dim=2, depth=2, step_size=0.0), "step_size"),
    (lambda: TwoLayerResNet(state_dim=2, depth=2, step_size=-0.1), "step_size"),
    (lambda: SingleLayerResNet(state_dim=2.5, depth=2), "state_dim"),
])
def test_bad_system_arguments(make, argument):
    with pytest.raises(ValueError, match=argument):
        make()


def test_rollout_rejects_wrong_state_shape():
    system = SingleLayerResNet(state_dim=3, depth=2)
    with pytest.raises(ValueError, match="x0"):
        system.rollout(np.zeros(system.parameter_count), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="inputs"):
        Network(system, np.zeros(system.parameter_count)).states(np.full((2, 3), np.nan))


def test_activations_vanish_at_zero():
    """σ(0) = 0 for every offered activation: the property steady states rest on."""
    for name, act in turnpike.ACTIVATIONS.items():
        assert act.value(np.zeros(3)).tolist() == [0.0, 0.0, 0.0], name
        z = np.linspace(-2, 2, 9)
        np.testing.assert_allclose(act.value(z), REFERENCE[name](z), rtol=1e-14)


@pytest.mark.parametrize("name", ACTS)
def test_activation_fast_paths_equal_their_definitions_bit_for_bit(name):
    """The sweeps' shortcuts — σ written over z, σ' read from σ(z) alone, g·σ' formed in place —
    give exactly the values of ``value`` and ``g * derivative(z, a)``, in numpy and torch."""
    act = ACTIVATIONS[name]
    rng = np.random.default_rng(1)
    for dtype in (np.float64, np.float32):
        z = np.concatenate([rng.standard_normal(40) * 3, [0.0, -0.0, 1e-300, -1e-300]]).astype(dtype)
        g = rng.standard_normal(z.shape).astype(dtype)
        a = act.value(z)
        in_place = act.apply_in_place(z.copy())
        np.testing.assert_array_equal(in_place, a)
        if act.derivative is None:
            assert act.scale_by_derivative(g, z, a) is g
            continue
        expected = g * act.derivative(z, a)
        if act.derivative_from_value:      # what lets a sweep keep σ(z) in place of z
            np.testing.assert_array_equal(act.derivative(a, a), act.derivative(z, a))
        scaled = act.scale_by_derivative(g.copy(), z, a)
        assert scaled.dtype == dtype
        np.testing.assert_array_equal(scaled, expected)
        zt, gt = torch.from_numpy(z), torch.from_numpy(g)
        at = act.value(zt)                 # torch's tanh need not round as numpy's does
        np.testing.assert_array_equal(act.scale_by_derivative(gt.clone(), zt, at).numpy(),
                                      (gt * act.derivative(zt, at)).numpy())


def test_buffered_sweep_keeps_one_hidden_buffer_per_layer_for_tanh():
    """σ1 = tanh: σ1' = 1 − σ1², so the forward cache holds σ1(z1) over z1 (half the memory)."""
    system = TwoLayerResNet(state_dim=STATE, depth=DEPTH, hidden_dim=HIDDEN)
    assert set(system.sweep_buffers(7)) == {"z1"}
    assert set(TwoLayerResNet(state_dim=STATE, depth=DEPTH, hidden_dim=HIDDEN,
                              activations=("identity", "tanh")).sweep_buffers(7)) == {"z1", "z2"}


# --- buffered sweep (preallocated torch tensors) ------------------------------------------------

from turnpike.backends._sweep import Workspace, buffered_adjoint_objective  # noqa: E402


@pytest.mark.parametrize("system", ALL_SYSTEMS[::5], ids=system_id)
def test_buffered_sweep_reuses_buffers_across_batch_sizes_and_takes_tensors(system):
    """Buffers keyed by batch size: alternating sizes, and tensor inputs, give the plain sweep's answers."""
    rng, inputs, labels, theta = random_problem(3, system)
    ocp = OCP(system, inputs, labels, **cost_configurations(rng)["soft_stage_and_terminal"])
    workspace = Workspace()
    for rows in (slice(0, 5), slice(0, 2), slice(1, 4), slice(0, 5)):
        expected = adjoint_objective(ocp, theta, inputs[rows], labels[rows])
        value, gradient = buffered_adjoint_objective(ocp, theta, inputs[rows], labels[rows], workspace=workspace)
        assert value == pytest.approx(expected[0], rel=1e-12)
        np.testing.assert_allclose(gradient, expected[1], rtol=1e-10, atol=1e-12)
    value, gradient = buffered_adjoint_objective(ocp, torch.from_numpy(theta), torch.from_numpy(inputs), labels,
                                                 workspace=workspace)
    assert torch.is_tensor(gradient)
    np.testing.assert_allclose(gradient.numpy(), adjoint_objective(ocp, theta, inputs, labels)[1], rtol=1e-10,
                               atol=1e-12)


def test_buffered_sweep_in_float32_matches_float64_and_refuses_mixed_dtypes():
    system = TwoLayerResNet(state_dim=20, hidden_dim=8, depth=6, activations=("relu", "identity"))
    rng, _, _, theta = random_problem(1, system)
    inputs, labels = rng.normal(size=(16, 20)), rng.integers(0, C, 16)
    ocp = OCP(system, inputs, labels, stage_cost=SoftCrossEntropy(num_classes=C, p_d=0.8) + InputPenalty(1e-3),
              terminal_cost=SoftCrossEntropy(num_classes=C, p_d=0.8))
    value64, grad64 = adjoint_objective(ocp, theta, inputs, labels)
    value32, grad32 = buffered_adjoint_objective(ocp, theta.astype(np.float32), inputs.astype(np.float32), labels,
                                                 workspace=Workspace())
    assert grad32.dtype == np.float32
    assert value32 == pytest.approx(value64, rel=1e-5)
    assert _relative_error(grad32.astype(np.float64), grad64) < 1e-5
    with pytest.raises(ValueError, match="inputs: expected the controls' dtype"):
        buffered_adjoint_objective(ocp, theta, inputs.astype(np.float32), labels, workspace=Workspace())


def test_systems_and_activations_pickle_by_name():
    import pickle

    from turnpike.systems._activations import ACTIVATIONS

    for name, activation in ACTIVATIONS.items():
        assert pickle.loads(pickle.dumps(activation)) is activation
    system = turnpike.TwoLayerResNet(state_dim=3, depth=4, hidden_dim=5, activations=("relu", "tanh"))
    copy = pickle.loads(pickle.dumps(system))
    theta = system.initial_controls(np.random.default_rng(0), 1.0)
    x = np.random.default_rng(1).standard_normal((6, 3))
    assert copy == system
    np.testing.assert_array_equal(copy.rollout(theta, x), system.rollout(theta, x))
