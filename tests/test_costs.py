"""Costs: soft cross-entropy geometry (2024 paper, Sec. 3), gradients, composition, validation."""
import math
import zlib

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import log_softmax, rel_entr, softmax

import turnpike
from turnpike import CrossEntropy, InputPenalty, L2Tracking, SingleLayerResNet, SoftCrossEntropy

PROPERTY = settings(deadline=None, max_examples=50)


@st.composite
def soft_ce_problems(draw, max_classes=100):
    """(C, p_d strictly inside (1/C, 1), label, logits)."""
    C = draw(st.integers(2, max_classes))
    u = draw(st.floats(0.01, 0.99))
    p_d = 1.0 / C + (1.0 - 1.0 / C) * u
    label = draw(st.integers(0, C - 1))
    seed = draw(st.integers(0, 2**32 - 1))
    scale = draw(st.sampled_from([0.1, 1.0, 10.0, 50.0]))
    logits = np.random.default_rng(seed).uniform(-scale, scale, C)
    return C, p_d, label, logits


def independent_delta(C, p_d):
    return -math.log((C - 1) * p_d / (1 - p_d))


def smoothed_target(C, p_d, label):
    q = np.full(C, (1 - p_d) / (C - 1))
    q[label] = p_d
    return q


# --- soft cross-entropy: minimum, minimiser line, KL form --------------------------------------


@PROPERTY
@given(soft_ce_problems(), st.floats(-50, 50), st.floats(-100, 100))
def test_soft_ce_nonnegative_and_zero_on_minimiser_line(problem, x_y, shift):
    C, p_d, label, logits = problem
    soft = SoftCrossEntropy(num_classes=C, p_d=p_d)
    labels = np.array([label])
    assert soft.per_sample(logits[None], labels)[0] >= -1e-12

    delta = independent_delta(C, p_d)
    on_line = np.full(C, x_y + delta)
    on_line[label] = x_y
    assert abs(soft.per_sample(on_line[None], labels)[0]) < 1e-9
    assert abs(soft.per_sample((on_line + shift)[None], labels)[0]) < 1e-9
    # off the line (any other label, for C >= 2) the loss is strictly positive
    other = (label + 1) % C
    assert soft.per_sample(on_line[None], np.array([other]))[0] > 1e-6


@PROPERTY
@given(st.integers(2, 100), st.floats(0.01, 0.99))
def test_offset_and_softmax_on_line_is_smoothed_target(C, u):
    p_d = 1.0 / C + (1.0 - 1.0 / C) * u
    delta = independent_delta(C, p_d)
    soft = SoftCrossEntropy(num_classes=C, p_d=p_d)
    assert soft.offset == pytest.approx(delta, rel=1e-12, abs=1e-14)
    assert turnpike.theory.minimiser_offset(C, p_d) == pytest.approx(delta, rel=1e-12, abs=1e-14)
    assert delta < 0
    label = C // 2
    x = np.full(C, 3.0 + delta)
    x[label] = 3.0
    np.testing.assert_allclose(softmax(x), smoothed_target(C, p_d, label), rtol=1e-10, atol=1e-15)
    np.testing.assert_allclose(soft.targets(np.array([label]), x[None])[0], smoothed_target(C, p_d, label),
                               rtol=1e-12)


@PROPERTY
@given(soft_ce_problems(max_classes=30))
def test_soft_ce_equals_kl_divergence(problem):
    C, p_d, label, logits = problem
    logits = np.clip(logits, -20, 20)
    q = smoothed_target(C, p_d, label)
    kl_log = float(np.sum(q * (np.log(q) - log_softmax(logits))))
    kl_rel = float(np.sum(rel_entr(q, softmax(logits))))
    value = SoftCrossEntropy(num_classes=C, p_d=p_d).per_sample(logits[None], np.array([label]))[0]
    assert value == pytest.approx(kl_log, rel=1e-9, abs=1e-11)
    assert value == pytest.approx(kl_rel, rel=1e-8, abs=1e-10)


def test_soft_ce_batched_values_match_per_row():
    rng = np.random.default_rng(3)
    C, p_d = 4, 0.7
    soft = SoftCrossEntropy(num_classes=C, p_d=p_d)
    x = rng.normal(size=(6, C)) * 3
    labels = rng.integers(0, C, 6)
    rows = [float(np.sum(rel_entr(smoothed_target(C, p_d, y), softmax(xi)))) for xi, y in zip(x, labels)]
    np.testing.assert_allclose(soft.per_sample(x, labels), rows, rtol=1e-9)


def test_cross_entropy_matches_negative_log_softmax():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(7, 5)) * 4
    labels = rng.integers(0, 3, 7)
    expected = -log_softmax(x[:, :3], axis=1)[np.arange(7), labels]
    np.testing.assert_allclose(CrossEntropy(num_classes=3).per_sample(x[:, :3], labels), expected, rtol=1e-12)


def test_l2_tracking_values():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(6, 3))
    labels = rng.integers(0, 2, 6)
    target = rng.normal(size=3)
    table = rng.normal(size=(2, 3))
    np.testing.assert_allclose(L2Tracking(target).per_sample(x, labels), ((x - target) ** 2).sum(1), rtol=1e-12)
    np.testing.assert_allclose(L2Tracking(table).per_sample(x, labels), ((x - table[labels]) ** 2).sum(1),
                               rtol=1e-12)


# --- closed-form gradients against autograd and finite differences ------------------------------

def _cases():
    rng = np.random.default_rng(11)
    return {
        "soft_ce": SoftCrossEntropy(num_classes=3, p_d=0.8),
        "soft_ce_C2": SoftCrossEntropy(num_classes=2, p_d=0.95),
        "cross_entropy": CrossEntropy(num_classes=3),
        "l2_vector": L2Tracking(rng.normal(size=5)),
        "l2_table": L2Tracking(rng.normal(size=(3, 5))),
    }


COSTS = _cases()
SHAPES = [(4, 5), (3, 4, 5), (2, 2, 4, 5)]   # (B, n) and stacked layer axes (..., B, n); n = the cost's width


def _autograd(cost, x, labels):
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    cost.per_sample(xt, labels).sum().backward()
    return xt.grad.numpy()


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("name", sorted(COSTS))
def test_gradient_matches_autograd_and_finite_differences(name, shape):
    cost = COSTS[name]
    rng = np.random.default_rng(zlib.crc32(f"{name}{shape}".encode()))
    x = rng.normal(size=shape[:-1] + (cost.width,)) * 2       # logits: costs read exactly their width
    labels = rng.integers(0, 2 if name == "soft_ce_C2" else 3, shape[-2])
    grad = cost.gradient(x, labels)
    assert grad.shape == x.shape
    np.testing.assert_allclose(grad, _autograd(cost, x, labels), rtol=1e-10, atol=1e-12)
    # per_sample_and_gradient agrees with the two separate calls
    value, grad2 = cost.per_sample_and_gradient(x, labels)
    np.testing.assert_allclose(value, cost.per_sample(x, labels), rtol=1e-14)
    np.testing.assert_allclose(grad2, grad, rtol=1e-14)
    # central finite differences on every coordinate (the arrays are tiny)
    h = 1e-6
    fd = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        plus, minus = x.copy(), x.copy()
        plus[index] += h
        minus[index] -= h
        fd[index] = (cost.per_sample(plus, labels).sum() - cost.per_sample(minus, labels).sum()) / (2 * h)
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", ["soft_ce", "cross_entropy"])
def test_extra_state_components_get_zero_gradient(name):
    """Remark 4: only the first C components enter the classification loss, through the
    system's readout; a cost given wider states refuses them instead of slicing."""
    cost = COSTS[name]
    system = SingleLayerResNet(state_dim=6, depth=1)
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 4, 6))
    labels = rng.integers(0, 3, 4)
    with pytest.raises(ValueError, match=r"expected logits of shape \(\.\.\., 3\)"):
        cost.per_sample(x, labels)
    xt = torch.tensor(x, requires_grad=True)
    cost.per_sample(system.readout(xt, cost.width), labels).sum().backward()
    grad = xt.grad.numpy()
    assert np.all(grad[..., 3:] == 0)
    assert np.all(np.abs(grad[..., :3]).sum(-1) > 0)
    changed = x.copy()
    changed[..., 3:] = rng.normal(size=changed[..., 3:].shape) * 10
    np.testing.assert_array_equal(cost.per_sample(system.readout(changed, 3), labels),
                                  cost.per_sample(system.readout(x, 3), labels))
    # and the classification gradient is p - q, which sums to zero over the classes
    np.testing.assert_allclose(grad[..., :3].sum(-1), 0, atol=1e-14)


def test_soft_ce_gradient_is_softmax_minus_target():
    soft = SoftCrossEntropy(num_classes=4, p_d=0.6)
    rng = np.random.default_rng(9)
    x = rng.normal(size=(5, 4))
    labels = rng.integers(0, 4, 5)
    expected = softmax(x, axis=1) - np.stack([smoothed_target(4, 0.6, y) for y in labels])
    np.testing.assert_allclose(soft.gradient(x, labels), expected, rtol=1e-12, atol=1e-15)


# --- composition ------------------------------------------------------------------------------

def test_composition_weights_state_terms():
    rng = np.random.default_rng(1)
    A = SoftCrossEntropy(num_classes=3, p_d=0.8)
    B = L2Tracking(rng.normal(size=4))
    x = rng.normal(size=(2, 5, 4))
    labels = rng.integers(0, 3, 5)
    combined = 2 * A + B
    # the composite reads 4 logits; the classification term its leading 3 (nested readout, Remark 4)
    np.testing.assert_allclose(combined.state_per_sample(x, labels),
                               2 * A.per_sample(x[..., :3], labels) + B.per_sample(x, labels), rtol=1e-13)
    padded = np.concatenate([A.gradient(x[..., :3], labels), np.zeros(x.shape[:-1] + (1,))], axis=-1)
    np.testing.assert_allclose(combined.state_gradient(x, labels), 2 * padded + B.gradient(x, labels), rtol=1e-13)
    # multiplication on either side and scaling of a composite
    np.testing.assert_allclose((A * 2 + B).state_per_sample(x, labels), combined.state_per_sample(x, labels))
    np.testing.assert_allclose((0.5 * combined).state_per_sample(x, labels),
                               0.5 * combined.state_per_sample(x, labels), rtol=1e-13)
    # input penalties do not enter the state cost
    with_penalty = combined + InputPenalty(7.0)
    np.testing.assert_allclose(with_penalty.state_per_sample(x, labels), combined.state_per_sample(x, labels))
    assert combined.input_coefficient() == 0.0


def test_input_coefficient_sums_weighted_penalties():
    cost = SoftCrossEntropy(num_classes=2, p_d=0.9) + InputPenalty(0.3) + 0.5 * InputPenalty(0.2)
    assert cost.input_coefficient() == pytest.approx(0.4, abs=1e-15)
    assert (3 * cost).input_coefficient() == pytest.approx(1.2, abs=1e-15)
    assert len(cost.state_terms) == 1 and len(cost.input_terms) == 2
    assert cost.find(SoftCrossEntropy).p_d == 0.9
    assert cost.find(CrossEntropy) is None


# --- validation -----------------------------------------------------------------------------

@pytest.mark.parametrize("make, argument", [
    (lambda: SoftCrossEntropy(num_classes=3, p_d=1 / 3), "p_d"),
    (lambda: SoftCrossEntropy(num_classes=4, p_d=0.25), "p_d"),
    (lambda: SoftCrossEntropy(num_classes=3, p_d=1.0), "p_d"),
    (lambda: SoftCrossEntropy(num_classes=2, p_d=0.3), "p_d"),
    (lambda: SoftCrossEntropy(num_classes=2, p_d=0.5), "p_d"),
    (lambda: SoftCrossEntropy(num_classes=2, p_d=float("nan")), "p_d"),
    (lambda: SoftCrossEntropy(num_classes=1, p_d=0.9), "num_classes"),
    (lambda: CrossEntropy(num_classes=1), "num_classes"),
    (lambda: -1 * CrossEntropy(num_classes=2), "cost weight"),
    (lambda: CrossEntropy(num_classes=2) * -0.5, "cost weight"),
    (lambda: InputPenalty(-0.1), "weight"),
    (lambda: L2Tracking(np.array([0.0, np.nan])), "target"),
    (lambda: L2Tracking(np.zeros((2, 2, 2))), "target"),
])
def test_bad_arguments_raise_value_error_naming_them(make, argument):
    with pytest.raises(ValueError, match=argument):
        make()


@pytest.mark.parametrize("C", [2, 3, 10])
@pytest.mark.parametrize("scale", [1.0, 300.0])
def test_cross_entropy_parts_match_scipy_for_every_class_count_and_extreme_logits(C, scale):
    """The closed form for two classes (logit difference) and the general path against scipy,
    numpy and torch; logits of ±hundreds must neither overflow nor lose accuracy."""
    from turnpike import _array

    rng = np.random.default_rng(C)
    x = rng.normal(size=(3, 7, C)) * scale
    targets = softmax(rng.normal(size=(7, C)), axis=-1)          # any distributions, one per sample
    value, gradient = _array.cross_entropy(x, targets)
    np.testing.assert_allclose(value, -(targets * log_softmax(x, axis=-1)).sum(-1), rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(gradient, softmax(x, axis=-1) - targets, rtol=1e-12, atol=1e-15)
    assert _array.cross_entropy(x, targets, gradient=False)[1] is None
    torch_value, torch_gradient = _array.cross_entropy(torch.as_tensor(x), torch.as_tensor(targets))
    np.testing.assert_allclose(torch_value.numpy(), value, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(torch_gradient.numpy(), gradient, rtol=1e-12, atol=1e-15)
