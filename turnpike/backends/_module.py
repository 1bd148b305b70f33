r"""The module backend: a ``torch.nn.Module`` system trained by autograd and ``torch.optim``.

For :class:`~turnpike.systems.ModuleSystem` s (the convolutional ResNet). The objective is
the OCP's, on the readouts (logits) of the layers:

.. math::
    J = w_s \sum_{k=0}^{N-1} \frac1B\sum_i ℓ(E_k(x_k^i), y^i) + w_f \frac1B\sum_i ℓ_f(E_N(x_N^i), y^i)
        + w_s r \|w\|^2,

the 2025 paper's objective (3) with ``stage_cost = γ·CrossEntropy + InputPenalty(λ/2)``.
The stage term needs every exit, :meth:`exit_logits` (batched per stage); without it only
the output is computed (standard training). Its terms are defined once, in
:mod:`turnpike._objective` (``module_loss_terms``, ``weight_penalty``), where
:func:`turnpike.objective_tensor` evaluates the same J as a function of the flat parameter
vector for the Hessian analysis. The input penalty is the optimiser's weight
decay 2 w_s r on every weight of the network: the residual branches w_F as Theorem 1 asks,
and the stem, skips, head (and the full variant's exit heads) as in He et al.'s recipe that
the paper follows, so that standard training is the recipe it is compared against.

Batches come from a per-epoch permutation seeded by (seed, phase, epoch), and augmentation
from a generator seeded by (seed, phase, step): a resumed run draws the same batches and
the same crops. The images are tensors held on the device, or a ``torch.utils.data.Dataset``
(the OCP's inputs, and ``test_data``) read through a ``DataLoader``, batch for batch the same
(:mod:`turnpike.backends._module_data`). Checkpoints hold the module's parameters *and buffers* (per-exit BatchNorm
statistics) and the optimiser state.
"""
from __future__ import annotations

import contextlib

import torch

from .. import _checks
from .._distributed import world
from .._objective import module_loss_terms, stage_term_active, weight_penalty
from .._runs import write_atomically
from ..data._augment import checked_statistics
from ..results import ModuleSolution
from ..results._module import ModuleEvaluation
from ._module_checkpoint import read_checkpoint_file, reordered, shaped_like_parameters
from ._module_data import TrainingBatches, checked_workers, data_source, test_source
from ._module_settings import MODULE_METHODS, ModuleSettings
from ._module_step import StaticStep, StepMode, cudnn_benchmark, static_learning_rate, step_mode
from ._protocol import Backend, StepMethod
from ._schedules import learning_rate

def _names_by_dtype(tensors: dict) -> dict:
    """{dtype: [names of the tensors of that dtype]}, in the tensors' order."""
    groups = {}
    for name, tensor in tensors.items():
        groups.setdefault(tensor.dtype, []).append(name)
    return groups


class ModuleBackend(Backend):
    """Trains a :class:`~turnpike.systems.ModuleSystem` (see the module docstring).

    Its settings (``solve_ocp(..., **settings)``) are :class:`ModuleSettings`' fields, each described there.

    Inside a process group of K > 1 ranks the module trains through DistributedDataParallel:
    every rank draws the same global batch and keeps its share, its loss scaled by K·b_r/B so
    that DDP's mean gradient is the whole batch's (:mod:`turnpike._distributed`). A Dataset is read
    share by share: each rank loads only its own samples (``augment`` then draws on that share, from
    (seed, phase, step) like one process, so K ranks crop differently from one: augment in the
    dataset, from (seed, epoch, index), for runs that must not depend on K).
    """

    methods = MODULE_METHODS

    Settings = ModuleSettings

    def __init__(self, ocp, *, seed, batch_size, device, test_data, settings: ModuleSettings):
        self.ocp, self.seed, self.batch_size, self.device = ocp, seed, batch_size, device
        normalise, channels_last = settings.normalise, settings.channels_last
        self.module = ocp.system.to(device)
        self.memory_format = torch.channels_last if channels_last else torch.preserve_format
        if channels_last:
            self.module.to(memory_format=torch.channels_last)
        self.rank, self.world_size = world()
        self.writes_files, self.distributed = self.rank == 0, self.world_size > 1
        self.sync_batchnorm = settings.sync_batchnorm
        # exit-only parameters (the full variant's heads) get no gradient through the graph without the
        # stage cost; the weight decay still acts on them, in the optimiser step (after DDP's reduction)
        self.stage_active = stage_term_active(ocp)
        self._graphless = [] if self.stage_active else [p for p in self.module.exit_parameters() if p.requires_grad]
        self.trainer = self._distributed_trainer()
        self.compile = settings.compile
        self.step_mode, self.step_reason = step_mode(settings.cuda_graph, device=device,
                                                     world_size=self.world_size, compile_mode=settings.compile)
        self.cudnn_benchmark = (device.type == "cuda") if settings.cudnn_benchmark == "auto" \
            else settings.cudnn_benchmark
        self._static = None                 # the StaticStep of the phase (step_mode static or graphed)
        self.normalise, self.amp = normalise, settings.amp
        self.eval_batch_size = settings.eval_batch_size
        self.workers = checked_workers(settings.loader_workers, device)
        self.data = data_source("inputs", ocp.inputs, ocp.labels, device=device, workers=self.workers,
                                num_classes=ocp.num_classes, seed=seed)
        if normalise is not None:
            if not self.data.uint8:
                _checks.fail("normalise", "None for floating-point inputs (it scales and normalises uint8 "
                                          "images; pass float images normalised already)", normalise)
            self._mean, self._std = checked_statistics(*normalise, self.data.shape[1], device=device,
                                                       dtype=torch.float32)
        self.count = self.data.count
        self.test_data = test_source(test_data, like=self.data, shape=ocp.system.input_shape, device=device,
                                     workers=self.workers, num_classes=ocp.num_classes, seed=seed)
        self.stage_weight = ocp.stage_weight if self.stage_active else 0.0        # w_s of J's stage sum
        self._forward = self._training_forward()
        self.decay = 2.0 * ocp.input_penalty          # ∇(w_s r‖w‖²) = 2 w_s r w
        # γ of the 2025 paper, the exit losses' weight w_s·(the stage cost's loss weight): the full exits learn at α/γ
        gamma = self.stage_weight * sum(w for w, _ in ocp.stage_state_cost.terms) if self.stage_active else 1.0
        self.exit_lr_factor = 1.0 / gamma if settings.exit_lr_factor is None else settings.exit_lr_factor
        self.batches = TrainingBatches(self.data, batch_size=batch_size, seed=seed, device=device,
                                       augment=settings.augment, prepare=self.prepare, rank=self.rank,
                                       world_size=self.world_size)
        sync_every = settings.sync_every
        self.sync_every = (self.batches.per_epoch if device.type == "cuda" else 1) if sync_every == "auto" \
            else sync_every
        self._last = None                   # (final logits, labels) of the latest batch
        self._saved = [torch.empty_like(t) for t in self._state_tensors()]
        # BatchNorm buffers as they were before the latest forward pass: a checkpoint taken
        # inside a step holds these, since the resumed run repeats that step's forward pass
        self._buffers_before = {name: torch.empty_like(b) for name, b in self.module.named_buffers()}
        # (copies, buffers) per dtype: a foreach copy of one dtype runs as multi-tensor kernels on a GPU; one
        # list of mixed dtypes (the BatchNorms' int64 batch counts) falls back to a copy per buffer
        # (benchmarks/results/gpu/profile.log)
        buffers = dict(self.module.named_buffers())
        self._buffer_copies = [([self._buffers_before[n] for n in names], [buffers[n] for n in names])
                               for names in _names_by_dtype(buffers).values()]
        self.optimiser = None
        self._decayed = [p for p in self.module.parameters() if p.requires_grad]   # weights of λ/2‖w‖²

    def _distributed_trainer(self):
        """The module itself, or (K > 1 ranks) the module wrapped in DistributedDataParallel."""
        if self.world_size == 1:
            return None
        if self.sync_batchnorm:
            self.module.synchronise_batch_norm()
        ids = [self.device.index if self.device.index is not None else torch.cuda.current_device()] \
            if self.device.type == "cuda" else None
        # DDP broadcasts rank 0's parameters and buffers here: every rank starts from the same network
        return torch.nn.parallel.DistributedDataParallel(self.module, device_ids=ids,
                                                         find_unused_parameters=bool(self._graphless))

    def _training_forward(self):
        """images -> the readouts J needs: all exits (N+1, B, C) with a stage cost, else the output (B, C).

        Through the module's own call (DistributedDataParallel only sees those), compiled if asked."""
        model = self.trainer if self.trainer is not None else self.module
        all_exits = self.stage_active

        def forward(images):
            return model(images, all_exits=all_exits)
        return forward if self.compile is None else torch.compile(forward, mode=self.compile)

    def fingerprint(self) -> dict:
        saved = {"module": self.module.architecture, "parameters": sum(p.numel() for p in self.module.parameters()),
                 "data": list(self.data.shape), "amp": self.amp}
        if self.world_size > 1 and not self.sync_batchnorm:
            saved["batch_norm_shards"] = self.world_size      # BN statistics of B/K samples: other steps
        return saved

    # --- data -----------------------------------------------------------------------------
    def prepare(self, images):
        """Float network inputs from stored images (uint8 scaled and normalised per channel)."""
        if images.dtype == torch.uint8:
            if self.normalise is None:
                images = images.float() / 255.0
            else:
                # normalise()'s arithmetic with its (1, C, 1, 1) statistics built once, on the device:
                # no host-to-device copy and no check that waits for the device inside a step
                images = images.to(torch.float32).div_(255).sub_(self._mean).div_(self._std)
        return images.contiguous(memory_format=self.memory_format)

    # --- objective ------------------------------------------------------------------------
    def autocast(self):
        """The forward pass's autocast context (bf16 with ``amp``, else none): training and the
        solution's evaluation run the module under the same one."""
        if not self.amp:
            return contextlib.nullcontext()
        # a static step keeps no cast weights between calls: a graph would replay stale casts
        return torch.autocast(self.device.type, dtype=torch.bfloat16,
                              cache_enabled=self.step_mode is StepMode.EAGER)

    def loss_terms(self, logits, labels):
        """J's loss part from the readouts: (N+1, B, C) with a stage cost, else (B, C)
        (:func:`turnpike._objective.module_loss_terms`, shared with the Hessian analysis)."""
        if logits.dtype in (torch.bfloat16, torch.float16):
            logits = logits.float()                   # costs in float32 under bf16 autocast
        return module_loss_terms(self.ocp, logits, labels)

    def objective(self, images, labels):
        """The differentiable J (a torch scalar) on a batch of prepared images."""
        value = self._loss(images, labels)
        return value + self._penalty() if self.decay > 0 else value

    def _loss(self, images, labels):
        """J without its input penalty: the exits' and the output's losses (differentiable)."""
        return self._loss_and_output(images, labels)[0]

    def _loss_and_output(self, images, labels):
        """(:meth:`_loss`, the output logits (detached))."""
        with self.autocast():
            logits = self._forward(images)
        value, final = self.loss_terms(logits, labels)
        return value, final.detach()

    def _penalty(self):
        """w_s r‖w‖² = ½·decay·‖w‖² (:func:`turnpike._objective.weight_penalty`), one fused norm over all
        parameters, not one reduction per tensor."""
        return weight_penalty(self.ocp, self._decayed, fused=True)

    def evaluate(self, phase: int, step: int) -> float:
        if not self.module.training:                  # e.g. a callback evaluated the module
            self.module.train()
        images, labels, scale = self.batches.draw(phase, step)
        with cudnn_benchmark(self.cudnn_benchmark):
            if self._static is None:
                value, final = self._gradient(images, labels, scale)
            else:
                value, final, labels = self._static.evaluate(images, labels)
        self._last = (final, labels)
        if self.world_size > 1:
            # J of the whole batch, the same on every rank: their divergence guards agree
            torch.distributed.all_reduce(value)
            value = value / self.world_size
        return value if self.sync_every > 1 else float(value)

    def _gradient(self, images, labels, scale: float = 1.0):
        """(J on prepared images (a 0-dim tensor), output logits), the gradient of J left in the parameters'
        ``.grad``. The static step zeroes the gradients in place (their addresses stay); the eager one drops them."""
        self.optimiser.zero_grad(set_to_none=self.step_mode is StepMode.EAGER)
        with torch.no_grad():
            for copies, buffers in self._buffer_copies:
                torch._foreach_copy_(copies, buffers)
        value, final = self._loss_and_output(images, labels)
        if self.world_size > 1:
            value = value * scale
        value.backward()
        value = value.detach()
        if self.decay > 0:
            # the penalty's gradient decay·w is the optimiser's weight decay (inside its fused step): through
            # autograd it would take a norm's backward per parameter tensor, thousands of launches a step
            with torch.no_grad():
                value = value + self._penalty()
            for p in self._graphless:        # the decay acts on them too (see __init__)
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
        return value, final

    def any_rank(self, flag: bool) -> bool:
        if self.world_size == 1:
            return flag
        vote = torch.tensor([float(flag)], device=self.device)
        torch.distributed.all_reduce(vote, op=torch.distributed.ReduceOp.MAX)
        return bool(vote.item())

    # --- optimiser ------------------------------------------------------------------------
    def _parameter_groups(self) -> list:
        """[backbone and branches], [the exits' own] (when there are): the optimiser's groups, in order."""
        exits = list(self.module.exit_parameters())
        exit_ids = {id(p) for p in exits}
        return [[p for p in self.module.parameters() if id(p) not in exit_ids]] + ([exits] if exits else [])

    def begin_phase(self, phase, method: StepMethod, steps: int, options: dict) -> None:
        parameters = self._parameter_groups()
        groups = [{"params": parameters[0], "lr_factor": 1.0}]
        if len(parameters) > 1:
            groups.append({"params": parameters[1], "lr_factor": self.exit_lr_factor})
        # the input penalty's gradient is the optimiser's weight decay, inside its fused step (MODULE_METHODS);
        # a static step reads its learning rates from tensors and keeps Adam's step counts on the device
        static = self.step_mode is not StepMode.EAGER
        if static:
            for group in groups:
                group["lr"] = static_learning_rate(options["lr"] * group["lr_factor"], self.device)
        self.optimiser = method.stepper(groups, options, weight_decay=self.decay, capturable=static)
        self.options, self.steps = options, steps
        if static:
            for p in self._decayed:       # allocated once, zeroed in place by every step
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
            self._static = StaticStep(self._gradient, self.optimiser.step, batch_size=self.batch_size or self.count,
                                      graphed=self.step_mode is StepMode.GRAPHED)

    def update(self, step: int) -> None:
        rate = learning_rate(self.options, step, self.steps)
        if self._static is None:
            for group in self.optimiser.param_groups:
                group["lr"] = rate * group["lr_factor"]
            self.optimiser.step()
            return
        for group in self.optimiser.param_groups:
            group["lr"].fill_(rate * group["lr_factor"])       # read on the device by the fused step
        self._static.update()

    def load_optimiser_state(self, state: dict) -> None:
        if state:
            # torch restores every group's settings from the state; keep this run's own: the weight decay
            # (older checkpoints stored 0, the penalty then being in the objective) and the implementation
            # of this device and step mode (a checkpoint may come from another)
            own = [{k: g[k] for k in ("weight_decay", "fused", "foreach", "capturable") if k in g}
                   for g in self.optimiser.param_groups]
            if self._static is not None:          # the learning-rate tensors the fused step reads
                for settings, group in zip(own, self.optimiser.param_groups):
                    settings["lr"] = group["lr"]
            self.optimiser.load_state_dict(state)
            for group, settings in zip(self.optimiser.param_groups, own):
                group.update(settings)
            shaped_like_parameters(self.optimiser)
            if self._static is not None:          # new state tensors: the graphs are captured anew
                self._static.reset()

    # --- state ----------------------------------------------------------------------------
    def _state_tensors(self):
        return list(self.module.state_dict(keep_vars=True).values())

    def snapshot(self):
        # one fused copy into buffers allocated once (parameters and BatchNorm statistics)
        with torch.no_grad():
            torch._foreach_copy_(self._saved, [t.detach() for t in self._state_tensors()])
        return self._saved

    def restore(self, snapshot) -> None:
        with torch.no_grad():
            torch._foreach_copy_([t.detach() for t in self._state_tensors()], snapshot)

    def is_finite(self) -> bool:
        return all(bool(torch.isfinite(p).all()) for p in self.module.parameters())

    def controls_for_callback(self):
        # the module itself, not a copy: copying a conv net's state every step would cost more than it
        return self.module

    def batch_accuracy(self) -> float | None:
        if self._last is None:
            return None
        final, labels = self._last
        return float((final.argmax(-1) == labels).float().mean())

    def write_checkpoint(self, path, common: dict, *, with_optimiser: bool) -> None:
        # with_optimiser: taken inside a step that a resumed run repeats (see _buffers_before)
        if not self.writes_files:
            return
        module_state = self.module.state_dict()
        if with_optimiser:
            module_state.update(self._buffers_before)
        payload = {**common, "history": {k: v.tolist() for k, v in common["history"].items()},
                   "module": module_state,
                   "optimiser": self.optimiser.state_dict() if with_optimiser and self.optimiser else {}}
        # atomic: a killed run leaves the previous checkpoint intact
        write_atomically(path, lambda stream: torch.save(payload, stream), "wb")

    def read_checkpoint(self, path):
        saved = read_checkpoint_file(path, self.device)
        self.module.load_state_dict(saved["module"])
        optimiser = saved["optimiser"]
        order = self.module.optimiser_order(saved["module"])
        if order is not None and optimiser:
            names = {id(p): name for name, p in self.module.named_parameters()}
            optimiser = reordered(optimiser, order, [names[id(p)] for group in self._parameter_groups() for p in group])
        return {key: saved[key] for key in ("fingerprint", "phase", "phase_step", "history")}, optimiser

    @staticmethod
    def read_history(path) -> dict:
        """The history a checkpoint of this backend holds (``step``, ``objective``, ``method``, ``time_s``: the
        steps before it); a file that is not such a checkpoint is a ValueError naming it."""
        return read_checkpoint_file(path, "cpu")["history"]

    # --- result ---------------------------------------------------------------------------
    def solution(self, *, status, message, history, wall_time_s):
        if self.world_size > 1:
            # rank 0's BatchNorm statistics on every rank (unsynced, each rank's last update was its own)
            for buffer in self.module.buffers():
                torch.distributed.broadcast(buffer, 0)
        extra = {"amp": self.amp, "training_step": self.step_mode.value,
                 **({"training_step_reason": self.step_reason} if self.step_reason else {})}
        evaluation = ModuleEvaluation(module=self.module, ocp=self.ocp, train=self.data, test=self.test_data,
                                      prepare=self.prepare, autocast=self.autocast, chunk_size=self.eval_batch_size,
                                      seed=self.seed, extra=extra)
        return ModuleSolution.evaluate(evaluation, status=status, message=message, history=history,
                                       wall_time_s=wall_time_s)
