"""What a solve of a :class:`~turnpike.NeuralODE` returns: a :class:`Solution` on the control grid t_0..t_K
with dense-time answers (states and control norms at any time, the time spent away from the turnpike,
the measure turnpike of Prop. 16), and the exceedance set {t : v(t) > ε} it is measured by.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import _checks
from ..theory._soft_ce import distance_to_minimisers
from ._solution import Solution


def exceedance_intervals(times, values, eps: float) -> np.ndarray:
    r"""The set {t : v(t) > ε} of the piecewise-linear interpolant of ``values`` at ``times``.

    Returns an array (m, 2) of disjoint intervals [start, end]; crossings of ε between two
    samples are located by linear interpolation (error O(Δt²) for a smooth v). Its total
    length is the Lebesgue measure used in Prop. 16.
    """
    times = _checks.finite_array("times", times, ndim=1, nonempty=True)
    if np.any(np.diff(times) <= 0):
        _checks.fail("times", "strictly increasing times", times)
    values = _checks.finite_array("values", values, ndim=1)
    if values.shape != times.shape:
        _checks.fail("values", f"one value per time, shape {times.shape}", values)
    eps = _checks.real("eps", eps, minimum=0.0, strict_min=True)
    if times.size == 1:
        return np.array([[times[0], times[0]]]) if values[0] > eps else np.zeros((0, 2))
    intervals = []
    start = times[0] if values[0] > eps else None
    for j in range(times.size - 1):
        t0, t1, v0, v1 = times[j], times[j + 1], values[j], values[j + 1]
        above0, above1 = v0 > eps, v1 > eps
        if above0 == above1:
            continue
        crossing = t0 + (eps - v0) / (v1 - v0) * (t1 - t0)
        if above1:
            start = crossing
        else:
            intervals.append((start, crossing))
            start = None
    if start is not None:
        intervals.append((start, times[-1]))
    return np.array(intervals, dtype=np.float64).reshape(-1, 2)


@dataclass(frozen=True, eq=False, repr=False)   # keep Solution.__repr__
class ODESolution(Solution):
    r"""A :class:`~turnpike.Solution` of the continuous-time OCP (20), with dense-time answers.

    The per-layer members of :class:`~turnpike.Solution` refer to the control grid
    t_0..t_K (``train_states`` is (K+1, D, n)); the methods below evaluate the trajectory
    densely in t with the system's solver (fixed-grid methods refine their grid to include
    the requested times) and answer the measure-turnpike question of Prop. 16:
    :math:`Θ_{ε,T} = \{t ∈ [0,T]: \mathrm{dist}(x^\star(t), X^\star_y) > ε\}` and
    :math:`μ[Θ_{ε,T}]`.
    """

    @property
    def system(self):
        return self.network.system

    @property
    def horizon(self) -> float:
        return self.system.horizon

    @property
    def times(self) -> np.ndarray:
        """The control grid t_0..t_K."""
        return self.system.times

    def _inputs(self, split):
        if split == "train":
            return self.ocp.inputs
        states, _ = self._split(split)
        return states[0]

    def states_at(self, times, split: str = "train") -> np.ndarray:
        """x(t) for the samples of ``split`` at ``times`` (increasing, from 0): (len(times), D, n)."""
        _checks.choice("split", split, ("train", "test"))
        return self.system.rollout(self.controls, self._inputs(split), times)

    def control_norm_at(self, times) -> np.ndarray:
        """‖u(t)‖ at ``times``."""
        return self.system.control_norm_at(self.controls, times)

    def distance_over_time(self, split: str = "train", *, times=None, resolution: int = 16,
                           include_controls: bool = False):
        r"""(times, d(t)): RMS over samples of dist(x^i(t), X*_{y^i}) (Lemma 6), densely in t.

        ``times`` defaults to the grid refined ``resolution`` times. With
        ``include_controls`` the distance is that of the pair (x(t), u(t)) to
        :math:`\bar Z^\star_c = (X^\star_y, \{0\})` (Cor. 14): :math:`\sqrt{d(t)^2 + \|u(t)\|^2}`.
        """
        soft = self.ocp.soft_cross_entropy()
        if soft is None:
            raise ValueError("the turnpike set X*_y is defined by a SoftCrossEntropy cost; this OCP has none")
        _checks.choice("split", split, ("train", "test"))
        include_controls = _checks.boolean("include_controls", include_controls)
        times = self.system.dense_times(resolution) if times is None else \
            _checks.finite_array("times", times, ndim=1)
        labels = self.ocp.labels if split == "train" else self.test_labels
        states = self.states_at(times, split)
        distance = np.sqrt((distance_to_minimisers(states, labels, soft.num_classes, soft.p_d) ** 2).mean(axis=1))
        if include_controls:
            distance = np.sqrt(distance ** 2 + self.control_norm_at(times) ** 2)
        return np.asarray(times, dtype=np.float64), distance

    def theta_set(self, eps: float, split: str = "train", *, resolution: int = 16,
                  include_controls: bool = False) -> np.ndarray:
        r""":math:`Θ_{ε,T}` as disjoint intervals (m, 2): the times at which d(t) > ε."""
        eps = _checks.real("eps", eps, minimum=0.0, strict_min=True)
        times, distance = self.distance_over_time(split, resolution=resolution,
                                                  include_controls=include_controls)
        return exceedance_intervals(times, distance, eps)

    def theta_measure(self, eps: float, split: str = "train", *, resolution: int = 16,
                      include_controls: bool = False) -> float:
        r""":math:`μ[Θ_{ε,T}]`, the time spent farther than ε from the turnpike (Prop. 16, (25))."""
        intervals = self.theta_set(eps, split, resolution=resolution, include_controls=include_controls)
        return float((intervals[:, 1] - intervals[:, 0]).sum())

    def time_near_turnpike(self, eps: float, split: str = "train", **kwargs) -> float:
        """T − μ[Θ_ε,T]: the time spent within ε of the turnpike."""
        return self.horizon - self.theta_measure(eps, split, **kwargs)

    def turnpike_time(self, eps: float, split: str = "train", **kwargs) -> float | None:
        """First t after which d(t) ≤ ε up to T (None if d(T) > ε): the continuous turnpike layer."""
        intervals = self.theta_set(eps, split, **kwargs)
        if intervals.shape[0] == 0:
            return 0.0
        end = float(intervals[-1, 1])
        return None if end >= self.horizon else end
