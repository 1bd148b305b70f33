"""Lemma 7-8 and the Lipschitz constant of Prop. 12 (2024 paper): Hessian, α, L (turnpike/theory/_lower_bound.py)."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize

from turnpike import SoftCrossEntropy
from turnpike.theory import (curvature_bound, distance_to_minimisers, lipschitz_constant, minimiser_points,
                             project_mean_zero, soft_ce_hessian, soft_ce_lower_bound, tangent_slope)

# the whole range of the issue: C in [2, 100], p_d in (1/C, 1)
problems = st.tuples(st.integers(2, 100), st.floats(0.02, 0.98)).map(
    lambda t: (t[0], 1.0 / t[0] + (1.0 - 1.0 / t[0]) * t[1]))


def softmax(x):
    z = np.exp(x - x.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


@settings(deadline=None, max_examples=30)
@given(problems, st.integers(0, 2**32 - 1))
def test_hessian_is_psd_with_exactly_one_zero_eigenvalue(problem, seed):
    C, _ = problem
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(3, C + 2)) * rng.choice([0.1, 1.0, 4.0])
    hessians = soft_ce_hessian(x, num_classes=C)            # extra components ignored (Remark 4)
    assert hessians.shape == (3, C, C)
    for logits, hessian in zip(x[:, :C], hessians):
        p = softmax(logits)
        np.testing.assert_allclose(hessian, np.diag(p) - np.outer(p, p), atol=1e-15)
        values = np.linalg.eigvalsh(hessian)
        scale = values[-1]
        assert abs(values[0]) <= 1e-12 * max(scale, 1.0)
        assert np.all(values[1:] > 1e-14)                    # the rest strictly positive: exactly one zero
        np.testing.assert_allclose(hessian @ np.ones(C), 0.0, atol=1e-15)


@settings(deadline=None, max_examples=5)
@given(problems, st.integers(0, 2**32 - 1))
def test_soft_ce_is_above_alpha_of_the_distance_everywhere_sampled(problem, seed):
    """Lemma 8, eq. (15), with the computed α; also dist is invariant under T and x + c·1 (Lemmas 5-6)."""
    C, p_d = problem
    alpha = soft_ce_lower_bound(C, p_d)
    soft = SoftCrossEntropy(num_classes=C, p_d=p_d)
    rng = np.random.default_rng(seed)
    label = int(rng.integers(0, C))
    centre = minimiser_points(C, p_d)[label]
    directions = project_mean_zero(rng.normal(size=(400, C)))
    directions[:C] = project_mean_zero(np.eye(C) * rng.choice([-1.0, 1.0], size=(C, 1)))[:400]  # vertex rays
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    radii = np.concatenate([rng.uniform(0, 1.2, 200), rng.uniform(1, 40, 200)])[: len(directions)]
    x = centre + radii[:, None] * directions + rng.normal(size=(len(radii), 1)) * 7.0   # shifted along 1
    labels = np.full(len(x), label)
    distance = distance_to_minimisers(x, labels, C, p_d)
    np.testing.assert_allclose(distance, radii, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(distance_to_minimisers(project_mean_zero(x), labels, C, p_d), distance, atol=1e-9)
    np.testing.assert_allclose(distance_to_minimisers(x + 3.5, labels, C, p_d), distance, atol=1e-9)
    loss = soft.per_sample(x, labels)
    assert np.all(loss >= alpha(distance) - 1e-12)


@settings(deadline=None, max_examples=20)
@given(problems)
def test_minimiser_point_minimises_the_loss_on_X_T(problem):
    """x̃*_y is the unique minimiser on X_T (Lemma 7: strictly convex there); found by a numerical solve."""
    C, p_d = min(problem[0], 30), problem[1]
    p_d = max(p_d, 1.0 / C + 1e-3)
    soft = SoftCrossEntropy(num_classes=C, p_d=p_d)
    label = C - 1
    x0 = project_mean_zero(np.linspace(-1, 1, C))
    result = minimize(lambda x: soft.per_sample(project_mean_zero(x)[None], np.array([label]))[0], x0,
                      jac=lambda x: project_mean_zero(soft.gradient(project_mean_zero(x)[None],
                                                                    np.array([label]))[0]),
                      method="BFGS", options={"gtol": 1e-12})
    point = minimiser_points(C, p_d)[label]
    assert point.sum() == pytest.approx(0.0, abs=1e-12)
    np.testing.assert_allclose(project_mean_zero(result.x), point, atol=1e-5)
    assert result.fun == pytest.approx(0.0, abs=1e-10)


def test_alpha_is_class_k_infinity_and_convex():
    alpha = soft_ce_lower_bound(10, 0.91)
    s = np.linspace(0, 50, 5001)
    values = alpha(s)
    assert alpha(0.0) == 0.0 and np.all(np.diff(values) > 0) and values[-1] > 0.2
    assert np.all(np.diff(values, 2) >= -1e-12)                         # convex (needed by Prop. 9)
    assert alpha(1.0) == pytest.approx(alpha.curvature / 2)
    assert alpha(1 + 1e-9) == pytest.approx(alpha.curvature / 2, rel=1e-6)   # continuous at s = 1
    assert alpha.slope >= alpha.curvature
    assert alpha.inverse(float(alpha(3.7))) == pytest.approx(3.7)
    assert alpha.inverse(float(alpha(0.4))) == pytest.approx(0.4)


def test_two_class_constants_match_the_closed_form():
    """C = 2: λ_2(H) = 2 p1 p2 = 1/(1 + cosh Δ), Δ = x_y - x_c; the worst point has Δ = log 19 + √2."""
    C, p_d = 2, 0.95
    worst = math.log(19) + math.sqrt(2)
    assert curvature_bound(C, p_d) == pytest.approx(1 / (1 + math.cosh(worst)), rel=1e-7)
    # slope at s = 1 along d = (1, -1)/√2: d/ds KL = (p_y - p_d)·√2
    p_y = 1 / (1 + math.exp(-worst))
    assert tangent_slope(C, p_d) == pytest.approx((p_y - p_d) * math.sqrt(2), rel=1e-6)
    assert curvature_bound(C, p_d) == pytest.approx(0.024949, abs=1e-6)     # theory/soft-cross-entropy.md
    assert tangent_slope(C, p_d) == pytest.approx(0.052844, abs=1e-6)


@pytest.mark.parametrize("C, p_d", [(3, 0.8), (8, 0.3)])
def test_symmetry_reduced_search_equals_the_full_search(C, p_d):
    reduced = soft_ce_lower_bound(C, p_d)
    full = soft_ce_lower_bound(C, p_d, random_starts=0, full_random_starts=5, seed=3)
    assert full.curvature >= reduced.curvature * (1 - 1e-7)
    assert full.slope >= reduced.slope * (1 - 1e-6)


def test_curvature_bound_against_a_grid_over_the_ball():
    C, p_d = 3, 0.8
    centre = minimiser_points(C, p_d)[0]
    basis = np.array([[1, -1, 0], [1, 1, -2]], dtype=float).T
    basis /= np.linalg.norm(basis, axis=0)
    r, t = np.meshgrid(np.linspace(0, 1, 60), np.linspace(0, 2 * np.pi, 240))
    points = centre + (r.ravel()[:, None] * np.stack([np.cos(t.ravel()), np.sin(t.ravel())], 1)) @ basis.T
    grid_min = min(np.linalg.eigvalsh(h)[1] for h in soft_ce_hessian(points))
    found = curvature_bound(C, p_d)
    assert found <= grid_min + 1e-12
    assert found >= grid_min * (1 - 1e-3)


def test_papers_linear_branch_is_not_a_lower_bound():
    """Lemma 8 prints α(s) = m s + λ/2 for s > 1: it exceeds the loss just beyond s = 1."""
    C, p_d = 2, 0.95
    alpha = soft_ce_lower_bound(C, p_d)
    soft = SoftCrossEntropy(num_classes=C, p_d=p_d)
    centre = minimiser_points(C, p_d)[0]
    d = np.array([1.0, -1.0]) / math.sqrt(2)
    s = 1.01
    loss = soft.per_sample((centre + s * d)[None], np.array([0]))[0]
    assert alpha.paper_form(s) > loss > alpha(s)


@settings(deadline=None, max_examples=30)
@given(problems, st.integers(0, 2**32 - 1))
def test_lipschitz_constant_is_the_supremum_of_the_gradient(problem, seed):
    C, p_d = problem
    tight = lipschitz_constant(C, p_d)
    assert tight < math.sqrt(2) < lipschitz_constant(C, p_d, kind="paper") == 2 * C
    soft = SoftCrossEntropy(num_classes=C, p_d=p_d)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(200, C)) * 10
    labels = rng.integers(0, C, 200)
    gradient_norms = np.linalg.norm(soft.gradient(x, labels), axis=1)
    assert np.all(gradient_norms <= tight + 1e-12)
    # approached at a wrong-class vertex: logit of class c ≠ y at +60
    vertex = np.zeros((1, C))
    vertex[0, (labels[0] + 1) % C] = 60.0
    assert np.linalg.norm(soft.gradient(vertex, labels[:1])) == pytest.approx(tight, rel=1e-12)
    y = rng.normal(size=(200, C)) * 10
    assert np.all(np.abs(soft.per_sample(x, labels) - soft.per_sample(y, labels))
                  <= tight * np.linalg.norm(x - y, axis=1) + 1e-9)


@pytest.mark.parametrize("call, argument", [
    (lambda: soft_ce_lower_bound(1, 0.9), "num_classes"),
    (lambda: soft_ce_lower_bound(4, 0.25), "p_d"),
    (lambda: lipschitz_constant(3, 0.9, kind="exact"), "kind"),
    (lambda: soft_ce_hessian(np.zeros((2, 2)), num_classes=3), "x"),
    (lambda: soft_ce_hessian(np.array([np.nan, 1.0])), "x"),
    (lambda: soft_ce_lower_bound(3, 0.9)(-1.0), "s"),
])
def test_bad_arguments_name_the_argument(call, argument):
    with pytest.raises(ValueError, match=argument):
        call()
