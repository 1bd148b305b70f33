"""SubResNets and compute counts of :class:`~turnpike.PreActResNet`: the runnable network pruned at exit M
(Definition 1, Lemma 2 of the 2025 paper) and the multiply-adds of the network and of early exit.
A mixin of :class:`~turnpike.PreActResNet`.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from .._checks import choice, fail, integer
from ._conv_blocks import EXIT_VARIANTS, _truncated_blocks_per_stage


class PruningAndCosts:
    """SubResNet-M of a :class:`~turnpike.PreActResNet` and its multiply-add counts."""

    def subresnet_architecture(self, depth: int, *, exits: Optional[str] = None,
                               zero_branches: bool = False) -> nn.Module:
        """A freshly initialised SubResNet-M (Definition 1): the first M blocks of this architecture plus
        the remaining stage transitions as trailing skips, e.g. (12, 0, 0) for M = 12 of ResNet-54.

        ``exits`` defaults to "standard" for a "standard" network and "ws" otherwise (no exit parameters),
        so that it is the network one trains from scratch to compare with the pruned ``subresnet(M)``.
        """
        depth = self._check_exit_index("depth", depth)
        exits = self._default_sub_exits(exits)
        return type(self)(blocks_per_stage=_truncated_blocks_per_stage(self.blocks_per_stage, depth),
                          widths=self.widths, in_channels=self.in_channels, num_classes=self.num_classes,
                          exits=exits, zero_branches=zero_branches, exit_momentum=self.exit_momentum)

    @torch.no_grad()
    def subresnet(self, depth: int, *, exits: Optional[str] = None) -> nn.Module:
        """The runnable SubResNet-M (Definition 1, Lemma 2), M = ``depth`` in 0..N.

        Its blocks are copies of blocks 0..M-1, its trailing skips are exit M's remaining skips and its
        head is exit M's head with exit M's running statistics (for "full": exit M's own parameters; the
        other exits' are dropped). In eval mode its ``forward`` equals ``exit_logits(...)[M]`` of this
        network. Its exit statistics rows 0..M are copied from this network's (exact for ws/standard;
        for full, recalibrate them before using its intermediate exits). ``exits`` as in
        ``subresnet_architecture``; a "full" SubResNet gets its exit copies from its own backbone.
        Same device, dtype and train/eval mode as this network.
        """
        sub = self.subresnet_architecture(depth, exits=exits)
        depth = sub.depth
        reference = self.head_linear.weight
        sub.to(device=reference.device, dtype=reference.dtype)
        sub.stem.load_state_dict(self.stem.state_dict())
        for mine, theirs in zip(sub.blocks, self.blocks):
            mine.load_state_dict(theirs.state_dict())
        remaining = self._remaining_transitions(depth)
        sub_tails = [t for t in sub._transitions if t.tail_index is not None]
        for t, sub_t in zip(remaining, sub_tails):
            if t.learned:
                sub.tail_skips[sub_t.tail_index].weight.copy_(self._skip_matrix(t, depth)[:, :, None, None])
        bn_weight, bn_bias, linear_weight, linear_bias = self._head_parameters(depth, depth + 1)
        sub.head_bn_weight.copy_(bn_weight[0])
        sub.head_bn_bias.copy_(bn_bias[0])
        sub.head_linear.weight.copy_(linear_weight.reshape(sub.head_linear.weight.shape))
        sub.head_linear.bias.copy_(linear_bias.reshape(sub.head_linear.bias.shape))
        for name in ("exit_running_mean", "exit_running_var", "exit_num_batches_tracked"):
            getattr(sub, name).copy_(getattr(self, name)[:depth + 1])
        sub.copy_backbone_to_exits()
        return sub.train(self.training)

    def _default_sub_exits(self, exits: Optional[str]) -> str:
        if exits is None:
            return "standard" if self.exits == "standard" else "ws"
        return choice("exits", exits, EXIT_VARIANTS)

    @torch.no_grad()
    def exit_costs(self, *spatial: int) -> dict:
        """Multiply-adds per image of size ``spatial`` = (height, width) (convolutions and linear maps):

        ``{"network": the plain forward pass, "early_exit": (N+1,) list}`` where early_exit[k] is
        what early exit spends on an image that stops at exit k: the stem, blocks 0..k-1 and the
        heads of exits 0..k (each head's skips S_j..S_{N-1}, T as strided 1×1 convolutions, and
        its linear map). Counted from one forward pass of a blank image, so every shape is the one
        the network computes.
        """
        if len(spatial) != 2:
            fail("spatial", "2 sizes (height, width) of the images", spatial)
        height, width = (integer(name, size, minimum=1) for name, size in zip(("height", "width"), spatial))
        counts, hooks = {}, []
        for name, module in self.named_modules():
            if isinstance(module, nn.Conv2d):
                def count(module, inputs, output, name=name):
                    per_output = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
                    counts[name] = output[0].numel() * per_output
                hooks.append(module.register_forward_hook(count))
        was_training = self.training
        try:
            self.eval()
            parameter = next(self.parameters())
            states = self.states(torch.zeros(1, self.in_channels, height, width, dtype=parameter.dtype,
                                             device=parameter.device))
        finally:
            self.train(was_training)
            for hook in hooks:
                hook.remove()
        stem = sum(v for name, v in counts.items() if name.startswith("stem."))
        blocks = [sum(v for name, v in counts.items() if name.startswith(f"blocks.{k}.")) for k in range(self.depth)]
        heads = [self._head_cost(k, states[k]) for k in range(self.depth + 1)]
        early = [stem + sum(blocks[:k]) + sum(heads[:k + 1]) for k in range(self.depth + 1)]
        return {"network": stem + sum(blocks) + heads[-1], "early_exit": early}

    def _head_cost(self, k: int, x_k: Tensor) -> int:
        """Multiply-adds of exit k's head on one state x_k (1, C, H, W): its learned skips and linear map."""
        cost, (height, width) = 0, x_k.shape[2:]
        for t in self._remaining_transitions(k):
            height, width = -(-height // 2), -(-width // 2)
            if t.learned:
                cost += t.in_channels * t.out_channels * height * width
        return cost + self.num_classes * self.widths[-1]
