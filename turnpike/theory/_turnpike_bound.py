r"""Turnpike count bound of the 2024 paper, Proposition 12, eq. (19), in corrected form.

Setting: OCP (5) with stage cost (17), a soft cross-entropy (times a > 0) plus r‖u‖², and a
soft-cross-entropy terminal cost (times b >= 0, same C and p_d). turnpike's J is
:math:`J = w_s\sum_{k<N}ℓ(x_k,u_k) + w_f\,ℓ_f(x_N)` with per-sample means (``theory/turnpike-bound.md``).

Units (all in the units of J, distances stacked as in the paper):

- :math:`\operatorname{dist}_k = \operatorname{dist}((x_k,u_k), \bar Z^*) = (\sum_i d_{k,i}^2 + \|u_k\|^2)^{1/2}`,
  :math:`d_{k,i} = \operatorname{dist}(x_k^i, X^*_{y^i})`; ``Solution.distance_to_turnpike`` is the RMS
  :math:`\bar d_k = (\frac1D\sum_i d_{k,i}^2)^{1/2}`, so :math:`\bar d_k \le ε \iff` the stacked state
  distance is <= √D ε. A user's ε is RMS (as in ``Solution.turnpike_set``); the paper's ε is √D ε.
- :math:`\bar Q_ε = \{k ∈ 0..N-1 : \operatorname{dist}_k > \sqrt D ε\}` (the paper's set, state-input distance).
- α_ℓ of :func:`stage_cost_lower_bound` (Prop. 9): Σ_k α_ℓ(dist_k) <= Σ_k w_s ℓ_k <= J.
- Lipschitz: w_s (a/D) Σ_i ℓ̃(x^i) <= L_J ‖d‖ with :math:`L_J = w_s a L_1/\sqrt D`, L_1 the one-sample
  constant (:func:`lipschitz_constant`, tight).
- Assumption 10 on the reference trajectory, k = 0..N: dist_k <= β ρ^k. Then (corrected V̂)

  .. math:: J <= L_Jβ\Big(\frac{1}{1-ρ} + γ\Big) + \frac{w_s r\,β^2}{1-ρ^2} =: \hat V,
            \qquad γ = \frac{w_f b}{w_s a},

  and (19) reads :math:`\#\bar Q_ε \le \hat V / α_ℓ(\sqrt D ε)`.

With the solution itself as reference (the default) no optimality is needed: the chain
(N - #Q̄_ε) α_ℓ(√D ε) <= Σ_k α_ℓ(dist_k) <= Σ_k w_s ℓ_k <= J <= V̂ holds for any trajectory
that satisfies the reachability bound. ``value_bound`` is the sharper Σ_k w_s ℓ_k / α_ℓ(√D ε).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from .. import _checks
from ._dissipativity import checked_solution, optimal_steady_set, stage_cost_lower_bound
from ._lower_bound import lipschitz_constant
from .._costs import SoftCrossEntropy


def fit_reachability(distances, *, grid: int = 4000) -> tuple[float, float]:
    r"""β, ρ of Assumption 10 from a reference trajectory's distances dist_0..dist_K to Z̄*.

    For each ρ on a grid in (0, 1), β(ρ) = max_k dist_k / ρ^k is the least β with
    dist_k <= β ρ^k for all k; returned is the pair minimising β/(1 - ρ) (the leading term of V̂).
    Only k = 0..K are checked (the proof of Prop. 12 uses k <= N); all zeros give (0, 0).
    """
    d = _checks.finite_array("distances", distances, ndim=1)
    if d.size == 0 or np.any(d < 0):
        _checks.fail("distances", "a non-empty 1-d array of distances >= 0", d)
    if np.all(d == 0):
        return 0.0, 0.0
    grid = _checks.integer("grid", grid, minimum=10)
    rho = np.linspace(0.0, 1.0, grid + 1)[1:-1]
    k = np.arange(d.size)
    with np.errstate(divide="ignore"):
        log_d = np.log(d)                                       # -inf where d = 0: never binding
    log_beta = np.max(log_d[None, :] - k[None, :] * np.log(rho)[:, None], axis=1)
    score = log_beta - np.log1p(-rho)
    best = int(np.argmin(score))
    return float(np.exp(log_beta[best])), float(rho[best])


@dataclass(frozen=True)
class TurnpikeBoundReport:
    """Prop. 12 for one ε: the bound, the measured counts and whether the bound holds."""

    eps: float                    # RMS ε (Solution.turnpike_set convention)
    eps_stacked: float            # √D ε: the paper's ε for the stacked distance
    num_samples: int
    depth: int
    alpha_eps: float              # α_ℓ(√D ε), units of J
    lipschitz: float              # L_J
    lipschitz_one_sample: float   # L_1 (tight); the paper's is 2C
    terminal_ratio: float         # γ = w_f b / (w_s a)
    input_weight: float           # w_s r
    beta: float
    rho: float
    v_hat: float                  # corrected V̂
    objective: float              # J of the solution
    stage_cost_sum: float         # Σ_k w_s ℓ_k
    bound: float                  # V̂ / α_ℓ(√D ε)
    value_bound: float            # Σ_k w_s ℓ_k / α_ℓ(√D ε)
    outside: np.ndarray           # Q̄_ε: k in 0..N-1 with dist_k > √D ε (state-input)
    turnpike_set: np.ndarray      # Solution.turnpike_set(ε): k in 0..N with RMS state distance <= ε

    @property
    def measured(self) -> int:
        """#Q̄_ε (paper's convention)."""
        return int(self.outside.size)

    @property
    def measured_state_only(self) -> int:
        """Layers 0..N outside Solution.turnpike_set(ε) (<= measured + 1)."""
        return int(self.depth + 1 - self.turnpike_set.size)

    @property
    def holds(self) -> bool:
        return self.measured <= self.bound and self.measured <= self.value_bound

    def as_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data.update(measured=self.measured, measured_state_only=self.measured_state_only, holds=self.holds)
        return data


def _soft_terms(cost):
    if cost is None:
        return 0.0, None
    terms = cost.state_terms
    if not terms:
        return 0.0, None
    if not all(isinstance(t, SoftCrossEntropy) for _, t in terms):
        return None, None
    return float(sum(w for w, _ in terms)), terms[0][1]


def layer_distances(solution, split: str = "train") -> np.ndarray:
    """Stacked dist((x_k, u_k), Z̄*) for k = 0..N-1 and the state distance at k = N: shape (N+1,)."""
    states, labels = checked_solution(solution)._split(split)
    steady = optimal_steady_set(solution.ocp.stage_cost)
    if not steady.exists:
        raise ValueError(f"solution: no optimal steady set: {steady.reason}")
    depth = solution.depth
    blocks = solution.network.system.unpack(np.asarray(solution.controls, dtype=np.float64))
    controls = np.concatenate([b.reshape(depth, -1) for b in blocks.values()], axis=1)
    controls = np.concatenate([controls, np.zeros((1, controls.shape[1]))])   # ũ_N = 0: x_N alone
    return steady.distance(np.asarray(states, dtype=np.float64), controls, labels)


def turnpike_bound(solution, eps: float, *, beta: float | None = None, rho: float | None = None,
                   split: str = "train") -> TurnpikeBoundReport:
    r"""Prop. 12 for ``solution`` at the RMS tolerance ``eps``: #Q̄_ε <= V̂/α_ℓ(√D ε), measured and bounded.

    ``beta`` and ``rho`` (Assumption 10) default to :func:`fit_reachability` on the solution's own
    stacked distances (:func:`layer_distances`); give both to use another reference trajectory.
    Requires the Prop. 12 setting: stage cost a·soft CE + r‖u‖² (a > 0), terminal cost None or
    b·soft CE with the same C and p_d. Units: module docstring.
    """
    ocp = checked_solution(solution).ocp
    eps = _checks.real("eps", eps, minimum=0.0, strict_min=True)
    a, stage_soft = _soft_terms(ocp.stage_cost)
    b, terminal_soft = _soft_terms(ocp.terminal_cost)
    if not a or stage_soft is None:
        raise ValueError(f"solution: Prop. 12 needs a soft cross-entropy stage cost (17), got stage_cost="
                         f"{ocp.stage_cost!r}")
    if b is None or (terminal_soft is not None and (terminal_soft.num_classes, terminal_soft.p_d)
                     != (stage_soft.num_classes, stage_soft.p_d)):
        raise ValueError(f"solution: Prop. 12 needs a terminal cost that is the stage's soft cross-entropy "
                         f"(or none), got terminal_cost={ocp.terminal_cost!r}")
    if ocp.stage_weight <= 0:
        raise ValueError("solution: Prop. 12 needs stage_weight > 0")
    states, labels = solution._split(split)
    num_samples = int(np.shape(states)[1])
    depth = solution.depth
    lower = stage_cost_lower_bound(ocp.stage_cost, num_samples, stage_weight=ocp.stage_weight)
    distances = layer_distances(solution, split)
    if (beta is None) != (rho is None):
        raise ValueError("beta, rho: expected both (a reference trajectory's Assumption 10 constants) or neither")
    if beta is None:
        beta, rho = fit_reachability(distances)
    else:
        beta = _checks.real("beta", beta, minimum=0.0)
        rho = _checks.real("rho", rho, minimum=0.0, maximum=1.0, strict_max=True)
    one_sample = lipschitz_constant(stage_soft.num_classes, stage_soft.p_d)
    lipschitz = ocp.stage_weight * a * one_sample / math.sqrt(num_samples)
    gamma = ocp.terminal_weight * b / (ocp.stage_weight * a)
    r = ocp.input_penalty                                              # w_s r
    v_hat = lipschitz * beta * (1.0 / (1.0 - rho) + gamma) + r * beta ** 2 / (1.0 - rho ** 2)
    eps_stacked = math.sqrt(num_samples) * eps
    alpha_eps = float(lower(eps_stacked))
    # stage costs as they enter J
    blocks = solution.network.system.unpack(np.asarray(solution.controls, dtype=np.float64))
    controls = np.concatenate([bl.reshape(depth, -1) for bl in blocks.values()], axis=1)
    state_part = np.asarray(ocp.stage_cost.state_per_sample(ocp.readout(np.asarray(states)[:-1]), labels)).mean(axis=1)
    stage = ocp.stage_weight * state_part + r * (controls ** 2).sum(axis=1)
    terminal = 0.0
    if ocp.terminal_cost is not None:
        terminal = ocp.terminal_weight * float(np.mean(ocp.terminal_cost.state_per_sample(ocp.readout(np.asarray(states)[-1]),
                                                                                            labels)))
    objective = float(stage.sum() + terminal)
    outside = np.flatnonzero(distances[:-1] > eps_stacked)
    return TurnpikeBoundReport(
        eps=eps, eps_stacked=eps_stacked, num_samples=num_samples, depth=depth, alpha_eps=alpha_eps,
        lipschitz=lipschitz, lipschitz_one_sample=one_sample, terminal_ratio=gamma, input_weight=r,
        beta=beta, rho=rho, v_hat=v_hat, objective=objective, stage_cost_sum=float(stage.sum()),
        bound=v_hat / alpha_eps, value_bound=float(stage.sum()) / alpha_eps, outside=outside,
        turnpike_set=solution.turnpike_set(eps, split))
