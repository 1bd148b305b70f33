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
augmentation) before the exits are evaluated.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .. import _checks
from ._solution import SolutionOutcome, Status, turnpike_layer_of


@torch.no_grad()
def exit_statistics(backend, source) -> dict:
    """Per-exit mean loss, accuracy, stage-cost value and output residuals over a data set (the backend's
    source of it: :mod:`turnpike.backends._module_data`)."""
    module, ocp = backend.module, backend.ocp
    loss_cost = ocp.terminal_cost or ocp.stage_state_cost
    totals = {"loss": 0.0, "correct": 0.0, "residual": 0.0, "stage": 0.0}
    for chunk, chunk_labels in source.chunks(backend.eval_batch_size):
        with backend.autocast():
            logits = module.exit_logits(backend.prepare(chunk))
        logits = logits.float()                                                   # (N+1, b, C)
        totals["loss"] = totals["loss"] + loss_cost.state_per_sample(logits, chunk_labels).sum(dim=1).double()
        totals["correct"] = totals["correct"] + (logits.argmax(-1) == chunk_labels).sum(dim=1).double()
        totals["residual"] = totals["residual"] + (logits[1:] - logits[:-1]).pow(2).sum(dim=(1, 2)).double()
        if backend.stage_weight > 0:
            totals["stage"] = totals["stage"] + ocp.stage_state_cost.state_per_sample(
                logits[:-1], chunk_labels).sum().double()
        if ocp.terminal_cost is not None:
            totals.setdefault("terminal", 0.0)
            totals["terminal"] = totals["terminal"] + ocp.terminal_cost.state_per_sample(
                logits[-1], chunk_labels).sum().double()
    count = source.count
    value = lambda key: np.asarray(torch.as_tensor(totals[key]).cpu(), dtype=np.float64) / count   # noqa: E731
    return {"loss": value("loss"), "accuracy": value("correct"), "residual": np.sqrt(value("residual")),
            "stage": float(value("stage")), "terminal": float(value("terminal")) if "terminal" in totals else 0.0}


@dataclass(frozen=True, eq=False)
class ModuleSolution(SolutionOutcome):
    """Result of :func:`turnpike.solve_ocp` for a module system (e.g. :class:`PreActResNet`).

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
    def evaluate(cls, backend, *, status, message, history, wall_time_s, test_data):
        module, ocp = backend.module, backend.ocp
        module.eval()
        if backend.stage_weight == 0:
            # exits never trained: their BatchNorm statistics come from the training set, post hoc
            module.recalibrate_exit_statistics(
                backend.prepare(images) for images, _ in backend.data.chunks(backend.eval_batch_size))
        train = exit_statistics(backend, backend.data)
        metrics = {"train_loss": train["loss"], "train_accuracy": train["accuracy"]}
        residual = train["residual"]
        if test_data is not None:
            test = exit_statistics(backend, test_data)
            metrics.update(test_loss=test["loss"], test_accuracy=test["accuracy"])
            residual = test["residual"]
        penalty = 0.5 * backend.decay * float(sum(p.detach().double().pow(2).sum() for p in module.parameters()
                                                  if p.requires_grad))     # the trained weights, as in training
        objective = backend.stage_weight * train["stage"] + ocp.terminal_weight * train["terminal"] + penalty
        if not np.isfinite(objective) and status != Status.DIVERGED:
            status, message = Status.DIVERGED, "the final objective is not finite; lower the learning rate"
        return cls(ocp=ocp, network=module, objective=float(objective), status=status, message=message,
                   history=history, wall_time_s=wall_time_s, seed=backend.seed, exit_metrics=metrics,
                   output_residual_norms=residual,
                   branch_parameter_norms=module.branch_parameter_norms().detach().cpu().double().numpy(),
                   extra={"backend": "module", "amp": backend.amp, "training_step": backend.step_mode.value,
                          **({"training_step_reason": backend.step_reason} if backend.step_reason else {})})

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
