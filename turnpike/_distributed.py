r"""Several processes, one solve: DistributedDataParallel for module systems.

``torchrun --nproc_per_node K experiments/resnet54_cifar.py ...`` starts K processes with
``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` in their environment; :func:`init_distributed`
joins them into one process group (NCCL on GPUs, gloo on CPUs, so the same path runs and is
tested on a CPU). Inside a process group the module backend (``solve_ocp`` on a
:class:`~turnpike.ResidualNetwork`) trains through ``torch.nn.parallel.DistributedDataParallel``:

- **Data.** Every rank draws the same global batch of ``batch_size`` samples (the per-epoch
  permutation and the augmentation generator are seeded by (seed, phase, epoch/step), not
  by rank) and keeps its contiguous share (``torch.tensor_split``): K ranks see exactly the
  batches one process would.
- **Gradient.** Rank r's loss is its share's mean loss times K·b_r/B, so DDP's average of
  the K gradients is the gradient of the global batch's mean loss (also for unequal shares).
- **BatchNorm.** By default each rank normalises by its own share's statistics, as plain
  DDP does; DDP broadcasts rank 0's buffers before every forward pass, so the running
  statistics of the backbone and of every exit's head are those of rank 0's shares, and
  one step differs from one process on the whole batch by the batch statistics of B/K
  samples instead of B ("ghost batches"). ``sync_batchnorm=True`` normalises every BN (the
  backbone's modules and the per-exit head statistics) by the global batch's statistics,
  with one all-reduce per BN call: K processes then take the same steps as one process on
  the whole batch, at the price of 2N + 1 + (stages) small all-reduces per forward pass.
- **Files.** Only rank 0 writes checkpoints, logs, metrics and figures and shows the
  progress bar; every rank reads the checkpoint on ``resume``.
"""
from __future__ import annotations

import datetime
import os

import torch
import torch.nn.functional as F
from torch import nn

from . import _checks


def world() -> tuple[int, int]:
    """(rank, world size) of this process: (0, 1) outside a process group."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def is_main_process() -> bool:
    """True on rank 0 (and outside a process group): the process that writes files."""
    return world()[0] == 0


#: seconds a collective waits for the other ranks before the job fails (torch's own default is 30 minutes:
#: a stalled rank would hold every GPU of the job that long without a word)
PROCESS_GROUP_TIMEOUT_S = 600.0


def init_distributed(device: str = "cpu", *, timeout_s: float = PROCESS_GROUP_TIMEOUT_S) -> str:
    """Join the process group torchrun describes in the environment; return this rank's device.

    Without ``WORLD_SIZE`` > 1 in the environment nothing happens and ``device`` is returned.
    On CUDA each rank takes the GPU of its ``LOCAL_RANK`` (``device`` "cuda" or "cuda:N"
    becomes "cuda:LOCAL_RANK") and the NCCL backend; on the CPU the gloo backend. A collective
    that waits more than ``timeout_s`` seconds for a stalled rank fails the job with an error.
    """
    timeout_s = _checks.real("timeout_s", timeout_s, minimum=0.0, strict_min=True)
    kind = _checks.device("device", device).type
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1 or torch.distributed.is_initialized():
        return device
    if kind == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    torch.distributed.init_process_group("nccl" if kind == "cuda" else "gloo",
                                         timeout=datetime.timedelta(seconds=timeout_s))
    return device


def finish_distributed(*, wait: bool = True) -> None:
    """Leave the process group (if any), after every rank has arrived (``wait``; pass False
    on an error, when the other ranks may never arrive)."""
    wait = _checks.boolean("wait", wait)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        if wait:
            torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def synced_batch_norm(input, running_mean, running_var, weight, bias, momentum: float, eps: float):
    """``F.batch_norm`` in training mode with the statistics of the batch over all ranks.

    input (B_r, C, H, W) on rank r. Per channel, the sums of x − s and (x − s)² over the
    rank's share and its count go through one differentiable all-reduce; s is the running
    mean (the same on every rank), a shift that keeps E[(x−s)²] − E[x−s]² accurate in
    float32. The output is normalised by the global mean and biased variance, the running
    statistics move towards the global mean and unbiased variance by ``momentum`` — as
    ``F.batch_norm`` on the concatenated batch. Outside a process group it is ``F.batch_norm``.
    """
    if world()[1] == 1:
        return F.batch_norm(input, running_mean, running_var, weight, bias, True, momentum, eps)
    channels = input.shape[1]
    x = input.float()
    shift = (running_mean.detach().float() if running_mean is not None
             else x.new_zeros(channels)).view(1, channels, *([1] * (x.dim() - 2)))
    centred = x - shift
    axes = [0, *range(2, x.dim())]
    count = x.new_full((1,), x.numel() / channels)
    local = torch.cat([centred.sum(axes), (centred * centred).sum(axes), count])      # (2C + 1,)
    totals = _differentiable_sum(local)
    n = totals[-1]
    mean_centred = totals[:channels] / n
    variance = (totals[channels:2 * channels] / n - mean_centred * mean_centred).clamp_min(0.0)
    mean = shift.view(-1) + mean_centred
    shape = (1, channels, *([1] * (x.dim() - 2)))
    out = (x - mean.view(shape)) * torch.rsqrt(variance + eps).view(shape)
    if weight is not None:
        out = out * weight.float().view(shape) + bias.float().view(shape)
    if running_mean is not None:
        with torch.no_grad():
            running_mean.lerp_(mean.detach().to(running_mean.dtype), momentum)
            unbiased = variance.detach() * n.detach() / (n.detach() - 1).clamp_min(1.0)
            running_var.lerp_(unbiased.to(running_var.dtype), momentum)
    return out.to(input.dtype)


def _differentiable_sum(local):
    """The sum over ranks of ``local``, whose gradient is the sum over ranks of the gradients."""
    from torch.distributed import _functional_collectives as collectives

    if hasattr(collectives, "all_reduce_backward"):       # torch versions whose functional all_reduce has autograd
        total = collectives.wait_tensor(collectives.all_reduce(local, "sum", torch.distributed.group.WORLD))
    else:
        from torch.distributed.nn.functional import all_reduce
        total = all_reduce(local)
    if local.requires_grad and not total.requires_grad:
        raise RuntimeError(f"sync_batchnorm: this torch ({torch.__version__}) has no differentiable all-reduce; "
                           "train without sync_batchnorm")
    return total


class SyncedBatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` whose training-mode statistics are those of the batch over all ranks
    (:func:`synced_batch_norm`; torch's ``SyncBatchNorm`` runs on GPUs only). Same parameters,
    buffers and state-dict keys; in eval mode and outside a process group it is BatchNorm2d."""

    def forward(self, input):
        if not self.training or world()[1] == 1 or not self.track_running_stats:
            return super().forward(input)
        self._check_input_dim(input)
        with torch.no_grad():
            self.num_batches_tracked.add_(1)
        momentum = (1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum)
        return synced_batch_norm(input, self.running_mean, self.running_var, self.weight, self.bias,
                                 momentum, self.eps)


def convert_to_synced_batch_norm(module: nn.Module) -> nn.Module:
    """Replace every ``nn.BatchNorm2d`` inside ``module`` by a :class:`SyncedBatchNorm2d` holding the
    same tensors (in place; returns ``module``)."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d) and not isinstance(child, SyncedBatchNorm2d):
            synced = SyncedBatchNorm2d(child.num_features, eps=child.eps, momentum=child.momentum,
                                       affine=child.affine, track_running_stats=child.track_running_stats)
            # the same tensors, not copies: references held elsewhere (an optimiser) stay valid
            synced._parameters, synced._buffers = child._parameters, child._buffers
            synced.train(child.training)
            setattr(module, name, synced)
        else:
            convert_to_synced_batch_norm(child)
    return module
