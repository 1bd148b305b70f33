"""The intermediate outputs of :class:`~turnpike.PreActResNet`, batched per stage, and their statistics.

ŷ_k = E_k(x_k) = H(T(S_{N-1}(... S_k(x_k) ...))) for k = 0..N (eq. 2 of the 2025 paper). For the states
of one stage the remaining skips collapse to one subsampling by 2^m and one composed matrix, so all
N+1 exits cost one stack, one product, one batch norm (each exit's channels with their own running
statistics) and one head product; ``exit_logit`` is the one-exit reference they are tested against.
A mixin of :class:`~turnpike.PreActResNet`: it reads the network's blocks, transitions, groups and
head parameters.
"""
from __future__ import annotations

from typing import Iterable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .._checks import fail
from ._conv_blocks import BN_EPS, _ExitGroup, _is_channels_last, _Transition


class BatchedExits:
    """Exits 0..N of a :class:`~turnpike.PreActResNet` (see the module docstring)."""

    def exit_logits(self, images: Tensor) -> Tensor:
        """All exits ŷ_0..ŷ_N, batched per stage: (N+1, B, num_classes); row N equals ``forward``."""
        return self.forward_all(images)[0]

    def forward_all(self, images: Tensor, *, return_states: bool = False) -> tuple:
        """(exit logits (N+1, B, num_classes), [x_0..x_N] if ``return_states`` else None).

        In training mode each exit's head BN uses that exit's batch statistics and updates its running
        statistics (momentum ``exit_momentum``); in eval mode it uses them.
        """
        states = self.states(images)
        logits = self._exit_logits_from_states(states, batch_statistics=self.training,
                                               cumulative=self.exit_momentum is None)
        return logits, (states if return_states else None)

    def exit_logit(self, k: int, x_k: Tensor) -> Tensor:
        """Reference ŷ_k = E_k(x_k) for one exit, (B, num_classes): the skips S_k..S_{N-1} and T one after
        the other (not composed), then the head with exit k's parameters and BN statistics."""
        k = self._check_exit_index("k", k)
        features = self.exit_features(k, x_k)[:, None]   # (B, 1, C_f, H_f, W_f)
        return self._head(features, k, batch_statistics=self.training, cumulative=self.exit_momentum is None)[0]

    def exit_features(self, k: int, x_k: Tensor) -> Tensor:
        """T(S_{N-1}(...S_k(x_k))) with exit k's skip weights, skip by skip: (B, widths[-1], H_f, W_f)."""
        k = self._check_exit_index("k", k)
        self._check_state(k, x_k)
        x = x_k
        for t in self._remaining_transitions(k):
            if t.learned:
                x = F.conv2d(x, self._skip_matrix(t, k)[:, :, None, None], stride=2)
            else:
                x = x[:, :, ::2, ::2]
        return x

    def composed_skip(self, k: int) -> tuple:
        """(stride, matrix) with T∘S_{N-1}∘...∘S_k (x) = matrix · x[:, :, ::stride, ::stride] per pixel.

        ``matrix`` is (widths[-1], widths[stage_of(k)]), the product of exit k's remaining learned 1x1
        weights, or None when no learned skip remains (the map is the subsampling alone).
        """
        k = self._check_exit_index("k", k)
        transitions = self._remaining_transitions(k)
        matrix = None
        for t in transitions:
            if t.learned:
                weight = self._skip_matrix(t, k)   # (C_out, C_in)
                matrix = weight if matrix is None else weight @ matrix
        return 2 ** len(transitions), matrix

    def _exit_logits_from_states(self, states: list, *, batch_statistics: bool, cumulative: bool) -> Tensor:
        if _is_channels_last(states[0]):
            features = self._exit_features_channels_last(states)
        else:
            features = self._exit_features(states)
        return self._head(features, 0, batch_statistics=batch_statistics, cumulative=cumulative)

    def _exit_features(self, states: list) -> Tensor:
        """Every exit's head input T(S_{N-1}(...S_k(x_k))), batched per stage: (B, N+1, C_f, H_f, W_f)."""
        pieces = []   # each (B, E_piece, C_f, H_f, W_f), exits in order 0..N
        for group in self._groups:
            stride = 2 ** len(group.transitions)
            picked = states[group.start:group.stop]
            if stride > 1:   # one subsampling by 2^m for all remaining stride-2 skips
                picked = [x[:, :, ::stride, ::stride] for x in picked]
            matrix = self._group_skip_matrix(group)
            if matrix is None:
                pieces.extend(x[:, None] for x in picked)   # no copy until the final cat
                continue
            stacked = torch.stack(picked, dim=1)   # (B, E, C_s, H_f, W_f)
            if matrix.dim() == 2:   # shared skips: (C_f, C_s)
                pieces.append(torch.einsum("oc,bechw->beohw", matrix, stacked))
            else:                   # per-exit skips: (E, C_f, C_s)
                pieces.append(torch.einsum("eoc,bechw->beohw", matrix, stacked))
        return torch.cat(pieces, dim=1) if len(pieces) > 1 else pieces[0]

    def _exit_features_channels_last(self, states: list) -> Tensor:
        """:meth:`_exit_features` for channels-last states, built in (B, H_f, W_f, N+1, C_f) memory and
        returned as the (B, N+1, C_f, H_f, W_f) view: the head's batch norm then runs on a
        channels-last tensor, and the gradients reach the states channels-last too (mixing formats
        in the backward pass cost a third of the step)."""
        pieces = []   # each (B, H_f, W_f, E_piece, C_f)
        for group in self._groups:
            stride = 2 ** len(group.transitions)
            picked = states[group.start:group.stop]
            if stride > 1:   # pooling over one pixel = subsampling, with a channels-last gradient
                picked = [F.avg_pool2d(x, kernel_size=1, stride=stride) for x in picked]
            stacked = torch.stack([x.permute(0, 2, 3, 1) for x in picked], dim=3)   # (B, H_f, W_f, E, C_s)
            matrix = self._group_skip_matrix(group)
            if matrix is not None:
                equation = "oc,bhwec->bhweo" if matrix.dim() == 2 else "eoc,bhwec->bhweo"
                stacked = torch.einsum(equation, matrix, stacked)
            pieces.append(stacked)
        stored = torch.cat(pieces, dim=3) if len(pieces) > 1 else pieces[0]
        return stored.permute(0, 3, 4, 1, 2)

    def _group_skip_matrix(self, group: _ExitGroup) -> Optional[Tensor]:
        """Composed learned skips of a group: None, (C_f, C_s) shared, or (E, C_f, C_s) per exit (full)."""
        learned = [self._transitions[i] for i in group.transitions if self._transitions[i].learned]
        if not learned:
            return None
        per_exit = self.exit_bn_weight is not None and group.start < self.depth
        matrix = None
        for t in learned:
            if per_exit:
                weight = self.exit_skip_weights[t.exit_slot][group.start:min(group.stop, self.depth)]
                if group.stop > self.depth:   # exit N uses the backbone skip
                    weight = torch.cat([weight, self._backbone_skip_matrix(t)[None]])
            else:
                weight = self._backbone_skip_matrix(t)
            matrix = weight if matrix is None else torch.matmul(weight, matrix)
        return matrix

    def _head(self, features: Tensor, start: int, *, batch_statistics: bool, cumulative: bool) -> Tensor:
        """Head of exits start..start+E-1 on features (B, E, C_f, H, W) -> logits (E, B, num_classes).

        The E exits are one batch norm over E*C_f channels, so every exit is normalised by its own
        (batch or running) statistics; then ReLU, global average pooling, and one (batched) linear map.
        """
        batch, exits, channels, height, width = features.shape
        bn_weight, bn_bias, linear_weight, linear_bias = self._head_parameters(start, start + exits)
        flat = features.reshape(batch, exits * channels, height, width)
        normalised = self._exit_batch_norm(flat, start, start + exits, bn_weight.reshape(-1), bn_bias.reshape(-1),
                                           batch_statistics=batch_statistics, cumulative=cumulative)
        pooled = F.relu(normalised).mean(dim=(2, 3)).view(batch, exits, channels)   # (B, E, C_f)
        if linear_weight.dim() == 2:
            logits = F.linear(pooled, linear_weight, linear_bias)   # (B, E, K)
        else:
            logits = torch.einsum("bec,ekc->bek", pooled, linear_weight) + linear_bias
        return logits.transpose(0, 1)

    def _head_parameters(self, start: int, stop: int) -> tuple:
        """BN weight/bias (E, C_f) and linear weight, bias of exits start..stop-1: shared (K, C_f), (K,)
        or per exit (E, K, C_f), (E, K)."""
        exits = stop - start
        shared = (self.head_bn_weight.expand(exits, -1), self.head_bn_bias.expand(exits, -1),
                  self.head_linear.weight, self.head_linear.bias)
        if self.exit_bn_weight is None or start >= self.depth:
            return shared
        own = slice(start, min(stop, self.depth))
        tensors = [self.exit_bn_weight[own], self.exit_bn_bias[own], self.exit_linear_weight[own],
                   self.exit_linear_bias[own]]
        if stop > self.depth:   # exit N is the backbone head
            backbone = (self.head_bn_weight, self.head_bn_bias, self.head_linear.weight, self.head_linear.bias)
            tensors = [torch.cat([mine, theirs[None]]) for mine, theirs in zip(tensors, backbone)]
        return tuple(tensors)

    def _exit_batch_norm(self, flat: Tensor, start: int, stop: int, weight: Tensor, bias: Tensor, *,
                         batch_statistics: bool, cumulative: bool) -> Tensor:
        # rows start..stop-1 of the statistics, flattened to (E*C_f,): views, so updates land in the buffers
        running_mean = self.exit_running_mean[start:stop].view(-1)
        running_var = self.exit_running_var[start:stop].view(-1)
        if not batch_statistics:
            return F.batch_norm(flat, running_mean, running_var, weight, bias, False, 0.0, BN_EPS)
        with torch.no_grad():
            self.exit_num_batches_tracked[start:stop] += 1
        if not cumulative:
            return self._training_batch_norm(flat, running_mean, running_var, weight, bias, self.exit_momentum)
        # cumulative average: exits may have seen different numbers of batches, so the factor 1/n is per exit;
        # momentum 1 makes batch_norm write this batch's mean and unbiased variance into scratch tensors
        batch_mean, batch_var = torch.zeros_like(running_mean), torch.ones_like(running_var)
        normalised = self._training_batch_norm(flat, batch_mean, batch_var, weight, bias, 1.0)
        with torch.no_grad():
            counts = self.exit_num_batches_tracked[start:stop].to(running_mean.dtype)
            factor = (1.0 / counts).repeat_interleave(flat.shape[1] // (stop - start))
            running_mean.lerp_(batch_mean, factor)
            running_var.lerp_(batch_var, factor)
        return normalised

    def _training_batch_norm(self, flat, running_mean, running_var, weight, bias, momentum: float) -> Tensor:
        # synced in training only: recalibration (eval mode) runs the same whole batches on every rank
        if self._synced_exit_statistics and self.training:
            from .._distributed import synced_batch_norm
            return synced_batch_norm(flat, running_mean, running_var, weight, bias, momentum, BN_EPS)
        return F.batch_norm(flat, running_mean, running_var, weight, bias, True, momentum, BN_EPS)

    def synchronise_batch_norm(self) -> None:
        super().synchronise_batch_norm()
        self._synced_exit_statistics = True

    def recalibrate_exit_statistics(self, batches: Iterable) -> int:
        """Reset every exit's running statistics (rows 0..N) and recompute them over ``batches``.

        ``batches`` yields image tensors or (images, ...) tuples. The backbone runs in eval mode (its own
        BN running statistics, untouched); each exit's head BN takes its batch statistics and the rows
        become their exact average over the batches (mean of batch means, mean of unbiased batch
        variances, as torch BN with momentum=None). No gradient; parameters and the train/eval flag are
        unchanged afterwards. Returns the number of batches used; an empty iterable raises ValueError and
        leaves the statistics as they were.
        """
        saved = [b.clone() for b in (self.exit_running_mean, self.exit_running_var, self.exit_num_batches_tracked)]
        was_training = self.training
        device = self.exit_running_mean.device
        self.exit_running_mean.zero_()
        self.exit_running_var.fill_(1.0)
        self.exit_num_batches_tracked.zero_()
        used = 0
        try:
            self.eval()
            with torch.no_grad():
                for batch in batches:
                    images = self.check_inputs(batch[0] if isinstance(batch, (tuple, list)) else batch, "batches")
                    self._exit_logits_from_states(self.states(images.to(device)), batch_statistics=True,
                                                  cumulative=True)
                    used += 1
            if used == 0:
                fail("batches", "at least one batch of images", "an empty iterable")
        except BaseException:
            with torch.no_grad():
                for buffer, old in zip((self.exit_running_mean, self.exit_running_var,
                                        self.exit_num_batches_tracked), saved):
                    buffer.copy_(old)
            raise
        finally:
            self.train(was_training)
        return used

    def _remaining_transitions(self, k: int) -> list:
        """Non-identity skips exit k passes through, in order (S_k..S_{N-1}, then T)."""
        return [t for t in self._transitions if t.position >= k]

    def _backbone_skip_matrix(self, t: _Transition) -> Tensor:
        return self._backbone_skip_module(t).weight.flatten(1)   # (C_out, C_in, 1, 1) -> (C_out, C_in)

    def _skip_matrix(self, t: _Transition, k: int) -> Tensor:
        """Exit k's weight of learned skip t: its own copy for full exits k < N, else the backbone's."""
        if self.exit_bn_weight is not None and k < self.depth:
            return self.exit_skip_weights[t.exit_slot][k]
        return self._backbone_skip_matrix(t)
