r"""The storage-function search for strict dissipativity (10b) on sampled (x, u) pairs (2024 paper, Def. 1,
Table 1): a storage λ in a chosen basis that maximises the strictness margin t of α_ℓ = t·φ, by a linear or
semidefinite program in cvxpy (units and Z̄* as in :mod:`turnpike.theory._dissipativity`)."""
from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field

import numpy as np

from .. import _checks
from .._costs import Cost, CrossEntropy
from ..systems._layout import LayerMap
from ._dissipativity import SteadySet, optimal_steady_set

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
