"""The network pruned at an exit, and compute counts, of a :class:`~turnpike.ResidualNetwork` (a mixin): the
runnable SubResNet-M whose output is exit M (Definition 1, Lemma 2 of the 2025 paper, skip-path exits) and the
multiply-adds of the network and of early exit.
"""
from __future__ import annotations

import copy
import math
from typing import Optional

import torch
from torch import nn

from .._checks import choice, fail, integer
from ._linear_skips import _CONVS
from ._residual_parts import EXIT_VARIANTS, _Mode, _out_of_place


class ResidualPruning:
    """SubResNet-M of a :class:`~turnpike.ResidualNetwork` and its multiply-add counts."""

    @torch.no_grad()
    def subresnet(self, depth: int, *, exits: Optional[str] = None) -> nn.Module:
        """The runnable network pruned at exit M = ``depth`` (Definition 1, Lemma 2): copies of the stem and of
        blocks 0..M-1, and as head the remaining skip paths P_M..P_{N-1} followed by the head, with exit M's
        statistics (and, for "full", exit M's own parameters). In eval mode its output equals
        ``exit_logits(...)[M]``; its own exits k < M are this network's (exactly for "ws"/"standard"; recalibrate
        them after pruning a "full" one). ``exits`` defaults to "standard" for a "standard" network, else "ws".
        Its plain form without the exits: ``subresnet(M).as_module()``.
        """
        depth = self._check_exit_index("depth", depth)
        exits = ("standard" if self.exits == "standard" else "ws") if exits is None else \
            choice("exits", exits, EXIT_VARIANTS)
        tail = []
        for j in range(depth, self.depth):
            block = self.blocks[j]
            if block.projection:
                tail.append(self._exit_copy(depth, j, copy.deepcopy(block.skip), f"blocks.{j}.skip"))
            if block.activation is not None:
                activation = _out_of_place(copy.deepcopy(block.activation))
                if not (type(activation) is nn.ReLU and tail and type(tail[-1]) is nn.ReLU):   # ReLU∘ReLU = ReLU
                    tail.append(activation)
        head = self._exit_copy(depth, self.depth, copy.deepcopy(self.head), "head")
        sub = type(self)(copy.deepcopy(self.stem), [copy.deepcopy(b) for b in self.blocks[:depth]],
                         nn.Sequential(*tail, head) if tail else head, num_classes=self.num_classes,
                         input_shape=self.input_shape, exits=exits, exit_momentum=self.exit_momentum,
                         architecture=self.architecture)
        mine = [op for position in sorted(self._paths) for op in self._paths[position] if op.stats is not None]
        theirs = [op for position in sorted(sub._paths) for op in sub._paths[position] if op.stats is not None]
        for op, their_op in zip(mine, theirs):   # the SubResNet's exits k < M keep this network's rows
            source, target = self.exit_statistics[op.stats], sub.exit_statistics[their_op.stats]
            rows = target.running_mean.shape[0]
            for name in ("running_mean", "running_var", "num_batches_tracked"):
                getattr(target, name).copy_(getattr(source, name)[:rows])
        return sub.train(self.training)

    def _exit_copy(self, k: int, position: int, module: nn.Module, prefix: str) -> nn.Module:
        """``module`` (a copy of the modules of path ``position``) given exit k's statistics and parameters."""
        for op in self._paths[position]:
            leaf = module if op.path == prefix else module.get_submodule(op.path[len(prefix) + 1:])
            if op.stats is not None:
                table = self.exit_statistics[op.stats]
                if k < table.running_mean.shape[0]:
                    for name in ("running_mean", "running_var", "num_batches_tracked"):
                        getattr(leaf, name).copy_(getattr(table, name)[k])
            for name, index in op.copies:
                if k < self.exit_copies[index].shape[0]:
                    getattr(leaf, name).copy_(self.exit_copies[index][k].view_as(getattr(leaf, name)))
        return module

    def as_module(self) -> nn.Sequential:
        """The plain network ``nn.Sequential(stem, *blocks, head)`` (the same modules, no exits), e.g. to save or
        export ``subresnet(M).as_module()``. Its blocks are :class:`ResidualBlock` modules, so a pickled copy needs
        turnpike to load; ``torch.export`` of it (``turnpike prune``) runs with torch alone."""
        return nn.Sequential(self.stem, *self.blocks, self.head)

    @torch.no_grad()
    def exit_costs(self, *spatial: int) -> dict:
        """Multiply-adds per input of spatial size ``spatial`` (e.g. height, width), convolutions and linear maps:
        ``{"network": the plain forward pass, "early_exit": (N+1,) list}``, early_exit[k] being the stem, blocks
        0..k-1 and the exit paths of exits 0..k (what early exit spends on an input that stops at exit k)."""
        sizes = iter(integer(f"spatial[{i}]", s, minimum=1) for i, s in enumerate(spatial))
        free = sum(s is None for s in self.input_shape)
        if len(spatial) != free:
            fail("spatial", f"{free} sizes (the input shape {self.input_shape} leaves {free} free)", spatial)
        shape = tuple(next(sizes) if s is None else s for s in self.input_shape)
        counts, hooks = {}, []
        for name, module in self.named_modules():
            if name.split(".")[0] in ("stem", "blocks") and type(module) in _CONVS + (nn.Linear,):
                def count(module, inputs, output, name=name):
                    per_output = (module.in_channels // module.groups * math.prod(module.kernel_size)
                                  if type(module) in _CONVS else module.in_features)
                    counts[name] = counts.get(name, 0) + output[0].numel() * per_output
                hooks.append(module.register_forward_hook(count))
        was_training = self.training
        reference = next(self.parameters())
        try:
            self.eval()
            states = self.states(torch.zeros(1, *shape, dtype=reference.dtype, device=reference.device))
            for hook in hooks:
                hook.remove()
            hooks = []
            heads = []
            for k in range(self.depth + 1):
                self._counter = [0]
                self._exit_path(k, states[k], _Mode(False, False), head=True)
                heads.append(self._counter[0])
        finally:
            self._counter = None
            for hook in hooks:
                hook.remove()
            self.train(was_training)
        stem = sum(v for name, v in counts.items() if name == "stem" or name.startswith("stem."))
        blocks = [sum(v for name, v in counts.items() if name.startswith(f"blocks.{k}.")) for k in range(self.depth)]
        early = [stem + sum(blocks[:k]) + sum(heads[:k + 1]) for k in range(self.depth + 1)]
        return {"network": stem + sum(blocks) + heads[-1], "early_exit": early}
