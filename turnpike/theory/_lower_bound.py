r"""Curvature, lower bound and Lipschitz constant of the soft cross-entropy (2024 paper, Lemmas 7-8, Prop. 12).

Everything here is about one sample's loss :math:`\tilde\ell_f(x, y)` of eq. (13) on
:math:`x ∈ \mathbb R^C`; by the label symmetry of (13) the constants do not depend on y.

- :func:`soft_ce_hessian`: :math:`∇^2\tilde\ell_f = \operatorname{diag}(p) - pp^\top`, p = softmax(x)
  (proof of Lemma 7); PSD with null space span{1}.
- :func:`curvature_bound`: :math:`λ_{Ω,\min} = \min_{x∈Ω} λ_{\min}(∇^2\tilde\ell_f(x)|_{1^\perp})`
  over the unit ball :math:`Ω = \{x ∈ X_T : \|x - \tilde x^*_y\| \le 1\}` (proof of Lemma 8).
- :func:`tangent_slope`: :math:`m = \min_{d ⊥ 1, \|d\|=1} \frac{d}{ds}\tilde\ell_f(\tilde x^*_y + s d)|_{s=1}`.
- :func:`soft_ce_lower_bound`: the class-K∞ function α of Lemma 8, eq. (15), in its corrected form

  .. math:: α(s) = \tfrac{λ}{2}s^2 \ (s \le 1), \qquad α(s) = \tfrac{λ}{2} + m\,(s - 1)\ (s > 1),

  with λ = λ_{Ω,min} and m the tangent slope. The paper prints :math:`ms + λ/2` for s > 1, which jumps
  at s = 1 and exceeds the loss there (see ``theory/lower-bound-and-lipschitz.md``).
- :func:`lipschitz_constant`: :math:`\sup_x \|∇\tilde\ell_f\|_2 = \sup\|p - \tilde q\|_2
  = \sqrt{1 - 2\bar q + \|\tilde q\|^2} < \sqrt 2` (tight), or the paper's 2C (proof of Prop. 12).

The two minimisations are non-convex; they are solved by local optimisation with analytic
gradients from structured and random starts (the problem is symmetric in the C-1 wrong classes,
so the structured starts cover the candidates that symmetry singles out).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from .. import _checks
from ._soft_ce import minimiser_points


def _check(num_classes, p_d):
    num_classes = _checks.integer("num_classes", num_classes, minimum=2)
    p_d = _checks.real("p_d", p_d, minimum=1.0 / num_classes, maximum=1.0, strict_min=True, strict_max=True)
    return num_classes, p_d


def _check_search(random_starts, full_random_starts, seed) -> dict:
    """The search settings of :func:`curvature_bound` and :func:`tangent_slope`."""
    return dict(random_starts=_checks.integer("random_starts", random_starts, minimum=0),
                full_random_starts=_checks.integer("full_random_starts", full_random_starts, minimum=0),
                seed=_checks.integer("seed", seed, minimum=0))


def _distances(s) -> np.ndarray:
    s = _checks.finite_array("s", s)
    if np.any(s < 0):
        _checks.fail("s", "distances >= 0", s)
    return s


def _softmax(x):
    z = np.exp(x - x.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def soft_ce_hessian(x, num_classes: int | None = None) -> np.ndarray:
    r"""Hessian :math:`∇^2_x\tilde\ell_f = \operatorname{diag}(p) - pp^\top`, p = softmax(x) (Lemma 7).

    ``x`` has shape (..., n); its first ``num_classes`` components (default: all) are the logits
    (Remark 4). Returns (..., C, C). The Hessian does not depend on the label or on p_d, and is the
    same for the plain cross-entropy (7); it is PSD with exactly one zero eigenvalue, eigenvector 1.
    """
    x = _checks.finite_array("x", x)
    if x.ndim < 1 or x.shape[-1] < 1:
        _checks.fail("x", "logits of shape (..., C)", x)
    classes = x.shape[-1] if num_classes is None else _checks.integer("num_classes", num_classes, minimum=2)
    if x.shape[-1] < classes:
        _checks.fail("x", f"states with at least num_classes={classes} components", x)
    p = _softmax(x[..., :classes])
    return p[..., :, None] * np.eye(classes) - p[..., :, None] * p[..., None, :]


def _orthonormal_basis_of_mean_zero(num_classes: int) -> np.ndarray:
    """Q (C, C-1) with orthonormal columns spanning X_T = 1^⊥ (Helmert contrasts)."""
    q = np.zeros((num_classes, num_classes - 1))
    for j in range(1, num_classes):
        q[:j, j - 1] = 1.0
        q[j, j - 1] = -j
        q[:, j - 1] /= math.sqrt(j * (j + 1))
    return q


# --- the symmetry-reduced search ----------------------------------------------------------
# The loss is symmetric in the C-1 wrong classes. The structured candidates (move the correct
# class, push one or two wrong classes) keep all other wrong classes equal, so the search runs over
# four groups of logits {y}, {c1}, {c2}, {the rest} with multiplicities k = (1, 1, 1, C-3) (fewer
# groups for C <= 3). On that subspace everything is O(1) per evaluation: with s_g = sqrt(k_g) p_g
# the Hessian maps the group indicators into themselves as diag(p_g) - s sᵀ (a G×G matrix), and every
# group with k_g >= 2 adds the eigenvalue p_g (vectors inside the group summing to zero).


def _groups(num_classes: int):
    multiplicity = [1] + [1] * min(2, num_classes - 1) + ([num_classes - 3] if num_classes > 3 else [])
    return np.array(multiplicity, dtype=float)


def _group_state(offsets, multiplicity, centre_y, centre_wrong):
    """Free offsets (G-1) -> the mean-zero step d_g per group and the logits x_g = x̃*_g + d_g."""
    full = np.append(offsets, 0.0)
    d = full - (multiplicity @ full) / multiplicity.sum()
    centre = np.full(len(multiplicity), centre_wrong)
    centre[0] = centre_y
    return d, centre + d


def _group_probabilities(x, multiplicity):
    z = np.exp(x - x.max())
    return z / (multiplicity @ z)


def _group_curvature(x, multiplicity):
    p = _group_probabilities(x, multiplicity)
    s = np.sqrt(multiplicity) * p
    values, vectors = np.linalg.eigh(np.diag(p) - np.outer(s, s))
    null = np.sqrt(multiplicity / multiplicity.sum())
    keep = np.abs(vectors.T @ null) < 0.5                 # drop the eigenvalue 0 of the direction 1
    candidates = list(values[keep]) + [p[g] for g in range(len(p)) if multiplicity[g] >= 2]
    return min(candidates)


def _reduced_starts(free: int, rng, random_starts: int) -> list[np.ndarray]:
    """Offsets of the free groups (y, c1, c2): the structured candidates and random ones."""
    raw = [[1, 0, 0], [-1, 0, 0], [0, -1, 0], [0, 1, 0], [1, -1, 0], [0, -1, -1], [1, -1, -1],
           [0, 1, -1], [2, -1, -1], [1, -2, -1], [0.5, -1, -1]]
    starts = {tuple(np.asarray(r[:free], dtype=float)) for r in raw}
    starts = [np.array(s) for s in sorted(starts) if np.any(np.array(s) != 0)]
    return starts + list(rng.normal(size=(random_starts, free)))


def _reduced_search(value_of_step, num_classes, p_d, *, sphere, random_starts, seed):
    """min of value_of_step(d, x, k) over the symmetric subspace, ‖d‖ <= 1 (or = 1 with ``sphere``)."""
    from scipy.optimize import minimize   # 0.3 s to import: only the certificates load it, not import turnpike
    k = _groups(num_classes)
    centre = minimiser_points(num_classes, p_d)[0]
    centre_y, centre_wrong = centre[0], centre[1]
    rng = np.random.default_rng(seed)

    def norm2(a):
        d, _ = _group_state(a, k, centre_y, centre_wrong)
        return float(k @ (d * d))

    def objective(a):
        d, _ = _group_state(a, k, centre_y, centre_wrong)
        if sphere:
            d = d / math.sqrt(k @ (d * d))
        x = np.where(np.arange(len(k)) == 0, centre_y, centre_wrong) + d
        return value_of_step(d, x, k)

    best = math.inf
    for a in _reduced_starts(len(k) - 1, rng, random_starts):
        a = a * 0.999 / math.sqrt(norm2(a))
        if sphere:
            result = minimize(objective, a, method="L-BFGS-B", options={"maxiter": 200, "ftol": 1e-14})
        else:
            ball = {"type": "ineq", "fun": lambda a: 1.0 - norm2(a)}
            result = minimize(objective, a, method="SLSQP", constraints=[ball],
                              options={"maxiter": 200, "ftol": 1e-14})
        x = result.x
        if not sphere and norm2(x) > 1.0:          # SLSQP may end a hair outside the ball
            x = x / math.sqrt(norm2(x))
        best = min(best, float(objective(x)), float(objective(a)))
    return best


def _full_search(objective_x, num_classes, p_d, *, sphere, starts, seed):
    """The same minimisation from ``starts`` random directions in all of X_T (analytic gradients)."""
    from scipy.optimize import minimize   # 0.3 s to import: only the certificates load it
    centre = minimiser_points(num_classes, p_d)[0]
    basis = _orthonormal_basis_of_mean_zero(num_classes)
    rng = np.random.default_rng(seed + 1)
    best = math.inf
    for w in rng.normal(size=(starts, num_classes - 1)):
        w = w / np.linalg.norm(w)
        if sphere:
            def objective(w):
                norm = math.sqrt(w @ w)
                unit = w / norm
                value, gradient = objective_x(centre + basis @ unit)
                g = basis.T @ gradient
                return value, (g - unit * (unit @ g)) / norm

            result = minimize(objective, w, jac=True, method="L-BFGS-B", options={"maxiter": 300, "ftol": 1e-15})
            best = min(best, float(result.fun))
        else:
            def objective(w):
                value, gradient = objective_x(centre + basis @ w)
                return value, basis.T @ gradient

            ball = {"type": "ineq", "fun": lambda w: 1.0 - w @ w, "jac": lambda w: -2.0 * w}
            result = minimize(objective, w * 0.999, jac=True, method="SLSQP", constraints=[ball],
                              options={"maxiter": 300, "ftol": 1e-15})
            x = result.x if result.x @ result.x <= 1.0 else result.x / np.linalg.norm(result.x)
            best = min(best, objective(x)[0])
    return best


def _smallest_curvature(x: np.ndarray):
    """λ_min of the Hessian on 1^⊥ at x, and its gradient in x (simple-eigenvalue formula)."""
    p = _softmax(x)
    hessian = np.diag(p) - np.outer(p, p)
    values, vectors = np.linalg.eigh(hessian)
    ones = np.ones(len(x)) / math.sqrt(len(x))
    # drop the null direction 1 (eigenvalue 0): pick the eigenvector least aligned with 1
    alignment = np.abs(vectors.T @ ones)
    index = next(i for i in np.argsort(values) if alignment[i] < 0.5)
    v = vectors[:, index]
    vp = v @ p
    # d/dx_j vᵀ(diag p - p pᵀ)v with dp_i/dx_j = p_i(δ_ij - p_j)
    gradient = p * (v * v - (v * v) @ p - 2.0 * vp * (v - vp))
    return float(values[index]), gradient


def curvature_bound(num_classes: int, p_d: float, *, random_starts: int = 2, full_random_starts: int = 0,
                    seed: int = 0) -> float:
    r"""λ_{Ω,min}: the least eigenvalue of :math:`∇^2\tilde\ell_f` on 1^⊥ over the unit ball Ω around x̃*_y.

    Proof of Lemma 8: :math:`Ω = \{x ∈ X_T: \|x - \tilde x^*_y\| \le 1\}` is compact and the
    restricted Hessian is positive definite on it (Lemma 7), so λ_{Ω,min} > 0 (the paper writes ≥ 0).
    Computed by SLSQP on the ball with the analytic eigenvalue gradient, over the offsets of the
    correct class and two wrong classes (the loss is symmetric in the wrong classes) from structured
    and ``random_starts`` random starts, plus ``full_random_starts`` random starts in all of X_T
    (the test suite checks on small C that these never find a lower value). Returns the least value
    found (and never more than the value at x̃*_y itself).
    """
    num_classes, p_d = _check(num_classes, p_d)
    _check_search(random_starts, full_random_starts, seed)
    centre = minimiser_points(num_classes, p_d)[0]
    found = min(_smallest_curvature(centre)[0],
                _reduced_search(lambda d, x, k: _group_curvature(x, k), num_classes, p_d, sphere=False,
                                random_starts=random_starts, seed=seed))
    if full_random_starts:
        found = min(found, _full_search(_smallest_curvature, num_classes, p_d, sphere=False,
                                        starts=full_random_starts, seed=seed))
    return found


def tangent_slope(num_classes: int, p_d: float, *, random_starts: int = 2, full_random_starts: int = 0,
                  seed: int = 0) -> float:
    r"""m = min over unit d ⊥ 1 of the slope of :math:`s \mapsto \tilde\ell_f(\tilde x^*_y + s d)` at s = 1.

    The tangent of the convex ray function at s = 1 lies below it; with m minimised over the
    directions it gives the linear branch of α for s > 1 (Lemma 8). Since
    :math:`m_d = \int_0^1 \tilde\ell_{f,s}'' \ge λ_{Ω,min}`, m ≥ λ_{Ω,min}. The slope along d at
    x = x̃* + d is (p(x) - q̃)ᵀd; minimised over the unit sphere of X_T as in :func:`curvature_bound`.
    """
    num_classes, p_d = _check(num_classes, p_d)
    _check_search(random_starts, full_random_starts, seed)
    centre = minimiser_points(num_classes, p_d)[0]
    targets = np.full(num_classes, (1.0 - p_d) / (num_classes - 1))
    targets[0] = p_d

    def slope(x):
        d = x - centre
        p = _softmax(x)
        residual = p - targets
        return float(residual @ d), residual + (p * d - p * (p @ d))      # ∇_x of (p(x) - q̃)ᵀ(x - x̃*)

    def group_slope(d, x, k):
        p = _group_probabilities(x, k)
        q = np.full(len(k), targets[1])
        q[0] = p_d
        return float(k @ ((p - q) * d))

    found = _reduced_search(group_slope, num_classes, p_d, sphere=True, random_starts=random_starts, seed=seed)
    if full_random_starts:
        found = min(found, _full_search(slope, num_classes, p_d, sphere=True, starts=full_random_starts,
                                        seed=seed))
    return found


@dataclass(frozen=True)
class SoftCELowerBound:
    r"""The class-K∞ lower bound α of Lemma 8, eq. (15), corrected: call it on distances s >= 0.

    .. math:: α(s) = \tfrac{λ}{2}s^2\ (s \le 1),\qquad α(s) = \tfrac{λ}{2} + m(s-1)\ (s > 1),

    so that :math:`\tilde\ell_f(x, y) \ge α(\operatorname{dist}(x, X^*_y))` for every x. It is C¹ at
    s = 1 only if m = λ; it is continuous, convex (m ≥ λ) and hence superadditive with α(0) = 0,
    which Prop. 9 needs to pass from one sample to the stacked data set.
    """

    num_classes: int
    p_d: float
    curvature: float       # λ_{Ω,min}
    slope: float           # m

    def __call__(self, s):
        s = _distances(s)
        value = np.where(s <= 1.0, 0.5 * self.curvature * s * s, 0.5 * self.curvature + self.slope * (s - 1.0))
        return value if value.ndim else float(value)

    def paper_form(self, s):
        """The printed α of Lemma 8: λ/2 s² for s <= 1 and m s + λ/2 beyond (not a lower bound)."""
        s = _distances(s)
        value = np.where(s <= 1.0, 0.5 * self.curvature * s * s, self.slope * s + 0.5 * self.curvature)
        return value if value.ndim else float(value)

    def inverse(self, value: float) -> float:
        """α^{-1}: the distance s with α(s) = value (α is strictly increasing)."""
        value = _checks.real("value", value, minimum=0.0)
        if value <= 0.5 * self.curvature:
            return math.sqrt(2.0 * value / self.curvature)
        return 1.0 + (value - 0.5 * self.curvature) / self.slope


def soft_ce_lower_bound(num_classes: int, p_d: float, *, random_starts: int = 2, full_random_starts: int = 0,
                        seed: int = 0) -> SoftCELowerBound:
    """α of Lemma 8 (corrected) for C = ``num_classes`` and ``p_d``: a callable :class:`SoftCELowerBound`.

    The keyword arguments are passed to :func:`curvature_bound` and :func:`tangent_slope`.
    """
    num_classes, p_d = _check(num_classes, p_d)
    search = _check_search(random_starts, full_random_starts, seed)
    return _cached_lower_bound(num_classes, p_d, search["random_starts"], search["full_random_starts"],
                               search["seed"])


@functools.lru_cache(maxsize=256)
def _cached_lower_bound(num_classes, p_d, random_starts, full_random_starts, seed) -> SoftCELowerBound:
    options = dict(random_starts=random_starts, full_random_starts=full_random_starts, seed=seed)
    curvature = curvature_bound(num_classes, p_d, **options)
    slope = tangent_slope(num_classes, p_d, **options)
    # m >= λ holds mathematically (m is the mean of ℓ'' over [0, 1] along the ray); keep it so numerically
    return SoftCELowerBound(num_classes, p_d, curvature, max(slope, curvature))


LIPSCHITZ_KINDS = ("tight", "paper")


def lipschitz_constant(num_classes: int, p_d: float, kind: str = "tight") -> float:
    r"""Lipschitz constant of one sample's soft cross-entropy in the Euclidean norm (proof of Prop. 12).

    ``kind="tight"``: :math:`\sup_x \|p(x) - \tilde q\|_2 = \sqrt{1 - 2\bar q + \|\tilde q\|^2}`,
    :math:`\bar q = (1-p_d)/(C-1)`, the value at the vertex p = e_c (c ≠ y) that the supremum
    approaches (‖p − q̃‖² is convex in p, so its maximum over the simplex is at a vertex); always
    < √2. ``kind="paper"``: the paper's bound 2C (valid, loose).
    """
    num_classes, p_d = _check(num_classes, p_d)
    _checks.choice("kind", kind, LIPSCHITZ_KINDS)
    if kind == "paper":
        return 2.0 * num_classes
    off = (1.0 - p_d) / (num_classes - 1)
    return math.sqrt(1.0 - 2.0 * off + p_d ** 2 + (num_classes - 1) * off ** 2)
