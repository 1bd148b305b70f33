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
- :func:`search_storage_function`: a storage in a chosen basis that maximises the strictness
  margin on sampled (x, u) pairs, by a linear / semidefinite program in cvxpy.
"""
from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .. import _checks
from ._lower_bound import soft_ce_lower_bound
from ._soft_ce import distance_to_minimisers
from .._costs import Cost, CrossEntropy, L2Tracking, SoftCrossEntropy
from .._ocp import OCP
from ..systems._layout import LayerMap
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


# --- storage-function search on samples (cvxpy) --------------------------------------------

STORAGE_BASES = ("constant", "linear", "quadratic")
SOLVERS = ("CLARABEL", "SCS")


def huber_template(s):
    """φ(s) = s²/2 for s <= 1, s - 1/2 beyond: the K∞ shape of α_ℓ = t·φ in the search (cf. Lemma 8)."""
    s = _checks.finite_array("s", s)
    return np.where(s <= 1.0, 0.5 * s * s, s - 0.5)


@dataclass(frozen=True)
class StorageCertificate:
    r"""Result of :func:`search_storage_function`.

    ``certified``: (10b) holds on every sample with the storage found and α_ℓ(s) = margin·φ(s),
    margin > 0 (re-checked in numpy after the solve). Otherwise ``reason`` says why and
    ``violations`` lists the samples that block a positive margin: index, dist(z, Z̄*),
    ℓ - ℓ*, Δλ and the largest admissible margin (ℓ - ℓ* - Δλ)/φ(dist) of that sample.
    """

    certified: bool
    reason: str
    steady_set: str
    basis: str
    solver: str
    margin: float | None = None                 # t in α_ℓ = t φ
    storage: dict = field(default_factory=dict)  # {"constant": c, "linear": g, "quadratic": P}
    num_samples: int = 0
    min_sample_margin: float | None = None      # min over samples of ℓ - ℓ* - Δλ - t φ(dist)
    violations: list = field(default_factory=list)
    evidence: dict = field(default_factory=dict)
    status: str = ""

    def storage_value(self, x) -> float:
        """λ(x) of the certificate for one stacked state x (D, n)."""
        v = np.asarray(x, dtype=np.float64).reshape(-1)
        value = self.storage.get("constant", 0.0)
        if "linear" in self.storage:
            value = value + np.asarray(self.storage["linear"]) @ v
        if "quadratic" in self.storage:
            value = value + v @ np.asarray(self.storage["quadratic"]) @ v
        return float(value)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def _successors(system, states, controls):
    one_layer = dataclasses.replace(system, depth=1)
    return np.stack([np.asarray(one_layer.rollout(np.asarray(u), np.asarray(x)))[-1]
                     for x, u in zip(states, controls)])


def _cross_entropy_evidence(stage_cost, states, labels) -> dict:
    """ℓ along the ray x + s(e_y - 1/C) from the first sampled state: it tends to inf ℓ = 0, never reaching it."""
    ce = stage_cost.find(CrossEntropy)
    classes = ce.num_classes
    start = np.array(states[0], dtype=np.float64)
    direction = np.zeros_like(start)
    direction[np.arange(len(labels)), labels] = 1.0
    direction[:, :classes] -= 1.0 / classes
    steps = [0.0, 1.0, 5.0, 20.0]
    values = [float(np.mean(ce.per_sample((start + s * direction)[:, :classes], labels))) for s in steps]
    return {"ray_steps": steps, "cross_entropy_along_ray": values,
            "note": "the loss keeps decreasing towards 0 as the logits move to infinity; no finite minimiser"}


def search_storage_function(system, stage_cost, states, controls, labels, *, basis: str = "constant",
                            steady_set: SteadySet | None = None, stage_weight: float = 1.0,
                            storage_bound: float | None = None, solver: str = "CLARABEL",
                            tolerance: float = 1e-8, max_violations: int = 10) -> StorageCertificate:
    r"""Search a storage λ that makes (10b) hold with the largest strictness margin on samples.

    Samples are stacked states ``states`` (S, D, n), one layer's controls ``controls`` (S, P)
    (P = ``system.layer_parameter_count``) and the labels (D,); the successors f(x_j, u_j) come
    from one layer of ``system``. With ℓ_j the stage cost (units of J), ℓ* = ℓ(z̄*) and
    φ = :func:`huber_template`, the program is

    .. math:: \max_{λ, t}\ t \quad\text{s.t.}\quad λ(f(x_j,u_j)) - λ(x_j) \le ℓ_j - ℓ^* - t\,φ(\operatorname{dist}(z_j, \bar Z^*)),
              \quad 0 \le λ(x) \le Λ \text{ at all sampled states and successors},

    with λ(x) = c (``basis="constant"``), c + gᵀx (``"linear"``) or c + gᵀx + xᵀPx, P ⪰ 0
    (``"quadratic"``), x the flattened stacked state; an LP, or an SDP for the quadratic basis,
    solved by cvxpy with ``solver`` (CLARABEL, the default, or SCS). Λ = ``storage_bound``
    (default max_j(ℓ_j - ℓ*)) keeps the storage bounded, as Prop. 12 needs. Only finitely many
    samples are checked: a certificate is evidence for the sampled region, not a proof.

    Z̄* comes from :func:`optimal_steady_set` unless ``steady_set`` is given. For the plain
    cross-entropy there is none: the result is not certified and says why (Lemma 2), with the
    loss along a ray to infinity as evidence.
    """
    _checks.instance("system", system, LayerMap, "a layer-map system (SingleLayerResNet, TwoLayerResNet, "
                     "ShortcutNetwork)")
    _checks.instance("stage_cost", stage_cost, Cost, "a turnpike cost (e.g. SoftCrossEntropy(...) + InputPenalty(r))")
    if steady_set is not None:
        _checks.instance("steady_set", steady_set, SteadySet, "a SteadySet or None")
    states = _checks.finite_array("states", states, ndim=3)
    controls = _checks.finite_array("controls", controls, ndim=2)
    tolerance = _checks.real("tolerance", tolerance, minimum=0.0)
    max_violations = _checks.integer("max_violations", max_violations, minimum=0)
    label_count = max((t.label_count or 0 for _, t in stage_cost.state_terms), default=0) or None
    labels = _checks.labels("labels", labels, count=states.shape[1], num_classes=label_count)
    if states.shape[0] != controls.shape[0]:
        _checks.fail("controls", f"{states.shape[0]} rows, one per sampled state", controls)
    if states.shape[0] < 1:
        _checks.fail("states", "at least one sample", states)
    if states.shape[2] != system.state_dim:
        _checks.fail("states", f"shape (S, D, {system.state_dim})", states)
    if controls.shape[1] != system.layer_parameter_count:
        _checks.fail("controls", f"shape (S, {system.layer_parameter_count}) (one layer's controls)", controls)
    _checks.choice("basis", basis, STORAGE_BASES)
    _checks.choice("solver", solver, SOLVERS)
    stage_weight = _checks.real("stage_weight", stage_weight, minimum=0.0)
    steady = steady_set if steady_set is not None else optimal_steady_set(stage_cost)
    common = dict(steady_set=steady.description, basis=basis, solver=solver, num_samples=int(states.shape[0]))
    if not steady.exists:
        evidence = _cross_entropy_evidence(stage_cost, states, labels) if stage_cost.find(CrossEntropy) else {}
        return StorageCertificate(False, steady.reason, evidence=evidence, status="no optimal steady set",
                                  **common)

    import cvxpy as cp

    successors = _successors(system, states, controls)
    r = stage_cost.input_coefficient()
    logits = system.readout(states, stage_cost.logit_width)
    stage = stage_weight * (np.asarray(stage_cost.state_per_sample(logits, labels)).mean(axis=1)
                            + r * (controls ** 2).sum(axis=1))
    excess = stage - steady.optimal_value
    distance = steady.distance(states, controls, labels)
    phi = huber_template(distance)
    bound = float(np.max(excess)) if storage_bound is None else _checks.real("storage_bound", storage_bound,
                                                                              minimum=0.0)
    x = states.reshape(len(states), -1)
    f = successors.reshape(len(states), -1)
    everywhere = np.concatenate([x, f])
    t = cp.Variable()
    c = cp.Variable()
    change = 0.0
    level = c * np.ones(len(everywhere))
    constraints = []
    variables = {"constant": c}
    if basis in ("linear", "quadratic"):
        g = cp.Variable(x.shape[1])
        variables["linear"] = g
        change = change + (f - x) @ g
        level = level + everywhere @ g
    if basis == "quadratic":
        P = cp.Variable((x.shape[1], x.shape[1]), PSD=True)
        variables["quadratic"] = P
        outer = lambda v: np.einsum("si,sj->sij", v, v).reshape(len(v), -1)   # noqa: E731
        change = change + (outer(f) - outer(x)) @ cp.vec(P, order="C")
        level = level + outer(everywhere) @ cp.vec(P, order="C")
    constraints += [change <= excess - t * phi, level >= 0, level <= bound, t <= 1e6]
    problem = cp.Problem(cp.Maximize(t), constraints)
    try:
        with warnings.catch_warnings():      # "inaccurate" is reported in the status; the result is re-checked below
            warnings.simplefilter("ignore")
            problem.solve(solver=solver)
    except cp.error.SolverError as error:
        return StorageCertificate(False, f"solver {solver} failed: {error}", status="solver error", **common)
    if problem.status not in ("optimal", "optimal_inaccurate") or t.value is None:
        return StorageCertificate(False, f"the program is {problem.status}", status=problem.status, **common)
    storage = {name: (float(v.value) if name == "constant" else np.asarray(v.value)) for name, v in variables.items()}
    certificate = StorageCertificate(False, "", storage=storage, **common)

    # re-check in numpy, trusting nothing of the solver but the storage it proposes
    def value(v):
        return np.array([certificate.storage_value(row) for row in v])

    storage_change = value(f) - value(x)
    slack = excess - storage_change
    positive = phi > 0
    admissible = np.full(len(phi), np.inf)
    admissible[positive] = slack[positive] / phi[positive]
    margin = float(admissible.min()) if positive.any() else float("inf")
    margin = min(margin, 1e6)
    zero_ok = bool(np.all(slack[~positive] >= -tolerance))
    certified = margin > tolerance and zero_ok
    order = np.argsort(np.where(positive, admissible, slack))
    blocking = [j for j in order if (admissible[j] <= tolerance if positive[j] else slack[j] < -tolerance)]
    violations = [{"sample": int(j), "distance": float(distance[j]), "cost_excess": float(excess[j]),
                   "storage_change": float(storage_change[j]),
                   "admissible_margin": float(admissible[j]) if positive[j] else None}
                  for j in blocking[:max_violations]]
    if certified:
        reason = (f"strictly dissipative on the {len(phi)} samples w.r.t. {steady.description}: "
                  f"(10b) holds with α_ℓ(s) = {margin:.6g}·φ(s) and a {basis} storage")
    else:
        reason = (f"no storage in the {basis} basis gives a positive margin on the samples "
                  f"(best {margin:.3g}); {len(blocking)} sample(s) block it")
    return dataclasses.replace(certificate, certified=certified, reason=reason, margin=margin,
                               min_sample_margin=float(np.min(slack - max(margin, 0.0) * phi)),
                               violations=violations, status=problem.status)
