"""n-shortcut networks and the Hessian at zero (Demystifying ResNet, Def. 1-2 and Theorem 2).

Every closed form is checked against an independent computation: the analytic adjoint
against autograd, Theorem 2's Hessian against the automatic-differentiation Hessian,
the order of the stationary point against nested derivatives along random lines,
Lanczos against the dense eigensolver.
"""
import math

import numpy as np
import pytest
import torch

import turnpike as tp
from turnpike import theory
from turnpike.backends._engines import adjoint_objective, autograd_objective
from turnpike.data import whitened_regression_data, whitening

from _compare import assert_same_objective

SMOOTH = [("identity",) * 3, ("tanh", "tanh", "tanh"), ("relu", "tanh", "identity")]


def _data(seed=0, m=30, d=3):
    rng = np.random.default_rng(seed)
    inputs = rng.normal(size=(m, d))
    return inputs, np.eye(d)[rng.integers(0, d, m)]


# --- the system -----------------------------------------------------------------------------
@pytest.mark.parametrize("shortcut_depth", [1, 2, 3])
@pytest.mark.parametrize("activations", [("identity",) * 3, ("tanh", "relu", "tanh"), ("relu", "tanh", "leaky_relu")])
@pytest.mark.parametrize("shortcut", [True, False])
def test_adjoint_gradient_equals_autograd(shortcut_depth, activations, shortcut):
    inputs, targets = _data()
    net = tp.ShortcutNetwork(state_dim=3, units=3, shortcut_depth=shortcut_depth, activations=activations,
                             shortcut=shortcut)
    ocp = theory.regression_ocp(net, inputs, targets)
    theta = net.initial_controls(np.random.default_rng(1), 0.7)
    assert_same_objective(adjoint_objective(ocp, theta, ocp.inputs, ocp.labels),
                          autograd_objective(ocp, theta, ocp.inputs, ocp.labels))


def test_forward_is_the_definition_and_the_loss_is_the_papers():
    inputs, targets = _data(d=4)
    net = tp.ShortcutNetwork(state_dim=4, units=2, shortcut_depth=2, activations=("tanh", "relu", "tanh"))
    theta = net.initial_controls(np.random.default_rng(2), 1.0)
    blocks = net.unpack(theta)
    x = inputs
    for r in range(2):      # x + σ_post(W2 σ_mid(W1 σ_pre(x))), written out
        x = x + np.tanh(np.maximum(np.tanh(x) @ blocks["W1"][r].T, 0) @ blocks["W2"][r].T)
    np.testing.assert_allclose(net.rollout(theta, inputs)[-1], x, rtol=1e-13)
    ocp = theory.regression_ocp(net, inputs, targets)
    loss = float(tp.objective_tensor(ocp, torch.tensor(theta)))
    assert loss == pytest.approx(np.sum((x - targets) ** 2) / (2 * len(inputs)), rel=1e-12)


def test_zero_controls_are_the_identity_and_plain_networks_have_no_shortcut():
    inputs, _ = _data()
    shortcut = tp.ShortcutNetwork(state_dim=3, units=4, activations=("tanh", "tanh", "tanh"), initialisation="zero")
    theta = shortcut.initial_controls(np.random.default_rng(0), 1.0)
    assert not theta.any()
    np.testing.assert_array_equal(shortcut.rollout(theta, inputs)[-1], inputs)
    plain = tp.ShortcutNetwork(state_dim=3, units=2, shortcut_depth=1, shortcut=False)
    w = plain.initial_controls(np.random.default_rng(3), 1.0)
    blocks = plain.unpack(w)["W1"]
    np.testing.assert_allclose(plain.rollout(w, inputs)[-1], inputs @ (blocks[1] @ blocks[0]).T, rtol=1e-12)
    assert plain.layers == 2 and tp.ShortcutNetwork(state_dim=3, units=5, shortcut_depth=3).layers == 15


def test_initialisations_and_pruning():
    rng = np.random.default_rng(4)
    orthogonal = tp.ShortcutNetwork(state_dim=5, units=3, initialisation="orthogonal")
    blocks = orthogonal.unpack(orthogonal.initial_controls(rng, 1.0))
    for name in ("W1", "W2"):
        for matrix in blocks[name]:
            np.testing.assert_allclose(matrix @ matrix.T, np.eye(5), atol=1e-12)
    xavier = tp.ShortcutNetwork(state_dim=40, units=10, initialisation="xavier")
    weights = xavier.initial_controls(rng, 0.01)
    assert np.var(weights) == pytest.approx(0.01 ** 2 / 40, rel=0.05)      # Glorot: 2/(fan_in + fan_out)
    net = tp.ShortcutNetwork(state_dim=3, units=4, activations=("tanh", "tanh", "identity"))
    theta, inputs = net.initial_controls(rng, 1.0), _data()[0]
    shorter, controls = net.truncate(theta, 2)
    np.testing.assert_array_equal(shorter.rollout(controls, inputs), net.rollout(theta, inputs)[:3])
    solution = tp.solve_ocp(theory.regression_ocp(net, *_data()), method="sgd", steps=5, progress=False)
    assert solution.prune(3).depth == 3 and solution.depth == 4


def test_bad_arguments_say_what_was_expected():
    with pytest.raises(ValueError, match="shortcut_depth: expected an integer >= 1, got 0"):
        tp.ShortcutNetwork(state_dim=3, units=2, shortcut_depth=0)
    with pytest.raises(ValueError, match=r"activations: expected a triple"):
        tp.ShortcutNetwork(state_dim=3, units=2, activations=("tanh", "tanh"))
    with pytest.raises(ValueError, match=r"activations \(mid\): expected one of"):
        tp.ShortcutNetwork(state_dim=3, units=2, activations=("tanh", "sigmoid", "tanh"))
    with pytest.raises(ValueError, match="initialisation: expected one of"):
        tp.ShortcutNetwork(state_dim=3, units=2, initialisation="he")
    net = tp.ShortcutNetwork(state_dim=3, units=2, activations=("identity", "relu", "identity"))
    with pytest.raises(ValueError, match=r"activations \(mid\): expected an activation differentiable at 0"):
        theory.theorem2_hessian(net, *_data())
    with pytest.raises(ValueError, match="system: expected a ShortcutNetwork with shortcut=True"):
        theory.theorem2_hessian(tp.ShortcutNetwork(state_dim=3, units=2, shortcut=False), *_data())
    with pytest.raises(ValueError, match=r"targets: expected shape \(30, 3\)"):
        theory.regression_ocp(net, _data()[0], np.zeros((30, 2)))


# --- Theorem 2 --------------------------------------------------------------------------------
@pytest.mark.parametrize("shortcut_depth", [1, 2])
@pytest.mark.parametrize("units", [1, 2, 4])
@pytest.mark.parametrize("activations", SMOOTH)
def test_hessian_at_zero_equals_theorem2(shortcut_depth, units, activations):
    inputs, targets = _data(seed=units)
    net = tp.ShortcutNetwork(state_dim=3, units=units, shortcut_depth=shortcut_depth, activations=activations)
    numeric = theory.hessian(theory.regression_ocp(net, inputs, targets), np.zeros(net.parameter_count))
    closed = theory.theorem2_hessian(net, inputs, targets)
    assert np.abs(closed).max() > 0.1
    np.testing.assert_allclose(numeric, closed, atol=1e-12)


def test_two_shortcut_spectrum_is_plus_minus_singular_values_of_m():
    inputs, targets = _data(seed=5, d=4)
    net = tp.ShortcutNetwork(state_dim=4, units=3, activations=("tanh", "tanh", "identity"))
    spectrum = np.linalg.eigvalsh(theory.theorem2_hessian(net, inputs, targets))
    singular = np.linalg.svd(theory.theorem2_matrix(inputs, targets, net.activations), compute_uv=False)
    copies = net.units * net.state_dim           # each ±σ_i(M) appears R·d times
    expected = np.sort(np.concatenate([np.repeat(singular, copies), -np.repeat(singular, copies)]))
    np.testing.assert_allclose(spectrum, expected, atol=1e-12)


@pytest.mark.parametrize("shortcut_depth", [3, 4])
def test_higher_shortcuts_are_flat_to_order_n_minus_1(shortcut_depth):
    inputs, targets = _data(seed=6)
    net = tp.ShortcutNetwork(state_dim=3, units=2, shortcut_depth=shortcut_depth, activations=("tanh", "tanh", "tanh"))
    ocp = theory.regression_ocp(net, inputs, targets)
    zero = np.zeros(net.parameter_count)
    assert np.abs(theory.hessian(ocp, zero)).max() == 0.0
    assert not theory.theorem2_hessian(net, inputs, targets).any()
    for seed in range(3):
        direction = np.random.default_rng(seed).normal(size=net.parameter_count)
        derivatives = theory.directional_derivatives(ocp, zero, direction, shortcut_depth)
        np.testing.assert_allclose(derivatives[:-1], 0.0, atol=1e-12)
        leading = theory.leading_derivative(net, inputs, targets, direction)
        assert abs(leading) > 1e-3
        assert derivatives[-1] == pytest.approx(leading, rel=1e-10)


def test_leading_derivative_of_n_1_and_2_is_gradient_and_curvature():
    inputs, targets = _data(seed=7)
    direction = np.random.default_rng(8).normal(size=2 * 2 * 9)
    two = tp.ShortcutNetwork(state_dim=3, units=2)
    hessian = theory.theorem2_hessian(two, inputs, targets)
    assert theory.leading_derivative(two, inputs, targets, direction) == pytest.approx(direction @ hessian @ direction)
    one = tp.ShortcutNetwork(state_dim=3, units=4, shortcut_depth=1, activations=("tanh", "identity", "tanh"))
    ocp = theory.regression_ocp(one, inputs, targets)
    _, gradient = autograd_objective(ocp, np.zeros(one.parameter_count), ocp.inputs, ocp.labels)
    assert theory.leading_derivative(one, inputs, targets, direction) == pytest.approx(gradient @ direction)


def test_two_shortcut_condition_number_is_depth_invariant_at_zero():
    inputs, targets = _data(seed=9, m=50, d=3)
    expected = theory.theorem2_condition_number(inputs, targets)
    for units in (1, 2, 4, 8):                   # depths 2, 4, 8, 16
        net = tp.ShortcutNetwork(state_dim=3, units=units)
        spectrum = theory.HessianSpectrum.of(theory.hessian(theory.regression_ocp(net, inputs, targets),
                                                            np.zeros(net.parameter_count)))
        assert spectrum.condition_number == pytest.approx(expected, rel=1e-10)
        assert spectrum.index == 0.5              # a strict saddle: half the eigenvalues negative


def test_small_perturbation_keeps_conditioning_while_plain_networks_degrade():
    """Fig. 4 in small: robust condition number at depths 2 and 16, two draws each."""
    inputs, targets = _data(seed=10, m=60, d=3)

    def robust(depth, shortcut, initialisation, scale):
        values = []
        for draw in range(2):
            net = tp.ShortcutNetwork(state_dim=3, units=depth // 2, shortcut=shortcut, initialisation=initialisation)
            theta = net.initial_controls(np.random.default_rng(draw), scale)
            matrix = theory.hessian(theory.regression_ocp(net, inputs, targets), theta)
            values.append(theory.HessianSpectrum.of(matrix).robust_condition_number)
        return np.mean(values)

    shallow, deep = robust(2, True, "xavier", 0.01), robust(16, True, "xavier", 0.01)
    assert deep == pytest.approx(shallow, rel=0.05)
    for initialisation in ("xavier", "orthogonal"):
        assert robust(16, False, initialisation, 1.0) > 10 * robust(2, False, initialisation, 1.0)


# --- dense and matrix-free spectra ------------------------------------------------------------
def test_lanczos_extremes_match_the_dense_spectrum():
    inputs, targets = _data(seed=11, d=4)
    net = tp.ShortcutNetwork(state_dim=4, units=3, activations=("tanh", "tanh", "identity"))
    ocp = theory.regression_ocp(net, inputs, targets)
    theta = net.initial_controls(np.random.default_rng(12), 0.3)
    dense = np.linalg.eigvalsh(theory.hessian(ocp, theta))
    both = theory.extreme_eigenvalues(ocp, theta, count=4, which="both_ends")
    np.testing.assert_allclose(both, np.concatenate([dense[:2], dense[-2:]]), rtol=1e-7, atol=1e-9)
    largest = theory.extreme_eigenvalues(ocp, theta, count=3, which="largest_magnitude")
    np.testing.assert_allclose(np.sort(np.abs(largest)), np.sort(np.abs(dense))[-3:], rtol=1e-7)
    vector = np.random.default_rng(13).normal(size=net.parameter_count)
    np.testing.assert_allclose(theory.hessian_vector_product(ocp, theta, vector),
                               theory.hessian(ocp, theta) @ vector, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="which: expected one of"):
        theory.extreme_eigenvalues(ocp, theta, which="LM")


def test_spectrum_measures_on_a_known_matrix():
    spectrum = theory.HessianSpectrum.of(np.diag([-2.0, -1.0, 0.5, 1.0, 4.0, 1e-20]))
    assert spectrum.max_magnitude == 4.0
    assert spectrum.index == pytest.approx(2 / 6)
    assert spectrum.condition_number == pytest.approx(4.0 / 1e-20)
    # 10th percentile of |λ| = {1e-20, .5, 1, 1, 2, 4}: a tenth of the way into [1e-20, .5], linearly
    assert spectrum.magnitude_percentile(0.1) == pytest.approx(0.25)
    assert spectrum.robust_condition_number == pytest.approx(16.0)
    assert theory.HessianSpectrum.of(np.diag([1.0, 0.0])).condition_number == math.inf


def test_hessian_of_the_general_systems_matches_finite_differences_of_the_gradient():
    """hessian() is not specific to shortcut networks: any flat system's objective."""
    rng = np.random.default_rng(14)
    net = tp.TwoLayerResNet(state_dim=2, depth=3, hidden_dim=3)
    ocp = tp.OCP(net, rng.normal(size=(20, 2)), rng.integers(0, 2, 20),
                 stage_cost=tp.SoftCrossEntropy(num_classes=2, p_d=0.9) + tp.InputPenalty(0.01),
                 terminal_cost=tp.SoftCrossEntropy(num_classes=2, p_d=0.9))
    theta = net.initial_controls(rng, 0.5)
    matrix = theory.hessian(ocp, theta)
    step, column = 1e-6, 5
    shifted = [autograd_objective(ocp, theta + sign * step * np.eye(theta.size)[column], ocp.inputs, ocp.labels)[1]
               for sign in (1, -1)]
    np.testing.assert_allclose(matrix[:, column], (shifted[0] - shifted[1]) / (2 * step), rtol=1e-5, atol=1e-7)


# --- data ----------------------------------------------------------------------------------------
def test_least_squares_summary_reproduces_loss_gradient_and_hessian_of_linear_networks():
    rng = np.random.default_rng(15)
    inputs, targets = rng.normal(size=(200, 3)) + 1.0, np.eye(3)[rng.integers(0, 3, 200)]
    summary = theory.least_squares_summary(inputs, targets)
    net = tp.ShortcutNetwork(state_dim=3, units=3)
    theta = net.initial_controls(rng, 0.5)
    full, small = theory.regression_ocp(net, inputs, targets), theory.regression_ocp(net, summary.inputs, summary.targets)
    value, gradient = autograd_objective(full, theta, full.inputs, full.labels)
    value_small, gradient_small = autograd_objective(small, theta, small.inputs, small.labels)
    assert value == pytest.approx(value_small + summary.optimal_loss, rel=1e-12)
    np.testing.assert_allclose(gradient_small, gradient, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(theory.hessian(small, theta), theory.hessian(full, theta), rtol=1e-9, atol=1e-11)
    weights = np.linalg.lstsq(inputs, targets, rcond=None)[0]
    assert summary.optimal_loss == pytest.approx(np.sum((inputs @ weights - targets) ** 2) / 400, rel=1e-10)


def test_whitening_gives_identity_covariance_and_one_hot_targets():
    rng = np.random.default_rng(16)
    images = rng.normal(size=(300, 5, 5)) @ rng.normal(size=(5, 5))
    labels = rng.integers(0, 4, 300)
    inputs, targets = whitened_regression_data(images, labels, components=4, classes=4)
    np.testing.assert_allclose(inputs.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(inputs.T @ inputs / 300, np.eye(4), atol=1e-10)
    np.testing.assert_array_equal(targets.argmax(axis=1), labels)
    transform = whitening(images, components=4)
    np.testing.assert_allclose(transform(images[:7]), inputs[:7], rtol=1e-12)
    with pytest.raises(ValueError, match="components: expected at most min"):
        whitening(images, components=26)
