r"""Depth bounds of the 2025 paper: Theorems 1 and 2 (Appendix B) and the layout of Tables 2-3.

A ResNet-N trained with the stage-cost objective (3), :math:`J_N = \sum_{k<N}[γ\mathcal L(\hat y_k^N)
+ \frac λ2\|w_{F,k}^N\|^2] + \mathcal L(\hat y^N)`, is compared with a SubResNet-M (Definition 1)
with per-exit losses :math:`\mathcal L(\hat y_k^M)`, k = 0..M, and :math:`\bar{\mathcal L} = \mathcal L(\hat y^M_M)`:

- Theorem 1: :math:`J_N(w^N) \le \bar J_N = \sum_{k<M}[γ\mathcal L(\hat y_k^M) + \frac λ2\|w^M_{F,k}\|^2]
  + (1 + γ(N-M))\bar{\mathcal L}`.
- Theorem 2 (0 < γ <= 1): :math:`\mathcal L_{avg} = \frac1{N+1}\sum_{k=0}^N \mathcal L(\hat y_k^N) \le
  \bar{\mathcal L}_{avg} = \bar{\mathcal L} + \frac{C}{N+1}`, eq. (5), with
  :math:`C = \sum_{k<M}\mathcal L(\hat y_k^M) + \frac{1-γ-γM}{γ}\bar{\mathcal L}`.

Both need w^N globally optimal (the proof compares with the feasible SubResNet-extended
parameters); measured on trained networks they are checks, not guarantees.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .. import _checks


@dataclass(frozen=True)
class ExitLosses:
    """A trained ResNet's training losses at its exits k = 0..depth (the last is the output) and,
    optionally, ‖w_{F,k}‖² of its residual branches k = 0..depth-1 (for the weight decay term)."""

    losses: np.ndarray
    weight_norms_sq: np.ndarray | None = None

    def __post_init__(self):
        losses = _checks.finite_array("losses", self.losses, ndim=1)
        if losses.size < 1 or np.any(losses < 0):
            _checks.fail("losses", "a 1-d array of one or more losses >= 0 (exits 0..depth)", losses)
        object.__setattr__(self, "losses", losses)
        if self.weight_norms_sq is not None:
            norms = _checks.finite_array("weight_norms_sq", self.weight_norms_sq, ndim=1)
            if norms.size != losses.size - 1 or np.any(norms < 0):
                _checks.fail("weight_norms_sq", f"{losses.size - 1} squared norms >= 0 (one per residual block)",
                             norms)
            object.__setattr__(self, "weight_norms_sq", norms)

    @property
    def depth(self) -> int:
        return int(self.losses.size - 1)

    @property
    def output_loss(self) -> float:
        return float(self.losses[-1])

    def decay_sum(self) -> float:
        return 0.0 if self.weight_norms_sq is None else float(self.weight_norms_sq.sum())


def _exit_losses(name: str, value) -> ExitLosses:
    return _checks.instance(name, value, ExitLosses, "an ExitLosses (per-exit training losses of a network)")


def _gamma(gamma, *, at_most_one=False):
    gamma = _checks.real("gamma", gamma, minimum=0.0, strict_min=True)
    if at_most_one and gamma > 1.0:
        _checks.fail("gamma", "0 < gamma <= 1 (Theorem 2 uses γ <= 1)", gamma)
    return gamma


def stage_cost_objective(network: ExitLosses, *, gamma: float, decay: float = 0.0) -> float:
    r"""J_N(w^N) = Σ_{k<N}[γ L(ŷ_k) + λ/2 ‖w_{F,k}‖²] + L(ŷ_N): objective (3) with weight decay."""
    network = _exit_losses("network", network)
    gamma = _gamma(gamma)
    decay = _checks.real("decay", decay, minimum=0.0)
    losses = network.losses
    return float(gamma * losses[:-1].sum() + 0.5 * decay * network.decay_sum() + losses[-1])


def average_exit_loss(network: ExitLosses) -> float:
    """L_avg = (1/(N+1)) Σ_{k=0}^N L(ŷ_k^N), the left side of (5)."""
    return float(_exit_losses("network", network).losses.mean())


def _depth(depth, sub):
    depth = _checks.integer("depth", depth, minimum=1)
    if sub.depth > depth:
        _checks.fail("depth", f"N >= the SubResNet depth M = {sub.depth}", depth)
    return depth


def objective_bound(sub: ExitLosses, *, gamma: float, depth: int, decay: float = 0.0) -> float:
    r"""J̄_N of Theorem 1 from a SubResNet-M: Σ_{k<M}[γ L(ŷ_k^M) + λ/2‖w_{F,k}^M‖²] + (1 + γ(N-M)) L̄."""
    sub = _exit_losses("sub", sub)
    gamma = _gamma(gamma)
    depth = _depth(depth, sub)
    decay = _checks.real("decay", decay, minimum=0.0)
    m = sub.depth
    return float(gamma * sub.losses[:-1].sum() + 0.5 * decay * sub.decay_sum()
                 + (1.0 + gamma * (depth - m)) * sub.output_loss)


def average_loss_constant(sub: ExitLosses, *, gamma: float) -> float:
    r"""C of Theorem 2: Σ_{k<M} L(ŷ_k^M) + (1 - γ - γM)/γ · L̄."""
    sub = _exit_losses("sub", sub)
    gamma = _gamma(gamma, at_most_one=True)
    m = sub.depth
    return float(sub.losses[:-1].sum() + (1.0 - gamma - gamma * m) / gamma * sub.output_loss)


def average_loss_bound(sub: ExitLosses, *, gamma: float, depth: int) -> float:
    r"""L̄_avg = L̄ + C/(N+1) of Theorem 2, eq. (5)."""
    depth = _depth(depth, _exit_losses("sub", sub))
    return float(sub.output_loss + average_loss_constant(sub, gamma=gamma) / (depth + 1))


@dataclass(frozen=True)
class DepthBoundRow:
    """One row of Tables 2-3 (2025 paper): a SubResNet-M against the trained ResNet-N."""

    sub_depth: int                # M
    sub_loss: float               # L̄ = L(ŷ^M)
    objective: float              # J_N(w^N), measured (the tables' column "J_M(w^M)" is this)
    objective_bound: float        # J̄_N (Theorem 1; the tables write J̄_M)
    average_loss: float           # L_avg of ResNet-N, measured
    average_loss_bound: float     # L̄_avg (Theorem 2)
    constant: float               # C of Theorem 2

    @property
    def objective_gap(self) -> float:
        return self.objective_bound - self.objective

    @property
    def average_gap(self) -> float:
        return self.average_loss_bound - self.average_loss

    @property
    def holds(self) -> bool:
        return self.objective_gap >= 0 and self.average_gap >= 0

    def as_dict(self) -> dict:
        data = asdict(self)
        data.update(objective_gap=self.objective_gap, average_gap=self.average_gap, holds=self.holds)
        return data


def depth_bound_table(network: ExitLosses, subs, *, gamma: float, decay: float = 0.0) -> list[DepthBoundRow]:
    """Rows of Tables 2-3: ``network`` is the stage-cost ResNet-N, ``subs`` the SubResNets (any order)."""
    if isinstance(network, dict) or not isinstance(network, ExitLosses):
        _checks.fail("network", "an ExitLosses of the trained ResNet-N", network)
    if not isinstance(subs, (dict, list, tuple)):
        _checks.fail("subs", "a list (or dict) of ExitLosses of SubResNets", subs)
    subs = list(subs.values()) if isinstance(subs, dict) else list(subs)
    if not subs or not all(isinstance(s, ExitLosses) for s in subs):
        _checks.fail("subs", "one or more ExitLosses of SubResNets", subs)
    depth = network.depth
    objective = stage_cost_objective(network, gamma=gamma, decay=decay)
    average = average_exit_loss(network)
    rows = [DepthBoundRow(sub.depth, sub.output_loss, objective,
                          objective_bound(sub, gamma=gamma, depth=depth, decay=decay), average,
                          average_loss_bound(sub, gamma=gamma, depth=depth), average_loss_constant(sub, gamma=gamma))
            for sub in subs]
    return sorted(rows, key=lambda row: row.sub_depth)


def format_depth_bound_table(rows) -> str:
    """A Markdown table in the layout of Tables 2-3 (three decimals, as printed in the paper)."""
    rows = list(rows) if isinstance(rows, (list, tuple)) else rows
    if not isinstance(rows, list) or not all(isinstance(r, DepthBoundRow) for r in rows):
        _checks.fail("rows", "a list of DepthBoundRow (depth_bound_table's rows)", rows)
    lines = ["| SubResNet depth M | L̄ | J_N(w^N) | J̄_N | J̄_N − J_N | L_avg | L̄_avg | L̄_avg − L_avg |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.sub_depth} | {r.sub_loss:.3f} | {r.objective:.3f} | {r.objective_bound:.3f} | "
                     f"{r.objective_gap:.3f} | {r.average_loss:.3f} | {r.average_loss_bound:.3f} | "
                     f"{r.average_gap:.3f} |")
    return "\n".join(lines)
