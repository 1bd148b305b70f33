"""What a solve returns: the trained network, its trajectories and turnpike answers."""
from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np

from .. import _array, _checks
from .._costs import Cost, SoftCrossEntropy
from ..systems._protocol import FlatSystem, Trajectories
from ..theory._soft_ce import distance_to_minimisers


class Status(enum.StrEnum):
    """How a solve ended (a string enum: ``solution.status == "max_steps"`` works too).

    - ``CONVERGED``: the method's convergence test passed (L-BFGS: gradient or objective
      change below its tolerances).
    - ``MAX_STEPS``: every method ran its given number of steps; the usual end of a
      first-order run, not a failure.
    - ``STALLED``: L-BFGS stopped early without meeting its tolerances (e.g. the line search
      found no decrease); the result is usable but may not be a minimiser — try more Adam
      steps first or a looser ``gtol``.
    - ``DIVERGED``: the objective became non-finite or exceeded ``divergence_factor`` times
      its first value; the last finite parameters are returned — lower the learning rate.
    - ``STOPPED``: the callback returned False or the user interrupted; the last good
      parameters are returned, and a checkpointed run can be resumed.
    - ``TIME_LIMIT``: ``time_limit`` passed; the solve stopped just after writing its
      checkpoint, and ``resume=True`` continues with nothing lost.
    - ``INTERRUPTED``: SIGTERM (a scheduler's pre-emption) or Ctrl-C arrived during a solve with a
      checkpoint: it stopped at the next step boundary just after writing the checkpoint there, and
      ``resume=True`` continues with nothing lost (``extra["signal"]`` names the signal). A second
      Ctrl-C, or Ctrl-C without a checkpoint, stops at once with ``STOPPED``.
    """

    CONVERGED = "converged"
    MAX_STEPS = "max_steps"
    STALLED = "stalled"
    DIVERGED = "diverged"
    STOPPED = "stopped"
    TIME_LIMIT = "time_limit"
    INTERRUPTED = "interrupted"


class SolutionOutcome:
    """What every solution says about how its solve ended (``status`` a :class:`Status`)."""

    status: Status

    @property
    def success(self) -> bool:
        return self.status in (Status.CONVERGED, Status.MAX_STEPS)

    @property
    def depth(self) -> int:
        return self.network.depth


@dataclass(frozen=True, eq=False)
class Network:
    """A system together with its controls: a runnable residual network."""

    system: object
    controls: np.ndarray        # flat θ, see the system's ``unpack``

    def __post_init__(self):
        system = _checks.instance("system", self.system, FlatSystem, "a flat turnpike system (SingleLayerResNet, "
                                  "TwoLayerResNet, ShortcutNetwork, NeuralODE, ...)")
        controls = _array.to_numpy(_array.as_array("controls", self.controls))
        if controls.shape != (system.parameter_count,):
            _checks.fail("controls", f"a flat vector of the system's {system.parameter_count} controls", controls)
        object.__setattr__(self, "controls", controls)

    @property
    def depth(self) -> int:
        return self.system.depth

    @property
    def has_states(self) -> bool:
        """Whether the system gives every layer's states (a :class:`~turnpike.systems.Trajectories`)."""
        return isinstance(self.system, Trajectories)

    def states(self, inputs) -> np.ndarray:
        """Every layer's states x_0..x_N for ``inputs`` (B, n): shape (N+1, B, n)."""
        if not self.has_states:
            raise TypeError(f"{type(self.system).__name__} gives no layer states (it implements no rollout, "
                            f"turnpike.systems.Trajectories): only its objective and controls are available")
        inputs = _checks.finite_array("inputs", inputs, ndim=2)
        return self.system.rollout(self.controls, inputs)

    def __call__(self, inputs) -> np.ndarray:
        return self.states(inputs)[-1]

    def predict(self, inputs, num_classes: int) -> np.ndarray:
        """Class predictions: argmax of the first ``num_classes`` components of x_N."""
        num_classes = _checks.integer("num_classes", num_classes, minimum=1, maximum=self.system.state_dim)
        return self.system.readout(self(inputs), num_classes).argmax(axis=1)

    def prune(self, depth: int) -> "Network":
        """The first ``depth`` layers; the rest (the turnpike) is dropped."""
        system, controls = self.system.truncate(self.controls, depth)
        return Network(system, controls)

    def control_norms(self) -> np.ndarray:
        """‖u_k‖ per layer, shape (N,)."""
        return self.system.control_norms(self.controls)


@dataclass(frozen=True, eq=False)
class Solution(SolutionOutcome):
    """Result of :func:`turnpike.solve_ocp`.

    Trajectories are stored for every layer: ``train_states`` (N+1, D, n) and
    ``test_states`` (N+1, D_test, n) or None. ``status`` is a :class:`Status`; ``message``
    says what happened and, on failure, what to change. ``history`` holds the objective
    per optimisation step.
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
        accuracy = ""
        if self.ocp.num_classes is not None and self.train_states is not None:
            accuracy = f", train_accuracy={self.accuracy('train'):.4f}"
        return f"Solution(status={self.status!r}, objective={self.objective:.6g}, depth={self.depth}{accuracy})"

    # --- basic data ----------------------------------------------------------------
    @property
    def controls(self) -> np.ndarray:
        return self.network.controls

    def control_norms(self) -> np.ndarray:
        """‖u_k‖ for k = 0..N-1."""
        return self.network.control_norms()

    def _split(self, split: str):
        _checks.choice("split", split, ("train", "test"))
        if self.train_states is None:
            raise ValueError("split: this solution was computed with keep_states=False; use "
                             "turnpike.layer_statistics(solution.network, inputs, labels, ...) instead")
        if split == "train":
            return self.train_states, self.ocp.labels
        if self.test_states is None:
            raise ValueError("split: expected 'train' (no test data was given to solve_ocp: pass "
                             "test_data=(inputs, labels)), got 'test'")
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
        _checks.instance("cost", cost, Cost, "a turnpike cost (e.g. SoftCrossEntropy(...)) or None")
        if not cost.state_terms:
            _checks.fail("cost", "a cost with a state term (the input penalty reads no states)", cost)
        self.network.system.check_readout(cost.logit_width, "cost")
        logits = self.network.system.readout(states, cost.logit_width)
        return np.asarray(cost.state_per_sample(logits, labels)).mean(axis=1)

    def accuracy_per_layer(self, split: str = "train") -> np.ndarray:
        """Accuracy of classifying with the first C components of each layer's states."""
        states, labels = self._split(split)
        logits = self.network.system.readout(states, self._classes())
        return (logits.argmax(axis=-1) == labels).mean(axis=1)

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
        return turnpike_layer_of(self.distance_to_turnpike(split), eps)

    def prune(self, depth: int) -> Network:
        """The network cut to its first ``depth`` layers (a runnable :class:`Network`)."""
        return self.network.prune(depth)


def layer_statistics(network: Network, inputs, labels, *, num_classes: int, soft_cross_entropy=None,
                     chunk: int = 512, dtype=np.float32) -> dict:
    """Per-layer mean loss, accuracy and RMS distance to X*_y, computed in chunks of samples.

    For data sets whose layer-wise states do not fit in memory (``keep_states=False``):
    each chunk is rolled out, reduced to per-layer sums and dropped. ``soft_cross_entropy``
    (a SoftCrossEntropy) gives the loss and the distance; without it only accuracy is
    computed. Returns arrays of N+1 values under ``accuracy``, ``loss`` and ``distance``.
    """
    _checks.instance("network", network, Network, "a turnpike Network (solution.network)")
    inputs = _checks.finite_array("inputs", inputs, ndim=2)
    if inputs.shape[0] < 1 or inputs.shape[1] != network.system.state_dim:
        _checks.fail("inputs", f"at least one sample of shape ({network.system.state_dim},) (the system's "
                               f"state_dim)", inputs)
    num_classes = _checks.integer("num_classes", num_classes, minimum=1, maximum=network.system.state_dim)
    labels = _checks.labels("labels", labels, count=inputs.shape[0], num_classes=num_classes)
    if soft_cross_entropy is not None and not (isinstance(soft_cross_entropy, SoftCrossEntropy)
                                               and soft_cross_entropy.num_classes == num_classes):
        _checks.fail("soft_cross_entropy", f"None or a SoftCrossEntropy with num_classes={num_classes}",
                     soft_cross_entropy)
    chunk = _checks.integer("chunk", chunk, minimum=1)
    try:
        dtype = np.dtype(dtype)
    except TypeError:
        _checks.fail("dtype", "np.float32 or np.float64", dtype)
    _checks.choice("dtype", dtype.name, ("float32", "float64"))
    controls = network.controls.astype(dtype)
    correct = loss = squared = 0.0
    for begin in range(0, inputs.shape[0], chunk):
        x, y = inputs[begin:begin + chunk].astype(dtype), labels[begin:begin + chunk]
        states = network.system.rollout(controls, x)                     # (N+1, chunk, n)
        logits = network.system.readout(states, num_classes)                # (N+1, chunk, C)
        correct = correct + (logits.argmax(axis=-1) == y).sum(axis=1)
        if soft_cross_entropy is not None:
            loss = loss + soft_cross_entropy._values(logits, y).astype(np.float64).sum(axis=1)
            distance = distance_to_minimisers(logits, y, num_classes, soft_cross_entropy.p_d)
            squared = squared + (distance ** 2).sum(axis=1)
    count = inputs.shape[0]
    result = {"accuracy": np.asarray(correct, dtype=np.float64) / count}
    if soft_cross_entropy is not None:
        result["loss"] = np.asarray(loss) / count
        result["distance"] = np.sqrt(np.asarray(squared) / count)
    return result


def turnpike_layer_of(distance, eps: float):
    """First layer k such that distance[k:] <= eps (None if the last layer is outside)."""
    outside = np.flatnonzero(np.asarray(distance) > eps)
    if outside.size == 0:
        return 0
    return None if outside[-1] == len(distance) - 1 else int(outside[-1]) + 1
