"""What a solve returns: the trained network, its trajectories and turnpike answers."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import _checks
from .theory import distance_to_minimisers


@dataclass(frozen=True, eq=False)
class Network:
    """A system together with its controls: a runnable residual network."""

    system: object
    controls: np.ndarray        # flat θ, see the system's ``unpack``

    @property
    def depth(self) -> int:
        return self.system.depth

    def states(self, inputs) -> np.ndarray:
        """Every layer's states x_0..x_N for ``inputs`` (B, n): shape (N+1, B, n)."""
        inputs = _checks.finite_array("inputs", inputs, ndim=2)
        return self.system.rollout(self.controls, inputs)

    def __call__(self, inputs) -> np.ndarray:
        return self.states(inputs)[-1]

    def predict(self, inputs, num_classes: int) -> np.ndarray:
        """Class predictions: argmax of the first ``num_classes`` components of x_N."""
        return self(inputs)[:, :num_classes].argmax(axis=1)

    def prune(self, depth: int) -> "Network":
        """The first ``depth`` layers; the rest (the turnpike) is dropped."""
        system, controls = self.system.truncate(self.controls, depth)
        return Network(system, controls)

    def control_norms(self) -> np.ndarray:
        """‖u_k‖ per layer, shape (N,)."""
        return self.system.control_norms(self.controls)


@dataclass(frozen=True, eq=False)
class Solution:
    """Result of :func:`turnpike.solve_ocp`.

    Trajectories are stored for every layer: ``train_states`` (N+1, D, n) and
    ``test_states`` (N+1, D_test, n) or None. ``status`` is "converged", "max_steps",
    "diverged" or "stopped"; ``message`` says what happened and, on failure, what to
    change. ``history`` holds the objective per optimisation step.
    """

    ocp: object
    network: Network
    train_states: np.ndarray
    test_states: np.ndarray | None
    test_labels: np.ndarray | None
    objective: float
    status: str
    message: str
    history: dict
    wall_time_s: float
    seed: int
    extra: dict = field(default_factory=dict)

    def __repr__(self) -> str:
        return (f"Solution(status={self.status!r}, objective={self.objective:.6g}, depth={self.depth}, "
                f"train_accuracy={self.accuracy('train'):.4f})")

    # --- basic data ----------------------------------------------------------------
    @property
    def success(self) -> bool:
        return self.status in ("converged", "max_steps")

    @property
    def depth(self) -> int:
        return self.network.depth

    @property
    def controls(self) -> np.ndarray:
        return self.network.controls

    def control_norms(self) -> np.ndarray:
        """‖u_k‖ for k = 0..N-1."""
        return self.network.control_norms()

    def _split(self, split: str):
        _checks.choice("split", split, ("train", "test"))
        if split == "train":
            return self.train_states, self.ocp.labels
        if self.test_states is None:
            raise ValueError("split: no test data was given to solve_ocp (pass test_data=(inputs, labels))")
        return self.test_states, self.test_labels

    def _classes(self) -> int:
        classes = self.ocp.num_classes
        if classes is None:
            raise ValueError("this OCP has no classification cost, so it has no classes or accuracy")
        return classes

    # --- per-layer quantities -------------------------------------------------------
    def loss_per_layer(self, split: str = "train", cost=None) -> np.ndarray:
        """Mean state cost of every layer's states, shape (N+1,).

        ``cost`` defaults to the soft cross-entropy of the problem (so runs with and
        without stage cost are compared on the same measure), else the terminal cost.
        """
        states, labels = self._split(split)
        if cost is None:
            cost = self.ocp.soft_cross_entropy() or self.ocp.terminal_cost
        return np.asarray(cost.state_per_sample(states, labels)).mean(axis=1)

    def accuracy_per_layer(self, split: str = "train") -> np.ndarray:
        """Accuracy of classifying with the first C components of each layer's states."""
        states, labels = self._split(split)
        return (states[..., : self._classes()].argmax(axis=-1) == labels).mean(axis=1)

    def accuracy(self, split: str = "train") -> float:
        return float(self.accuracy_per_layer(split)[-1])

    def distance_to_turnpike(self, split: str = "train") -> np.ndarray:
        """Root-mean-square over samples of dist(x_k^i, X*_{y_i}), per layer: shape (N+1,).

        This is the stacked distance dist(x_k, X*_y) of the paper divided by sqrt(D),
        so that ε does not depend on the size of the data set.
        """
        states, labels = self._split(split)
        soft = self.ocp.soft_cross_entropy()
        if soft is None:
            raise ValueError("the turnpike set X*_y is defined by a SoftCrossEntropy cost; this OCP has none")
        distances = distance_to_minimisers(states, labels, soft.num_classes, soft.p_d)
        return np.sqrt((distances ** 2).mean(axis=1))

    # --- turnpike ---------------------------------------------------------------------
    def turnpike_set(self, eps: float, split: str = "train") -> np.ndarray:
        """Q_ε: the layers k in 0..N whose states are within ε of X*_y (RMS distance)."""
        eps = _checks.real("eps", eps, minimum=0.0, strict_min=True)
        return np.flatnonzero(self.distance_to_turnpike(split) <= eps)

    def turnpike_layer(self, eps: float, split: str = "train") -> int | None:
        """First layer k such that every layer k..N is in Q_ε (None if x_N is not)."""
        eps = _checks.real("eps", eps, minimum=0.0, strict_min=True)
        outside = np.flatnonzero(self.distance_to_turnpike(split) > eps)
        if outside.size == 0:
            return 0
        last_outside = int(outside[-1])
        return None if last_outside == self.depth else last_outside + 1

    def prune(self, depth: int) -> Network:
        """The network cut to its first ``depth`` layers (a runnable :class:`Network`)."""
        return self.network.prune(depth)
