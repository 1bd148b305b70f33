r"""What a solve of a module system returns: per-exit metrics and the turnpike of the exits.

For the convolutional ResNet the states x_k are images of feature maps: keeping every
layer's states of a data set is out of the question, so everything is reduced while the
data passes through in chunks (eval mode, no gradient): per exit k = 0..N the mean loss
L(ŷ_k) and the accuracy on the train and test sets, the output residuals
‖ŷ_{k+1} − ŷ_k‖ (root mean square over the samples, Fig. 4–5 of the 2025 paper), and the
residual branches' parameter norms ‖w_F,k‖.

Turnpike of the exits. The readout of a layer on the turnpike no longer changes: its loss
sits at the best the network reaches. With the gap g_k = L(ŷ_k) − min_j L(ŷ_j) of the
training loss, the ε-turnpike layer is the first k with g_j ≤ ε for every j ≥ k; pruning
there keeps the SubResNet-k whose output equals exit k (Lemma 1/2 of the 2025 paper).

Networks trained without the stage cost have exits that were never trained; as the paper
does, their per-exit BatchNorm statistics are recomputed over the training set (no
augmentation) before the exits are evaluated, on a copy of the network: the solution's
``network`` is that copy, and the trained module keeps what training gave it.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from .. import _checks
from .._objective import module_loss_terms, stage_term_active, weight_penalty
from ._solution import SolutionOutcome, Status, turnpike_layer_of


@dataclass(frozen=True)
class ModuleEvaluation:
    """What a module system's solution is computed from, handed over by the backend at the end of a solve.

    ``train`` and ``test`` are sources of (stored images, labels) chunks (``chunks(size)``, ``count``;
    :mod:`turnpike.backends._module_data`), ``prepare`` turns stored images into network inputs, ``autocast()``
    is the forward pass's context in training, ``extra`` what the solution reports of the training."""

    module: torch.nn.Module
    ocp: object
    train: object
    test: object | None
    prepare: Callable
    autocast: Callable
    chunk_size: int
    seed: int
    extra: dict


@torch.no_grad()
def exit_statistics(evaluation: ModuleEvaluation, source, module) -> dict:
    """Per-exit mean loss, accuracy and output residuals of ``module`` over a data set, and J's loss part there
    (:func:`turnpike._objective.module_loss_terms` on every chunk, weighted by its size)."""
    ocp = evaluation.ocp
    loss_cost = ocp.terminal_cost or ocp.stage_state_cost
    totals = {"loss": 0.0, "correct": 0.0, "residual": 0.0, "objective": 0.0}
    for chunk, chunk_labels in source.chunks(evaluation.chunk_size):
        with evaluation.autocast():
            logits = module.exit_logits(evaluation.prepare(chunk))
        logits = logits.float()                                                   # (N+1, b, C)
        totals["loss"] = totals["loss"] + loss_cost.state_per_sample(logits, chunk_labels).sum(dim=1).double()
        totals["correct"] = totals["correct"] + (logits.argmax(-1) == chunk_labels).sum(dim=1).double()
        totals["residual"] = totals["residual"] + (logits[1:] - logits[:-1]).pow(2).sum(dim=(1, 2)).double()
        loss_part = module_loss_terms(ocp, logits, chunk_labels)[0]                # the chunk's mean
        totals["objective"] = totals["objective"] + loss_part.double() * chunk_labels.shape[0]
    count = source.count
    value = lambda key: np.asarray(torch.as_tensor(totals[key]).cpu(), dtype=np.float64) / count   # noqa: E731
    return {"loss": value("loss"), "accuracy": value("correct"), "residual": np.sqrt(value("residual")),
            "objective": float(value("objective"))}


@dataclass(frozen=True, eq=False)
class ModuleSolution(SolutionOutcome):
    """Result of :func:`turnpike.solve_ocp` for a module system (e.g. a :class:`ResidualNetwork`).

    ``exit_metrics`` holds arrays of N+1 values per exit: ``train_loss``,
    ``train_accuracy`` and, with test data, ``test_loss`` and ``test_accuracy``;
    ``output_residual_norms`` (N,) on the test set (else the training set) and
    ``branch_parameter_norms`` (N,). ``status`` is a :class:`Status`.
    """

    ocp: object
    network: torch.nn.Module
    objective: float
    status: Status
    message: str
    history: dict
    wall_time_s: float
    seed: int
    exit_metrics: dict
    output_residual_norms: np.ndarray
    branch_parameter_norms: np.ndarray
    extra: dict = field(default_factory=dict)

    @classmethod
    def evaluate(cls, evaluation: ModuleEvaluation, *, status, message, history, wall_time_s):
        """The solution of a solve that ended with ``status``: every exit evaluated on the train and test sets
        (eval mode), J on the training set by :mod:`turnpike._objective`'s definition."""
        module, ocp = evaluation.module, evaluation.ocp
        if not stage_term_active(ocp):
            # exits never trained: their BatchNorm statistics come from the training set, post hoc, on a copy of
            # the network (recalibration also sets the skips' own statistics, theory/skip-path-exits.md): the
            # trained network keeps the statistics of its own forward passes, as a plain loop leaves them
            module = copy.deepcopy(module)
            module.recalibrate_exit_statistics(
                evaluation.prepare(images) for images, _ in evaluation.train.chunks(evaluation.chunk_size))
        module.eval()
        train = exit_statistics(evaluation, evaluation.train, module)
        metrics = {"train_loss": train["loss"], "train_accuracy": train["accuracy"]}
        residual = train["residual"]
        if evaluation.test is not None:
            test = exit_statistics(evaluation, evaluation.test, module)
            metrics.update(test_loss=test["loss"], test_accuracy=test["accuracy"])
            residual = test["residual"]
        # the trained weights' penalty, in float64 as the losses are summed
        penalty = float(weight_penalty(ocp, [p.detach().double() for p in module.parameters() if p.requires_grad]))
        objective = train["objective"] + penalty
        if not np.isfinite(objective) and status != Status.DIVERGED:
            status, message = Status.DIVERGED, "the final objective is not finite; lower the learning rate"
        return cls(ocp=ocp, network=module, objective=float(objective), status=status, message=message,
                   history=history, wall_time_s=wall_time_s, seed=evaluation.seed, exit_metrics=metrics,
                   output_residual_norms=residual,
                   branch_parameter_norms=module.branch_parameter_norms().detach().cpu().double().numpy(),
                   extra={"backend": "module", **evaluation.extra})

    def __repr__(self) -> str:
        return (f"ModuleSolution(status={self.status!r}, objective={self.objective:.6g}, depth={self.depth}, "
                f"train_accuracy={self.accuracy('train'):.4f})")

    def _metric(self, kind: str, split: str) -> np.ndarray:
        _checks.choice("split", split, ("train", "test"))
        key = f"{split}_{kind}"
        if key not in self.exit_metrics:
            raise ValueError("split: expected 'train' (no test data was given to solve_ocp: pass "
                             "test_data=(images, labels)), got 'test'")
        return self.exit_metrics[key]

    def loss_per_layer(self, split: str = "train") -> np.ndarray:
        """Mean loss L(ŷ_k) of every exit k = 0..N, shape (N+1,)."""
        return self._metric("loss", split)

    def accuracy_per_layer(self, split: str = "train") -> np.ndarray:
        return self._metric("accuracy", split)

    def accuracy(self, split: str = "train") -> float:
        return float(self.accuracy_per_layer(split)[-1])

    def control_norms(self) -> np.ndarray:
        """‖w_F,k‖ of the residual branches, shape (N,)."""
        return self.branch_parameter_norms

    def loss_gap(self, split: str = "train") -> np.ndarray:
        """g_k = L(ŷ_k) − min_j L(ŷ_j): how far exit k is from the best exit (see the module docstring)."""
        loss = self.loss_per_layer(split)
        return loss - loss.min()

    def turnpike_layer(self, eps: float, split: str = "train") -> int | None:
        """First exit k with g_j ≤ ε for all j ≥ k (None if the output exit itself is further)."""
        eps = _checks.real("eps", eps, minimum=0.0, strict_min=True)
        return turnpike_layer_of(self.loss_gap(split), eps)

    def prune(self, depth: int):
        """The runnable SubResNet-``depth`` whose output equals exit ``depth`` (eval mode)."""
        depth = _checks.integer("depth", depth, minimum=0)
        return self.network.subresnet(depth)
