"""The module backend's settings (``solve_ocp(..., **settings)`` for a module system) and its methods."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import _checks
from ._protocol import StepMethod

#: ``torch.compile`` modes of the training forward pass (``compile=``)
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")

_SCHEDULE = {"schedule": "constant", "milestones": (), "decay": 0.1, "warmup_steps": 0,
             "final_lr_fraction": 0.0}


def _sgd(groups, options, *, weight_decay: float, capturable: bool):
    return torch.optim.SGD(groups, lr=options["lr"], momentum=options["momentum"], nesterov=options["nesterov"],
                           weight_decay=weight_decay, fused=True)


def _adam(kind):
    def build(groups, options, *, weight_decay: float, capturable: bool):
        return kind(groups, lr=options["lr"], betas=(options["beta1"], options["beta2"]), weight_decay=weight_decay,
                    fused=True, capturable=capturable)
    return build


#: methods of the module backend: torch.optim optimisers with a learning-rate schedule, each built by its
#: ``stepper(groups, options, weight_decay=, capturable=)``. The weight decay is the input penalty's gradient
#: (SGD, Adam: added to the gradient, exactly ∇ w_s r‖w‖², scaled by a group's lr factor like the rest of it;
#: AdamW: decoupled, lr·decay·w, the same fixed point) inside one fused kernel per step, on every device
#: (benchmarks/optimiser_step.py): the graph-ready step needs it (foreach reads a tensor learning rate on the
#: host), and eager and graph-ready steps then share its arithmetic exactly. ``capturable``: Adam's step
#: counts on the device, for a step replayed as a CUDA graph.
MODULE_METHODS = {
    "sgd": StepMethod("sgd", {"lr": 0.1, "momentum": 0.9, "nesterov": False, **_SCHEDULE}, True,
                  "torch.optim.SGD with momentum (Nesterov optional)", stepper=_sgd),
    "adam": StepMethod("adam", {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, **_SCHEDULE}, True,
                   "torch.optim.Adam (weight decay added to the gradient, = the input penalty)",
                   stepper=_adam(torch.optim.Adam)),
    "adamw": StepMethod("adamw", {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, **_SCHEDULE}, True,
                    "torch.optim.AdamW (decoupled weight decay)", stepper=_adam(torch.optim.AdamW)),
}


@dataclass(frozen=True)
class ModuleSettings:
    """The settings of a module system's solve (``solve_ocp(..., **settings)``), each default defined here.

    normalise : (mean, std), optional
        Per-channel statistics: uint8 inputs are scaled to [0, 1] and normalised per batch.
    augment : callable, optional
        ``augment(images, generator) -> images``, applied to training batches before
        normalisation (e.g. random crop and flip from :mod:`turnpike.data`).
    exit_lr_factor : float, optional
        Learning-rate factor of the exit-only parameters (the full variant's heads); default
        1/γ with γ the stage cost's loss weight, as the 2025 paper sets α/γ.
    eval_batch_size : int
        Chunk size of the per-exit evaluation in the solution.
    amp : bool
        bf16 autocast of the forward pass (costs are evaluated in float32).
    channels_last : bool
        Module and batches in channels-last memory format.
    compile : str, optional
        ``torch.compile`` the training forward pass with this mode (one of ``COMPILE_MODES``);
        None (default) runs it eagerly.
    sync_every : int or "auto"
        Read J on the host every this many steps (``evaluate`` returns a device tensor in
        between, so a step never waits for the GPU); "auto": every step on a CPU, once per
        epoch on a GPU. Divergence is then detected at those reads and rolled back to the
        parameters of the previous one.
    sync_batchnorm : bool
        Inside a process group: normalise every BatchNorm by the statistics of the whole batch
        over all ranks (:meth:`ModuleSystem.synchronise_batch_norm`) instead of each rank's share.
    loader_workers : int or "auto"
        ``DataLoader`` worker processes reading a Dataset (inputs or test data given as one);
        "auto": 0 on a CPU (decoding in the training process, whose threads use the cores), up to 8
        on a GPU. Batches are pinned on a GPU.
    cuda_graph : bool
        Take each training step as two CUDA graphs (forward and backward; optimiser step) replayed on
        static buffers (:mod:`turnpike.backends._module_step`): one launch each instead of thousands.
        On a device other than CUDA the same graph-ready step runs eagerly and the solution says why
        (``extra["training_step"]``); refused inside a process group and with a compile mode that
        captures graphs itself.
    cudnn_benchmark : bool or "auto"
        ``torch.backends.cudnn.benchmark`` during the training steps (cuDNN times its algorithms for
        each new input shape once); "auto": on for CUDA, whose batches have static shapes here.
    """

    normalise: tuple | None = None
    augment: object = None
    exit_lr_factor: float | None = None
    eval_batch_size: int = 512
    amp: bool = False
    channels_last: bool = False
    sync_batchnorm: bool = False
    sync_every: object = "auto"
    compile: str | None = None
    loader_workers: object = "auto"
    cuda_graph: bool = False
    cudnn_benchmark: object = "auto"

    def __post_init__(self):
        if self.normalise is not None:
            _checks.names("normalise", self.normalise, 2, "a pair (mean, std) of per-channel statistics")
        if self.augment is not None and not callable(self.augment):
            _checks.fail("augment", "a callable augment(images, generator) -> images", self.augment)
        if self.exit_lr_factor is not None:
            _checks.real("exit_lr_factor", self.exit_lr_factor, minimum=0.0, strict_min=True)
        _checks.integer("eval_batch_size", self.eval_batch_size, minimum=1)
        for name, value in (("amp", self.amp), ("channels_last", self.channels_last),
                            ("sync_batchnorm", self.sync_batchnorm)):
            _checks.boolean(name, value)
        if self.sync_every != "auto":
            _checks.integer("sync_every", self.sync_every, minimum=1)
        if self.compile is not None:
            _checks.choice("compile", self.compile, COMPILE_MODES)
        if self.loader_workers != "auto":
            _checks.integer("loader_workers", self.loader_workers, minimum=0)
        _checks.boolean("cuda_graph", self.cuda_graph)
        if self.cudnn_benchmark != "auto":
            _checks.boolean("cudnn_benchmark", self.cudnn_benchmark)
