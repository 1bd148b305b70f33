r"""Geometry of the soft cross-entropy (2024 paper, Lemmas 3, 5 and 6).

For C classes and correct-class probability :math:`p_d ∈ (1/C, 1)` the minimisers of
the soft cross-entropy for label y form the line

.. math:: X^*_y = \{x ∈ \mathbb R^C : x_c = x_y + δ\ \ \forall c \ne y\},
          \qquad δ = -\log\frac{(C-1)p_d}{1-p_d} < 0 .

The loss is invariant under :math:`T = I - \tfrac1C 1 1^\top` (adding a constant to every
logit), so the analysis lives on :math:`X_T = \{x : 1^\top x = 0\}`, which meets
:math:`X^*_y` in the single point

.. math:: [\tilde x^*_y]_y = -\tfrac{C-1}{C}\,δ, \qquad [\tilde x^*_y]_c = \tfrac{1}{C}\,δ\ (c \ne y).

(The paper prints :math:`-\tfrac{C}{C-1}δ` for the y-th component; that point does not sum
to zero. The derivation is in ``theory/soft-cross-entropy.md``.) Since :math:`X^*_y` is the
point plus the span of :math:`1`, the distance is
:math:`\operatorname{dist}(x, X^*_y) = \|T x - \tilde x^*_y\|` (Lemma 6).

States wider than C use their first C components (Remark 4).
"""
from __future__ import annotations

import math

import numpy as np

from .. import _checks


def _check(num_classes, p_d):
    num_classes = _checks.integer("num_classes", num_classes, minimum=2)
    p_d = _checks.real("p_d", p_d, minimum=1.0 / num_classes, maximum=1.0, strict_min=True, strict_max=True)
    return num_classes, p_d


def minimiser_offset(num_classes: int, p_d: float) -> float:
    """δ = -log((C-1) p_d / (1-p_d)): on X*_y every wrong logit is x_y + δ."""
    num_classes, p_d = _check(num_classes, p_d)
    return -math.log((num_classes - 1) * p_d / (1.0 - p_d))


def minimiser_points(num_classes: int, p_d: float) -> np.ndarray:
    """All points x̃*_y of X*_y ∩ X_T, one row per label y: shape (C, C)."""
    delta = minimiser_offset(num_classes, p_d)
    points = np.full((num_classes, num_classes), delta / num_classes)
    np.fill_diagonal(points, -(num_classes - 1) * delta / num_classes)
    return points


def project_mean_zero(x) -> np.ndarray:
    """T x = x - mean(x) over the last axis: the projection onto X_T (Lemma 5)."""
    x = _checks.finite_array("x", x, min_ndim=1)
    return x - x.mean(axis=-1, keepdims=True)


def distance_to_minimisers(x, labels, num_classes: int, p_d: float) -> np.ndarray:
    """dist(x_i, X*_{y_i}) per sample, for states (..., B, n) with n >= C and labels (B,)."""
    num_classes, p_d = _check(num_classes, p_d)
    x = _checks.finite_array("x", x, min_ndim=2)
    if x.shape[-1] < num_classes:
        _checks.fail("x", f"states (..., B, n) with at least num_classes={num_classes} components", x)
    labels = _checks.labels("labels", labels, count=x.shape[-2], num_classes=num_classes)
    difference = project_mean_zero(x[..., :num_classes]) - minimiser_points(num_classes, p_d)[labels]
    return np.sqrt((difference * difference).sum(axis=-1))
