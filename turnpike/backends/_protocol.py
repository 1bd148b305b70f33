"""What a backend provides to :func:`turnpike.solve_ocp`.

A backend owns everything that differs between kinds of systems: how the parameters are
stored (one flat θ, or a ``torch.nn.Module``), how J and its gradient are computed on
the batch of a step, how an optimiser step is taken, how state goes into a checkpoint and
what the solution holds. ``solve_ocp`` keeps only what all share: method phases, history,
the divergence guard with rollback, checkpoint/resume, progress bar, callback.

The per-step protocol, for the steps of a first-order method::

    backend.begin_phase(phase, method, steps, options)   # build the optimiser
    value = backend.evaluate(phase, step)                # J on that step's batch (+ gradient)
    backend.update(step)                                 # take the step

Methods that own their loop (L-BFGS) run through :meth:`Backend.run_method`.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Method:
    """An optimiser in a backend's registry: a :class:`StepMethod` or a :class:`LoopMethod`."""

    name: str
    defaults: dict
    minibatch: bool
    description: str


@dataclass(frozen=True)
class StepMethod(Method):
    """A first-order method that ``solve_ocp`` steps one update at a time (``backend.evaluate`` then
    ``backend.update``); its state can be saved between steps, so a killed run resumes exactly.

    ``stepper`` builds its state for a phase, called by the backend: the flat one as
    ``stepper(θ, steps, options)`` (an object with ``update``, ``state_dict``, ``load_state_dict``), the
    module one as ``stepper(parameter groups, options, weight_decay=, capturable=)`` (a torch.optim optimiser).
    """

    stepper: Callable = None


@dataclass(frozen=True)
class LoopMethod(Method):
    """A method that owns its loop (L-BFGS): ``run(objective, θ, steps, options, report)``."""

    run: Callable = None


class Backend(abc.ABC):
    """Holds the parameters of one solve and takes its steps (see the module docstring)."""

    #: name -> :class:`Method`; ``solve_ocp`` validates methods and options against it
    methods: dict

    #: the dataclass of this kind's own settings (``solve_ocp(..., **settings)``), each with its default;
    #: a setting of another kind is refused by :func:`turnpike.backends.make_backend`
    Settings: type

    #: True inside a process group of more than one rank: decisions every rank must take together
    #: (e.g. a stop for a signal) are then taken where the ranks meet, through :meth:`any_rank`
    distributed: bool = False

    #: False on the ranks other than 0 of a process group (DistributedDataParallel): ``solve_ocp``
    #: then writes no checkpoint and shows no progress bar there; every rank reads one to resume
    writes_files: bool = True

    #: J is read on the host every this many steps: with more than 1, :meth:`evaluate` returns
    #: a 0-dim device tensor and a step never waits for the device (``solve_ocp`` checks the
    #: values for divergence at each read, at checkpoints and at a phase's last step)
    sync_every: int = 1

    #: work of one layer on one batch (batch × n × max(n, width)) where the backend knows it:
    #: ``threads="auto"`` takes one thread below a measured threshold; None leaves torch's setting
    layer_work: int | None = None

    #: True when J and ∇J are computed in numpy (its BLAS does the products) and torch only takes the
    #: optimiser step: ``solve_ocp`` then gives its threads to numpy's BLAS and one to torch, since
    #: two thread pools busy-waiting on the same cores slow each other down
    numpy_sweep: bool = False

    @abc.abstractmethod
    def fingerprint(self) -> dict:
        """Settings a checkpoint must share to be resumed (JSON-serialisable)."""

    @abc.abstractmethod
    def begin_phase(self, phase: int, method: Method, steps: int, options: dict) -> None:
        """Build the optimiser of ``method`` for a phase of ``steps`` steps."""

    @abc.abstractmethod
    def evaluate(self, phase: int, step: int):
        """J on the batch of ``step`` (a float, or a 0-dim tensor if ``sync_every`` > 1) and, kept
        inside, its gradient."""

    @abc.abstractmethod
    def update(self, step: int) -> None:
        """One optimiser step with the gradient of the last :meth:`evaluate`."""

    def any_rank(self, flag: bool) -> bool:
        """True if ``flag`` is True on any rank of the process group the backend trains in (itself
        if none): decisions that must be the same on every rank, e.g. a time limit."""
        return flag

    def run_method(self, phase: int, method: Method, steps: int, options: dict, report) -> tuple:
        """Run a method that owns its loop; ``report(step, J)`` returns False to stop.

        Returns (status, message) with status one of :class:`turnpike.Status`'s values.
        """
        raise ValueError(f"method: expected one of the first-order methods for this system, got {method.name!r}")

    @abc.abstractmethod
    def snapshot(self):
        """The current parameters, kept as the last good point (must not alias later updates)."""

    @abc.abstractmethod
    def restore(self, snapshot) -> None:
        """Go back to a :meth:`snapshot` (after divergence or a stop)."""

    @abc.abstractmethod
    def is_finite(self) -> bool:
        """All parameters finite."""

    @abc.abstractmethod
    def controls_for_callback(self):
        """A copy of the parameters, for the user's callback."""

    @abc.abstractmethod
    def batch_accuracy(self) -> float | None:
        """Output-layer accuracy on the latest batch (None: not a classifier)."""

    @abc.abstractmethod
    def write_checkpoint(self, path, common: dict, *, with_optimiser: bool) -> None:
        """Write parameters and the solver's ``common`` fields atomically.

        ``with_optimiser``: the checkpoint is taken inside a step (after its objective, before
        its update) that a resumed run repeats: it holds the optimiser state and any state
        the step's evaluation changed as it was before (e.g. BatchNorm running statistics).
        """

    @abc.abstractmethod
    def read_checkpoint(self, path) -> tuple[dict, dict]:
        """Restore parameters from ``path``; return (common fields, optimiser state)."""

    @abc.abstractmethod
    def load_optimiser_state(self, state: dict) -> None:
        """Restore the optimiser state of the phase just begun (resume)."""

    @abc.abstractmethod
    def solution(self, *, status, message, history, wall_time_s):
        """The :class:`turnpike.Solution` of this solve (with the test data the backend was given)."""
