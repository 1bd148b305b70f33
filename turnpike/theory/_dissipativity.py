r"""Strict dissipativity of the training OCP (2024 paper, Def. 1, Prop. 9, Table 1).

Definition 1: the OCP is strictly (x-u) dissipative w.r.t. the optimal steady pairs Z̄* if there
are a storage λ >= 0 and α_ℓ ∈ K with, for all z = (x, u),

.. math:: λ(f(z)) - λ(x) \le ℓ(z) - ℓ(\bar z^*) - α_ℓ(\operatorname{dist}(z, \bar Z^*)).   \tag{10b}

Units. ℓ is turnpike's stage cost as it enters J: ``stage_weight`` × (mean over the D samples of
the state terms + r‖u‖²). The distance is the paper's stacked one,
:math:`\operatorname{dist}(z, \bar Z^*)^2 = \sum_i \operatorname{dist}(x^i, X^*_{y^i})^2 + \|u\|^2`
(without ‖u‖² when r = 0: strict x-dissipativity). The paper sums over the samples instead of
averaging (and so weights the input by D r); this is the same inequality divided by D.

- :func:`optimal_steady_set`: Z̄* of a stage cost: (X*_y, {0}) for the soft cross-entropy (18),
  ({x̄}, {0}) for L2 tracking, none for the plain cross-entropy (Lemma 2: no minimiser).
- :func:`stage_cost_lower_bound`: α_ℓ for a soft-CE or L2 stage cost (Lemma 8 and Prop. 9).
- :func:`dissipation_margins`: (10b) evaluated layer by layer along a trained :class:`Solution`.
- :func:`search_storage_function` (``_storage.py``): a storage in a chosen basis that maximises the
  strictness margin on sampled (x, u) pairs, by a linear / semidefinite program in cvxpy.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .. import _checks
from ._lower_bound import soft_ce_lower_bound
from ._soft_ce import distance_to_minimisers
from .._costs import Cost, CrossEntropy, L2Tracking, SoftCrossEntropy
from .._ocp import OCP
from ..systems._protocol import FlatSystem


# --- optimal steady pairs ------------------------------------------------------------------

@dataclass(frozen=True)
class SteadySet:
    r"""The optimal steady pairs :math:`\bar Z^* = (X^*, \{0\})` of a stage cost, eq. (8)-(9).

    ``state_distance(states, labels)`` gives dist(x^i, X*_{y^i}) per sample for states
    (..., D, n); ``optimal_value`` is ℓ(z̄*); ``with_input`` says whether ‖u‖ enters the distance
    (it does when the stage cost penalises the input). When a cost has no minimiser,
    ``state_distance`` is None and ``reason`` says why.
    """

    description: str
    state_distance: Callable | None = None
    optimal_value: float = 0.0
    with_input: bool = True
    reason: str = ""

    @property
    def exists(self) -> bool:
        return self.state_distance is not None

    def distance(self, states, controls, labels) -> np.ndarray:
        """Stacked dist(z, Z̄*) for states (S, D, n) and controls (S, P): shape (S,)."""
        per_sample = np.asarray(self.state_distance(states, labels))
        squared = (per_sample ** 2).sum(axis=-1)
        if self.with_input:
            squared = squared + (np.asarray(controls) ** 2).sum(axis=-1)
        return np.sqrt(squared)


NO_MINIMISER = ("the plain cross-entropy (7) has no minimiser (Lemma 2): its infimum 0 is approached only "
                "as the correct logit minus the others goes to +infinity, so the optimal steady set is empty "
                "(pushed to infinity) and (10b) cannot hold with α_ℓ ∈ K∞; use the soft cross-entropy (13), "
                "whose minimum 0 is attained on the lines X*_y (Lemma 3)")


def checked_solution(solution):
    """``solution`` if it is the result of a flat system's solve (its OCP's system is a FlatSystem)."""
    ocp = getattr(solution, "ocp", None)
    if not isinstance(ocp, OCP) or not isinstance(ocp.system, FlatSystem) or not hasattr(solution, "network"):
        _checks.fail("solution", "the Solution of turnpike.solve_ocp on a flat system", solution)
    return solution


def _state_terms(cost):
    kinds = {type(t) for _, t in cost.state_terms}
    weight = float(sum(w for w, _ in cost.state_terms))
    return kinds, weight, (CrossEntropy, L2Tracking, SoftCrossEntropy)


def optimal_steady_set(stage_cost) -> SteadySet:
    """Z̄* of ``stage_cost`` (a turnpike Cost), derived from its terms (Table 1 of the 2024 paper).

    Residual layers with σ(0) = 0 make every state steady under u = 0, and u = 0 minimises r‖u‖²,
    so Z̄* = (argmin of the state terms, {0}). Supported state terms: soft cross-entropy (one
    (C, p_d)), L2 tracking (one target or per-class table), none at all (then every state is
    optimal and only ‖u‖ is measured). A plain cross-entropy gives a SteadySet with
    ``exists == False`` and the reason (Lemma 2); mixtures return the same with a reason asking
    for an explicit SteadySet.
    """
    if not isinstance(stage_cost, Cost):
        _checks.fail("stage_cost", "a turnpike cost (e.g. SoftCrossEntropy(...) + InputPenalty(r))", stage_cost)
    kinds, _, (CrossEntropy, L2Tracking, SoftCrossEntropy) = _state_terms(stage_cost)
    with_input = stage_cost.input_coefficient() > 0
    terms = [t for _, t in stage_cost.state_terms]
    if CrossEntropy in kinds:
        return SteadySet("none: cross-entropy (7)", reason=NO_MINIMISER, with_input=with_input)
    if not terms:
        return SteadySet("(every state, {0}): input penalty only",
                         lambda states, labels: np.zeros(np.shape(states)[:-1]), 0.0, with_input)
    if kinds == {SoftCrossEntropy} and len({(t.num_classes, t.p_d) for t in terms}) == 1:
        soft = terms[0]
        return SteadySet(f"(X*_y, {{0}}): soft cross-entropy minimisers, C={soft.num_classes}, p_d={soft.p_d:g} (18)",
                         lambda states, labels: distance_to_minimisers(states, labels, soft.num_classes, soft.p_d),
                         0.0, with_input)
    if kinds == {L2Tracking} and len(terms) == 1:
        target = terms[0].target

        def tracking_distance(states, labels):
            goal = target if target.ndim == 1 else target[np.asarray(labels)]
            return np.sqrt(((np.asarray(states) - goal) ** 2).sum(axis=-1))

        return SteadySet("({x̄}, {0}): the tracked state(s)", tracking_distance, 0.0, with_input)
    return SteadySet(f"unsupported stage cost {stage_cost!r}",
                     reason="the optimal steady set of this combination of state terms is not derived here; "
                            "pass steady_set=SteadySet(...) with its distance and optimal value")


# --- the lower bound α_ℓ of a stage cost ---------------------------------------------------

@dataclass(frozen=True)
class StageCostLowerBound:
    r"""α_ℓ with ℓ(z) - ℓ(z̄*) >= α_ℓ(dist(z, Z̄*)) for ℓ = w_s[(a/D)Σ_i ℓ_x(x^i) + r‖u‖²] (Prop. 9).

    With a per-sample bound ℓ_x >= α(dist) (Lemma 8 for the soft CE; α(s) = s² for L2 tracking),
    convex with α(0) = 0 and hence superadditive, Σ_i α(d_i) >= α(‖d‖). Splitting
    s² = ‖d‖² + ‖u‖² and noting that t ↦ α(√t) is concave, the minimum over the split is at an end:

    .. math:: α_ℓ(s) = \min\big(\tfrac{w_s a}{D}\,α(s),\ w_s r\, s^2\big)

    (only the first term when r = 0, with s the state distance).
    """

    sample_bound: Callable          # α of one sample's loss
    state_weight: float             # w_s a
    input_weight: float             # w_s r
    num_samples: int                # D
    description: str = ""

    def __call__(self, s):
        s = np.asarray(s, dtype=np.float64)
        value = self.state_weight / self.num_samples * np.asarray(self.sample_bound(s))
        if self.input_weight > 0:
            value = np.minimum(value, self.input_weight * s * s)
        return value if value.ndim else float(value)


def stage_cost_lower_bound(stage_cost, num_samples: int, *, stage_weight: float = 1.0) -> StageCostLowerBound:
    """α_ℓ of a soft-CE or L2-tracking stage cost (plus r‖u‖²) on ``num_samples`` samples."""
    _checks.instance("stage_cost", stage_cost, Cost, "a turnpike cost (e.g. SoftCrossEntropy(...) + InputPenalty(r))")
    kinds, weight, (CrossEntropy, L2Tracking, SoftCrossEntropy) = _state_terms(stage_cost)
    num_samples = _checks.integer("num_samples", num_samples, minimum=1)
    stage_weight = _checks.real("stage_weight", stage_weight, minimum=0.0)
    r = stage_cost.input_coefficient()
    terms = [t for _, t in stage_cost.state_terms]
    if kinds == {SoftCrossEntropy} and len({(t.num_classes, t.p_d) for t in terms}) == 1:
        alpha = soft_ce_lower_bound(terms[0].num_classes, terms[0].p_d)
        text = (f"α_ℓ(s) = min(w_s a/D · α(s), w_s r s²), α of Lemma 8 (corrected) with "
                f"λ_Ω,min = {alpha.curvature:.6g}, m = {alpha.slope:.6g}")
    elif kinds == {L2Tracking} and len(terms) == 1:
        alpha = lambda s: np.asarray(s, dtype=np.float64) ** 2      # noqa: E731  (exact: ‖x - x̄‖²)
        text = "α_ℓ(s) = min(w_s a/D, w_s r) s² (L2 tracking)"
    else:
        raise ValueError(f"stage_cost: expected a soft cross-entropy or an L2 tracking term (+ InputPenalty), "
                         f"got {stage_cost!r}" + (f"; {NO_MINIMISER}" if CrossEntropy in kinds else ""))
    return StageCostLowerBound(alpha, stage_weight * weight, stage_weight * r, num_samples, text)


# --- (10b) along a trained solution -----------------------------------------------------------

@dataclass(frozen=True)
class DissipationReport:
    """(10b) layer by layer, k = 0..N-1, in the units of J (see the module docstring)."""

    steady_set: str
    lower_bound: str
    storage: str
    stage_cost: np.ndarray          # ℓ(x_k, u_k) as it enters J
    optimal_value: float            # ℓ(z̄*)
    distance: np.ndarray            # stacked dist(z_k, Z̄*)
    alpha: np.ndarray               # α_ℓ(dist(z_k, Z̄*))
    storage_change: np.ndarray      # λ(x_{k+1}) - λ(x_k)
    margin: np.ndarray              # ℓ - ℓ* - α_ℓ - Δλ  (>= 0 where (10b) holds)
    min_sample_margin: float        # min over k, i of a(ℓ_x(x_k^i) - α(dist_i)): Lemma 8 on the states
    tolerance: float

    @property
    def holds(self) -> bool:
        return bool(np.all(self.margin >= -self.tolerance)) and self.min_sample_margin >= -self.tolerance

    @property
    def worst_layer(self) -> int:
        return int(np.argmin(self.margin))

    def as_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data.update(holds=self.holds, worst_layer=self.worst_layer, min_margin=float(self.margin.min()))
        return data


def dissipation_margins(solution, *, storage: Callable | None = None, split: str = "train",
                        tolerance: float = 1e-12) -> DissipationReport:
    r"""Evaluate the strict dissipation inequality (10b) along ``solution`` at every layer k < N.

    ``storage(x)`` maps stacked states (D, n) to a number (default: a constant, the storage of
    Prop. 9, so Δλ = 0). The margin of layer k is
    :math:`ℓ(x_k, u_k) - ℓ(\bar z^*) - α_ℓ(\operatorname{dist}(z_k, \bar Z^*)) - (λ(x_{k+1}) - λ(x_k))`
    with α_ℓ from :func:`stage_cost_lower_bound`; (10b) holds along the solution iff every margin
    is >= 0. ``min_sample_margin`` checks the per-sample Lemma 8 bound on every state as well.
    """
    ocp = checked_solution(solution).ocp
    _checks.function("storage", storage, "a callable storage(states) -> number, or None")
    tolerance = _checks.real("tolerance", tolerance, minimum=0.0)
    if ocp.stage_cost is None:
        raise ValueError("solution: expected a solution whose OCP has a stage cost ((10b) needs ℓ), got none")
    states, labels = solution._split(split)
    states = np.asarray(states, dtype=np.float64)
    steady = optimal_steady_set(ocp.stage_cost)
    if not steady.exists:
        raise ValueError(f"solution: no optimal steady set for the stage cost {ocp.stage_cost!r}: {steady.reason}")
    num_samples = states.shape[1]
    bound = stage_cost_lower_bound(ocp.stage_cost, num_samples, stage_weight=ocp.stage_weight)
    controls = solution.network.system.unpack(np.asarray(solution.controls, dtype=np.float64))
    depth = solution.depth
    flat_controls = np.concatenate([b.reshape(depth, -1) for b in controls.values()], axis=1)   # (N, P)
    state_part = np.asarray(ocp.stage_cost.state_per_sample(ocp.readout(states[:-1]), labels), dtype=np.float64)  # (N, D)
    r = ocp.stage_cost.input_coefficient()
    stage_cost = ocp.stage_weight * (state_part.mean(axis=1) + r * (flat_controls ** 2).sum(axis=1))
    distance = steady.distance(states[:-1], flat_controls, labels)
    alpha = np.asarray(bound(distance))
    if storage is None:
        storage_change, storage_text = np.zeros(depth), "constant (Prop. 9)"
    else:
        values = np.array([float(storage(states[k])) for k in range(depth + 1)])
        storage_change, storage_text = np.diff(values), "user storage"
    margin = stage_cost - steady.optimal_value - alpha - storage_change
    per_sample_distance = steady.state_distance(states[:-1], labels)
    state_weight = float(sum(w for w, _ in ocp.stage_cost.state_terms))       # a
    sample_margin = state_part - state_weight * np.asarray(bound.sample_bound(per_sample_distance))
    return DissipationReport(steady.description, bound.description, storage_text, stage_cost,
                             steady.optimal_value, distance, alpha, storage_change, margin,
                             float(sample_margin.min()), tolerance)
