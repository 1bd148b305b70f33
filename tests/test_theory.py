"""Soft cross-entropy geometry (2024 paper, Lemmas 3, 5, 6, 7): minimiser points, distance, Hessian."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize_scalar

from turnpike import SoftCrossEntropy
from turnpike.theory import distance_to_minimisers, minimiser_offset, minimiser_points, project_mean_zero

PROPERTY = settings(deadline=None, max_examples=50)


def p_d_inside(C, u):
    return 1.0 / C + (1.0 - 1.0 / C) * u


classes_and_p_d = st.tuples(st.integers(2, 60), st.floats(0.01, 0.99)).map(lambda t: (t[0], p_d_inside(*t)))


@PROPERTY
@given(classes_and_p_d)
def test_minimiser_points_sum_to_zero_lie_on_line_and_minimise(problem):
    C, p_d = problem
    points = minimiser_points(C, p_d)
    delta = -math.log((C - 1) * p_d / (1 - p_d))
    assert points.shape == (C, C)
    np.testing.assert_allclose(points.sum(axis=1), 0.0, atol=1e-12)
    soft = SoftCrossEntropy(num_classes=C, p_d=p_d)
    for y in range(C):
        others = np.delete(points[y], y)
        np.testing.assert_allclose(others - points[y, y], delta, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(soft.per_sample(points, np.arange(C)), 0.0, atol=1e-10)
    np.testing.assert_allclose(distance_to_minimisers(points, np.arange(C), C, p_d), 0.0, atol=1e-12)


@pytest.mark.parametrize("C", [2, 3, 4, 10])
def test_papers_printed_formula_does_not_sum_to_zero(C):
    """The paper prints [x̃*_y]_y = -C/(C-1) δ; with δ/C elsewhere that point is not in X_T (any C >= 2)."""
    p_d = 0.9
    delta = minimiser_offset(C, p_d)
    printed = np.full(C, delta / C)
    printed[0] = -C / (C - 1) * delta
    assert abs(printed.sum()) > 1e-3
    np.testing.assert_allclose(minimiser_points(C, p_d)[0, 0], -(C - 1) / C * delta, rtol=1e-14)
    assert minimiser_points(C, p_d)[0, 0] != pytest.approx(printed[0])


@st.composite
def states_and_labels(draw):
    C, p_d = draw(classes_and_p_d)
    extra = draw(st.integers(0, 3))
    B = draw(st.integers(1, 5))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = rng.normal(size=(B, C + extra)) * draw(st.sampled_from([0.1, 1.0, 5.0]))
    labels = rng.integers(0, C, B)
    return C, p_d, x, labels


@PROPERTY
@given(states_and_labels(), st.floats(-100, 100))
def test_distance_invariant_under_shift_and_projection(problem, shift):
    C, p_d, x, labels = problem
    d = distance_to_minimisers(x, labels, C, p_d)
    assert d.shape == labels.shape and np.all(d >= 0)
    shifted = x.copy()
    shifted[:, :C] += shift
    np.testing.assert_allclose(distance_to_minimisers(shifted, labels, C, p_d), d, rtol=1e-9, atol=1e-9)
    projected = x.copy()
    projected[:, :C] = project_mean_zero(x[:, :C])
    np.testing.assert_allclose(projected[:, :C].sum(axis=1), 0.0, atol=1e-12)
    np.testing.assert_allclose(distance_to_minimisers(projected, labels, C, p_d), d, rtol=1e-12, atol=1e-12)
    # components beyond C do not matter (Remark 4)
    wider = x.copy()
    wider[:, C:] += 7.0
    np.testing.assert_array_equal(distance_to_minimisers(wider, labels, C, p_d), d)


@PROPERTY
@given(states_and_labels())
def test_distance_equals_brute_force_distance_to_the_line(problem):
    C, p_d, x, labels = problem
    delta = -math.log((C - 1) * p_d / (1 - p_d))
    d = distance_to_minimisers(x, labels, C, p_d)
    for i, y in enumerate(labels):
        base = np.full(C, delta)
        base[y] = 0.0          # a point of X*_y: x_y = 0, x_c = δ; the line is base + t·1
        result = minimize_scalar(lambda t: np.linalg.norm(x[i, :C] - (base + t)), bracket=(-10, 10),
                                 options={"xtol": 1e-12})
        assert d[i] == pytest.approx(result.fun, rel=1e-6, abs=1e-7)


def test_distance_on_stacked_layers_and_zero_iff_loss_zero():
    C, p_d = 3, 0.8
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 6, C))
    labels = rng.integers(0, C, 6)
    d = distance_to_minimisers(x, labels, C, p_d)
    assert d.shape == (4, 6)
    np.testing.assert_allclose(d[2], distance_to_minimisers(x[2], labels, C, p_d), rtol=1e-15)
    soft = SoftCrossEntropy(num_classes=C, p_d=p_d)
    assert np.all(soft.per_sample(x, labels) > 0) and np.all(d > 0)
    on_line = minimiser_points(C, p_d)[labels] + rng.normal(size=(6, 1))
    np.testing.assert_allclose(distance_to_minimisers(on_line, labels, C, p_d), 0.0, atol=1e-12)
    np.testing.assert_allclose(soft.per_sample(on_line, labels), 0.0, atol=1e-12)


def test_loss_grows_along_rays_away_from_the_turnpike():
    """Lemma 8 in one direction: on X_T the loss increases with the distance along any ray from x̃*_y."""
    C, p_d = 4, 0.85
    soft = SoftCrossEntropy(num_classes=C, p_d=p_d)
    rng = np.random.default_rng(1)
    centre = minimiser_points(C, p_d)[2]
    for _ in range(5):
        direction = project_mean_zero(rng.normal(size=C))
        direction /= np.linalg.norm(direction)
        ray = centre + np.linspace(0, 5, 30)[:, None] * direction
        values = soft.per_sample(ray, np.full(30, 2))
        distances = distance_to_minimisers(ray, np.full(30, 2), C, p_d)
        np.testing.assert_allclose(distances, np.linspace(0, 5, 30), atol=1e-12)
        assert values[0] == pytest.approx(0.0, abs=1e-12)
        assert np.all(np.diff(values) > 0)


@pytest.mark.parametrize("make, argument", [
    (lambda: minimiser_offset(3, 1 / 3), "p_d"),
    (lambda: minimiser_offset(1, 0.9), "num_classes"),
    (lambda: minimiser_points(2, 1.0), "p_d"),
    (lambda: distance_to_minimisers(np.zeros((3, 2)), np.zeros(3, int), 3, 0.9), "x"),
    (lambda: distance_to_minimisers(np.zeros((3, 3)), np.zeros(2, int), 3, 0.9), "labels"),
])
def test_theory_bad_arguments(make, argument):
    with pytest.raises(ValueError, match=argument):
        make()


@pytest.mark.parametrize("C", [2, 3, 5, 10])
def test_soft_ce_hessian(C):
    """Lemma 7: ∇²ℓ̃ = diag(p) - p pᵀ, PSD, one zero eigenvalue with eigenvector 1."""
    rng = np.random.default_rng(C)
    soft = SoftCrossEntropy(num_classes=C, p_d=p_d_inside(C, 0.6))
    for _ in range(3):
        x = rng.uniform(-3, 3, C)
        label = int(rng.integers(0, C))
        hessian = torch.autograd.functional.hessian(
            lambda v: soft.per_sample(v[None], np.array([label]))[0], torch.tensor(x)).numpy()
        p = np.exp(x - x.max())
        p /= p.sum()
        np.testing.assert_allclose(hessian, np.diag(p) - np.outer(p, p), rtol=1e-10, atol=1e-13)
        eigenvalues, eigenvectors = np.linalg.eigh(hessian)
        assert abs(eigenvalues[0]) < 1e-12
        assert eigenvalues[1] > 1e-6                    # exactly one zero eigenvalue, the rest positive
        null = eigenvectors[:, 0]
        np.testing.assert_allclose(np.abs(null), 1 / math.sqrt(C), rtol=1e-8)
        np.testing.assert_allclose(hessian @ np.ones(C), 0.0, atol=1e-13)
