r"""Skip-path exits of a :class:`~turnpike.ResidualNetwork`: the operations on the exit paths, applied to a
stack of exits with per-exit statistics and (exits "full") per-exit parameters.

Block k computes x_{k+1} = a_k(s_k(x_k) + F_k(x_k)) (a_k: the post-addition activation, or none). Its *skip path*
is what it computes when F_k = 0, P_k = a_k ∘ s_k, and exit k is E_k(x_k) = H(P_{N-1}(⋯ P_k(x_k))) (see
``theory/skip-path-exits.md``). An exit path is a list of operations (:class:`_Op`): the leaves of every
non-identity skip s_q (an ``nn.Sequential`` is opened, nested ones too), each followed by the block's own
activation a_q (shared by every exit, called out of place), and the leaves of the head H. Every operation acts
on a *stack* (B, E, ...) holding E consecutive exits first..first+E-1:

- ``"trailing"`` (an elementwise activation or :class:`GlobalAveragePool`): one call on the stack as it is;
- ``"module"`` (anything but the four others, e.g. pooling, flatten, activations): one call on the (B·E, ...)
  view, so it must act on every sample separately; an in-place activation is called out of place;
- ``"norm"`` (a BatchNorm): one ``batch_norm`` on the (B, E·C, ...) view, each exit's channels with their own
  statistics: rows of an :class:`_ExitStatistics` table, and the module's own buffers for the exit that is the
  backbone's (exit N in the head; in "ws", exit q at the skip of block q, whose skip output is the block's own);
- ``"conv"`` / ``"linear"``: shared weights as a module call on the (B·E, ...) view; per-exit copies ("full") as
  one grouped convolution on the (B, E·C, ...) view or one batched product.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from ._layers import GlobalAveragePool
from ._linear_skips import _CONVS, composed_exit_features, pixel_linear_stride, pointwise_stride, subsample
from ._residual_parts import _ExitStatistics, _leaves, _Mode, _Op, _out_of_place

# modules that act on the trailing axes of any tensor: applied to a stack of exits as it is, without regrouping
_TRAILING = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Mish, nn.Sigmoid, nn.Tanh, nn.Hardswish,
             nn.Hardsigmoid, nn.Softplus, nn.Identity, GlobalAveragePool)
_CONV_FUNCTIONS = {nn.Conv1d: F.conv1d, nn.Conv2d: F.conv2d, nn.Conv3d: F.conv3d}


class ExitPaths:
    """The operations on the exit paths of a :class:`~turnpike.ResidualNetwork` and their batched application
    (a mixin: it reads the network's blocks, head, ``exits``, ``exit_statistics`` and ``exit_copies``)."""

    # ------------------------------------------------------------------------------ building the paths
    def _build_exit_paths(self) -> None:
        full = self.exits == "full"
        self.exit_statistics = nn.ModuleList()
        self.exit_copies = nn.ParameterList()
        self._plain_modules = {}
        paths = {}
        for q, block in enumerate(self.blocks):
            if block.projection:
                paths[q] = tuple(self._ops_of(block.skip, f"blocks.{q}.skip", q, full))
        paths[self.depth] = tuple(self._ops_of(self.head, "head", self.depth, full))
        self._paths = paths
        self._chains, self._head_lead = self._describe_linear_chains()

    def _describe_linear_chains(self) -> tuple:
        """(chains, lead): when every skip is linear per pixel and no block has an activation, chains[g] lists the
        (op, stride) of every skip the exits of group g pass, then of the head's first ``lead`` operations (those
        linear per pixel); else (None, 0). See ``_linear_skips``."""
        if any(block.activation is not None for block in self.blocks):
            return None, 0
        strides = {}
        for position, ops in self._paths.items():
            for op in ops:
                strides[op.path] = pixel_linear_stride(self.get_submodule(op.path))
        head = self._paths[self.depth]
        lead = next((i for i, op in enumerate(head) if strides[op.path] is None), len(head))
        skips = [op for position in sorted(self._paths) if position < self.depth for op in self._paths[position]]
        if any(strides[op.path] is None for op in skips):
            return None, 0
        chains = []
        for start, stop, q in self._groups:
            ops = [op for op in skips if q is not None and op.position >= q] + list(head[:lead])
            chains.append(tuple((op, strides[op.path]) for op in ops))
        return tuple(chains), lead

    def _ops_of(self, module: nn.Module, prefix: str, position: int, full: bool) -> list:
        return [self._op_of(leaf, path, position, full) for path, leaf in _leaves(module, prefix)]

    def _op_of(self, module: nn.Module, path: str, position: int, full: bool) -> _Op:
        if isinstance(module, _BatchNorm):
            kind = "norm"
        elif any(isinstance(m, _BatchNorm) for m in module.modules()):
            raise ValueError(f"{path}: a {type(module).__name__} holding a BatchNorm on an exit path; every "
                             f"BatchNorm there gets per-exit statistics, so it must be an entry of an nn.Sequential "
                             f"(nested ones are opened), e.g. skip=nn.Sequential(conv, nn.BatchNorm2d(c))")
        elif type(module) in _CONVS:
            kind = "conv"
        elif type(module) is nn.Linear:
            kind = "linear"
        elif type(module) in _TRAILING:
            kind = "trailing"
        else:
            kind = "module"
        own = dict(module.named_parameters(recurse=False)) if full and kind in ("norm", "conv", "linear") else {}
        if full and kind == "module" and any(True for _ in module.parameters()):
            raise ValueError(f"{path}: exits='full' gives every exit its own copy of the Conv, Linear and BatchNorm "
                             f"layers on its path, and {type(module).__name__} has parameters; use exits='ws'")
        if full and kind == "conv" and module.padding_mode != "zeros":
            raise ValueError(f"{path}: exits='full' copies convolutions with padding_mode='zeros' only, "
                             f"got {module.padding_mode!r}; use exits='ws'")
        stats = None
        if kind == "norm" and module.track_running_stats:
            self.exit_statistics.append(_ExitStatistics(module, self._statistics_rows(position)))
            stats = len(self.exit_statistics) - 1
        copies = []
        for name, parameter in own.items():
            rows = self._copy_rows(position)
            # flat rows (rows, numel): a (rows, C_out, C_in, k, k) copy would be refused by .to(channels_last)
            self.exit_copies.append(nn.Parameter(parameter.detach().reshape(-1).expand(rows, -1).clone()))
            copies.append((name, len(self.exit_copies) - 1))
        return _Op(kind, path, position, stats, tuple(copies))

    def _statistics_rows(self, position: int) -> int:
        """Exits 0..rows-1 have their own statistics on path ``position``; the others use the module's own
        (exit N in the head; in "ws", exit q at the skip of block q, the block's own skip output)."""
        return min(position + 1, self.depth) if self.exits == "full" else position

    def _copy_rows(self, position: int) -> int:
        """Exits 0..rows-1 have their own parameters on path ``position`` (full only)."""
        return min(position + 1, self.depth) if self.exits == "full" else 0

    def _plain(self, op: _Op) -> nn.Module:
        module = self.get_submodule(op.path)
        cached = self._plain_modules.get(op.path)
        if cached is None or cached[0] is not module:
            cached = self._plain_modules[op.path] = (module, _out_of_place(module))
        return cached[1]

    def _activation(self, k: int) -> Optional[nn.Module]:
        activation = self.blocks[k].activation
        return None if activation is None else self._plain(_Op("module", f"blocks.{k}.activation", k))

    # ------------------------------------------------------------------------------ one operation on a stack
    def _run(self, ops, stack: Tensor, first: int, mode: _Mode, subsampled: bool = False) -> Tensor:
        """The operations ``ops`` on a stack; ``subsampled``: the stack is subsampled for the first one already."""
        for i, op in enumerate(ops):
            stack = self._apply_op(op, stack, first, mode, subsampled and i == 0)
        return stack

    def _apply_op(self, op: _Op, stack: Tensor, first: int, mode: _Mode, subsampled: bool = False) -> Tensor:
        batch, exits = stack.shape[:2]
        if op.kind == "norm":
            return self._exit_norm(op, stack, first, mode)
        if op.kind == "trailing":
            return self._plain(op)(stack)
        own = 0 if op.kind == "module" else self._own(self._copy_rows(op.position), first, exits)
        module = self._plain(op) if own == 0 else self.get_submodule(op.path)
        # a strided 1×1 convolution reads every s-th pixel: subsampled first, its backward pass writes no
        # gradient for the pixels it skips (a projection skip's cost on the exits of a high-resolution stage)
        stride = (pointwise_stride(module) or 1) if op.kind == "conv" else 1
        if stride > 1 and not subsampled:
            stack = _subsampled(stack, stride)
        if own == 0:      # shared weights (or none): one call on all B·E samples
            flat = stack.reshape(batch * exits, *stack.shape[2:])
            out = module(flat) if stride == 1 else _CONV_FUNCTIONS[type(module)](
                flat, module.weight, module.bias, 1, 0, module.dilation, module.groups)
            self._count(op, module, stack, out)
            return out.reshape(batch, exits, *out.shape[1:])
        weight = self._per_exit(op, module, "weight", first, exits)
        bias = self._per_exit(op, module, "bias", first, exits)
        if op.kind == "conv":      # one grouped convolution: exit e's channels are group e
            flat = stack.reshape(batch, exits * stack.shape[2], *stack.shape[3:])
            out = _CONV_FUNCTIONS[type(module)](flat, weight.reshape(-1, *weight.shape[2:]),
                                                None if bias is None else bias.reshape(-1),
                                                1 if stride > 1 else module.stride, 0 if stride > 1 else module.padding,
                                                module.dilation, module.groups * exits)
            out = out.reshape(batch, exits, -1, *out.shape[2:])
        else:                      # linear: one batched product
            middle = stack.reshape(batch, exits, -1, stack.shape[-1])
            out = torch.einsum("bemi,eoi->bemo", middle, weight)
            if bias is not None:
                out = out + bias[None, :, None]
            out = out.reshape(*stack.shape[:-1], weight.shape[1])
        self._count(op, module, stack, out)
        return out

    @staticmethod
    def _own(rows: int, first: int, exits: int) -> int:
        """How many of exits first..first+exits-1 (a prefix of them) have their own row."""
        return max(0, min(rows - first, exits))

    def _per_exit(self, op: _Op, module: nn.Module, name: str, first: int, exits: int) -> Optional[Tensor]:
        """Parameter ``name`` of exits first..first+exits-1: (exits, *shape), own copies first."""
        base = getattr(module, name, None)
        if base is None:
            return None
        own = self._own(self._copy_rows(op.position), first, exits)
        shared = base.expand(exits - own, *base.shape)
        if own == 0:
            return shared
        mine = self.exit_copies[dict(op.copies)[name]][first:first + own].view(own, *base.shape)
        return mine if own == exits else torch.cat([mine, shared])

    def _exit_norm(self, op: _Op, stack: Tensor, first: int, mode: _Mode) -> Tensor:
        """One batch norm over the (B, E·C, ...) view: every exit's channels with that exit's statistics."""
        norm = self.get_submodule(op.path)
        batch, exits, channels = stack.shape[:3]
        flat = stack.reshape(batch, exits * channels, *stack.shape[3:])
        weight = self._per_exit(op, norm, "weight", first, exits)
        bias = self._per_exit(op, norm, "bias", first, exits)
        weight = None if weight is None else weight.reshape(-1)
        bias = None if bias is None else bias.reshape(-1)
        if op.stats is None:       # track_running_stats=False: always the batch's statistics
            out = F.batch_norm(flat, None, None, weight, bias, True, 0.0, norm.eps)
            return out.reshape(stack.shape)
        table = self.exit_statistics[op.stats]
        own = self._own(table.running_mean.shape[0], first, exits)
        rest = exits - own
        if not mode.batch_statistics:
            mean = torch.cat([table.running_mean[first:first + own].reshape(-1), norm.running_mean.repeat(rest)])
            var = torch.cat([table.running_var[first:first + own].reshape(-1), norm.running_var.repeat(rest)])
            return F.batch_norm(flat, mean, var, weight, bias, False, 0.0, norm.eps).reshape(stack.shape)
        # momentum 1 writes this batch's mean and unbiased variance into the scratch tensors
        batch_mean = torch.zeros(exits * channels, dtype=table.running_mean.dtype, device=flat.device)
        batch_var = torch.ones_like(batch_mean)
        out = self._training_batch_norm(flat, batch_mean, batch_var, weight, bias, norm.eps)
        with torch.no_grad():
            if own:
                counts = table.num_batches_tracked[first:first + own]
                counts += 1
                if mode.cumulative or self.exit_momentum is None:
                    factor = (1.0 / counts.to(batch_mean.dtype)).repeat_interleave(channels).view(own, channels)
                else:
                    factor = self.exit_momentum
                table.running_mean[first:first + own].lerp_(batch_mean[:own * channels].view(own, channels), factor)
                table.running_var[first:first + own].lerp_(batch_var[:own * channels].view(own, channels), factor)
            if rest and op.position == self.depth:    # exit N: the head's own statistics, as the module updates them
                norm.num_batches_tracked += 1
                cumulative = mode.cumulative or norm.momentum is None
                factor = 1.0 / float(norm.num_batches_tracked) if cumulative else norm.momentum
                norm.running_mean.lerp_(batch_mean[own * channels:], factor)
                norm.running_var.lerp_(batch_var[own * channels:], factor)
        return out.reshape(stack.shape)

    def _training_batch_norm(self, flat, mean, var, weight, bias, eps: float) -> Tensor:
        # synced in training only: recalibration (eval mode) runs the same whole batches on every rank
        if self._synced_exit_statistics and self.training:
            from .._distributed import synced_batch_norm
            return synced_batch_norm(flat, mean, var, weight, bias, 1.0, eps)
        return F.batch_norm(flat, mean, var, weight, bias, True, 1.0, eps)

    def _count(self, op: _Op, module: nn.Module, stack: Tensor, out: Tensor) -> None:
        """Multiply-adds per exit sample of a convolution or linear map (while ``exit_costs`` counts)."""
        if self._counter is None or op.kind not in ("conv", "linear"):
            return
        samples = stack.shape[0] * stack.shape[1]
        per_output = (module.in_channels // module.groups * math.prod(module.kernel_size)
                      if op.kind == "conv" else module.in_features)
        self._counter[0] += out.numel() // samples * per_output

    # ------------------------------------------------------------------------------ all exits, batched
    def _exit_logits_from(self, states: list, skips: dict, mode: _Mode) -> Tensor:
        """Logits of exits 0..N, (N+1, B, C): the exits of a stage are stacked, every remaining skip path runs
        once on the stack of all exits that pass it, and one head call serves every exit."""
        if self._chains is not None:
            return self._composed_exit_logits(states, mode)
        stack = None
        for start, stop, q in self._groups:
            if q is None:
                stack = self._enter(stack, states, start, stop, stop, 1)
                break
            stride = self._entry_stride(start, q)
            # "ws"/"standard": exit q takes block q's own skip output, so x_q is not stacked
            stack = self._enter(stack, states, start, stop if self.exits == "full" else q, stop, stride)
            stack = self._project(stack, q, skips, mode, subsampled=stride > 1)
        return self._run(self._paths[self.depth], stack, 0, mode).transpose(0, 1)

    def _entry_stride(self, start: int, q: int) -> int:
        """s > 1 when the skip path P_q starts with a strided 1×1 convolution and the exits reach it through ReLUs
        alone: they are subsampled before they are stacked (ReLU commutes with subsampling), so the stack, the
        ReLUs and their gradients hold a 1/s^d of the pixels."""
        ops = self._paths[q]
        if not ops or ops[0].kind != "conv":
            return 1
        if any(self.blocks[j].activation is not None and type(self.blocks[j].activation) is not nn.ReLU
               for j in range(start, q)):
            return 1
        return pointwise_stride(self.get_submodule(ops[0].path)) or 1

    def _composed_exit_logits(self, states: list, mode: _Mode) -> Tensor:
        """Logits of exits 0..N, (N+1, B, C), every group's chain of per-pixel-linear skips composed into one
        subsampling and one matrix (``_linear_skips``), then one call of the rest of the head for all exits."""
        groups = []
        for (start, stop, _), chain in zip(self._groups, self._chains):
            stride = math.prod(s for _, s in chain)
            groups.append((states[start:stop], stride, self._chain_matrix(chain, start, stop - start)))
        features = composed_exit_features(groups)
        return self._run(self._paths[self.depth][self._head_lead:], features, 0, mode).transpose(0, 1)

    def _chain_matrix(self, chain: tuple, first: int, exits: int) -> Optional[Tensor]:
        """The product of the chain's 1×1 weights for exits first..first+exits-1: None (no convolution), (C_out, C_in)
        shared, or (exits, C_out, C_in) when some of them have their own copies ("full")."""
        matrix = None
        for op, _ in chain:
            if op.kind != "conv":
                continue
            module = self.get_submodule(op.path)
            if self._own(self._copy_rows(op.position), first, exits) == 0:
                weight = module.weight.flatten(1)
            else:
                weight = self._per_exit(op, module, "weight", first, exits).flatten(2)
            matrix = weight if matrix is None else torch.matmul(weight, matrix)
        return matrix

    def _enter(self, stack: Optional[Tensor], states: list, start: int, stop: int, end: int,
               stride: int) -> Optional[Tensor]:
        """The carried exits and x_start..x_{stop-1} in one stack (None if there are none), exit k having passed
        the activations of the identity blocks j = k..end-2 (those before the group's projection or the head), each
        state subsampled by ``stride``."""
        activations = {j: self._activation(j) for j in range(start, end - 1) if self.blocks[j].activation is not None}
        if activations and not all(type(a) is nn.ReLU for a in activations.values()):
            for j in range(start, end - 1):   # any other activations: each applied to the exits that pass it
                if j < stop:
                    stack = states[j][:, None] if stack is None else torch.cat([stack, states[j][:, None]], dim=1)
                if j in activations and stack is not None:
                    stack = self._stacked(activations[j], stack)
            if stop < end:
                return stack
            return states[stop - 1][:, None] if stack is None else torch.cat([stack, states[stop - 1][:, None]], dim=1)
        # ReLUs only: ReLU∘ReLU = ReLU, so exit k takes one ReLU iff an activated identity block j >= k remains and
        # its state is not the output of a ReLU already (the carried exits' last operation is block q's activation)
        last = max(activations, default=-1)
        pieces = []
        if stack is not None:
            carried_rectified = type(self.blocks[start - 1].activation) is nn.ReLU
            stack = _subsampled(stack, stride)
            pieces.append(F.relu(stack) if last >= 0 and not carried_rectified else stack)
        for k in range(start, stop):
            x = subsample(states[k], stride)
            rectified = k > 0 and type(self.blocks[k - 1].activation) is nn.ReLU
            pieces.append((F.relu(x) if k <= last and not rectified else x)[:, None])
        return torch.cat(pieces, dim=1) if pieces else None

    def _project(self, stack: Optional[Tensor], q: int, skips: dict, mode: _Mode, *, subsampled: bool) -> Tensor:
        """The skip path P_q = a_q ∘ s_q of exits 0..q (``stack``); in "ws"/"standard" the stack holds exits 0..q-1
        and exit q takes the block's own s_q(x_q)."""
        if self.exits == "full":
            out = self._run(self._paths[q], stack, 0, mode, subsampled)
        else:
            own = skips[q][:, None]
            out = own if stack is None else torch.cat([self._run(self._paths[q], stack, 0, mode, subsampled), own],
                                                      dim=1)
        activation = self._activation(q)
        return out if activation is None else self._stacked(activation, out)

    @staticmethod
    def _stacked(module: nn.Module, stack: Tensor) -> Tensor:
        out = module(stack.reshape(-1, *stack.shape[2:]))
        return out.reshape(*stack.shape[:2], *out.shape[1:])

    # ------------------------------------------------------------------------------ one exit (reference)
    def _exit_path(self, k: int, x_k: Tensor, mode: _Mode, *, head: bool) -> Tensor:
        """P_{N-1}(⋯ P_k(x_k)) skip path by skip path, then the head if ``head``: (B, ...) for exit k alone."""
        x = x_k[:, None]
        # x_k (k > 0) is the output of block k-1's activation: a ReLU there makes the next identity blocks' ReLUs
        # the identity (ReLU∘ReLU = ReLU), skipped; the parameters' gradients are the same, the upstream ReLU
        # zeroing what the skipped one would have
        rectified = k > 0 and type(self.blocks[k - 1].activation) is nn.ReLU
        for j in range(k, self.depth):
            block = self.blocks[j]
            if block.projection:
                x = self._run(self._paths[j], x, k, mode)
                rectified = False
            activation = self._activation(j)
            if activation is not None and not (rectified and type(activation) is nn.ReLU):
                x = self._stacked(activation, x)
                rectified = type(activation) is nn.ReLU
        if head:
            x = self._run(self._paths[self.depth], x, k, mode)
        return x[:, 0]


def _subsampled(stack: Tensor, stride: int) -> Tensor:
    """A stack of exits (B, E, C, *spatial) subsampled by ``stride`` on the spatial axes."""
    if stride == 1:
        return stack
    out = subsample(stack.reshape(-1, *stack.shape[2:]), stride)
    return out.reshape(*stack.shape[:2], *out.shape[1:])
