r"""Pre-activation convolutional ResNet with intermediate outputs (stage-cost paper, 2025).

The model (eq. 1 of the paper) maps an image batch ``x`` through

    x_0     = V(x)                              stem: conv3x3 -> BN -> ReLU
    x_{k+1} = S_k(x_k) + F_k(x_k),  k = 0..N-1  residual blocks
    ŷ       = H(T(x_N))                         head: BN -> ReLU -> global average pool -> linear

* ``F_k`` is the pre-activation basic block BN -> ReLU -> conv3x3 -> BN -> ReLU -> conv3x3; its first
  conv has stride 2 in the first block of every stage after the first (the resolution halves there).
* ``S_k`` is the identity inside a stage. At the first block of a later stage it is a 1x1 stride-2
  convolution **of the block input x_k itself** (not of its pre-activation): a learned matrix, without
  bias, where the width changes ("standard" widths, e.g. 16/32/64), and the parameter-free subsampling
  ``x[:, :, ::2, ::2]`` (the same convolution with identity weight) where it does not ("homogeneous").
  Because S_k acts on x_k, setting w_{F,k} = 0 gives x_{k+1} = S_k(x_k): the skips alone carry the state.
* ``T`` is the chain of *trailing* skips: empty for an ordinary network, and the stage transitions
  that a SubResNet-M needs after its last block to reach the final width and resolution (Definition 1).
  A network whose ``blocks_per_stage`` ends in zeros, e.g. (12, 0, 0), has them.

Intermediate outputs (eq. 2): for k = 0..N

    ŷ_k = E_k(x_k) = H(T(S_{N-1}(... S_k(x_k) ...))),        E_N = H ∘ T  (the network output).

Only the non-identity skips matter, and they are all 1x1 stride-2 convolutions, so for every state of
one stage the remaining chain collapses to one subsampling by 2^m and one composed C_final x C_stage
matrix (the product of the remaining 1x1 weights). ``exit_logits`` uses this: it stacks the states of a
stage, applies that subsampling and matrix once, and runs one batch norm, ReLU, pooling and head
product for all N+1 exits, each exit's channels being separate batch-norm channels with their own
running statistics.

Lemma 1 (identity mapping): if w_{F,k} = 0 for k = M..N-1 then ŷ_k = ŷ_M for all k = M..N (the
features fed to the head coincide, hence so do their batch statistics and, after recalibration,
their running statistics). Lemma 2: the SubResNet-M returned by ``subresnet(M)`` has output ŷ_M.

Exit variants (``exits``):
  "ws"       stage-cost training with weights shared between backbone and exits: every exit uses the
             backbone's skips and head (BN affine, linear) but its own BN running statistics.
  "full"     every exit k < N has its own copy of its remaining learned skips and of the head
             (BN affine, BN running statistics, linear), initialised as copies of the backbone's.
  "standard" trained without stage cost; its exits are the "ws" form computed post hoc (recalibrate
             their statistics with ``recalibrate_exit_statistics``).
Exit N is always the backbone head.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import choice, fail, integer, real
from ._protocol import ModuleSystem

__all__ = ["PreActResNet", "EXIT_VARIANTS", "STANDARD_WIDTHS"]

EXIT_VARIANTS = ("standard", "ws", "full")
STANDARD_WIDTHS = (16, 32, 64)
BN_EPS = 1e-5


# ----------------------------------------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------------------------------------
class _Subsample(nn.Module):
    """S(x) = x[:, :, ::2, ::2]: the 1x1 stride-2 convolution with identity weight (no parameters)."""

    def forward(self, x: Tensor) -> Tensor:
        return x[:, :, ::2, ::2]


def _conv3x3(in_channels: int, out_channels: int, stride: int) -> nn.Conv2d:
    # no bias: every conv is followed by a batch norm (here or in the next block / head)
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


def _make_skip(in_channels: int, out_channels: int) -> nn.Module:
    """The stage-transition skip: parameter-free subsampling if the width stays, else a learned 1x1 conv."""
    if in_channels == out_channels:
        return _Subsample()
    return nn.Conv2d(in_channels, out_channels, 1, stride=2, bias=False)


class _PreActBlock(nn.Module):
    """x_{k+1} = S_k(x_k) + F_k(x_k), F_k = BN -> ReLU -> conv3x3(stride) -> BN -> ReLU -> conv3x3."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, skip: nn.Module):
        super().__init__()
        self.branch = nn.Sequential(
            nn.BatchNorm2d(in_channels), nn.ReLU(inplace=True), _conv3x3(in_channels, out_channels, stride),
            nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True), _conv3x3(out_channels, out_channels, 1))
        self.skip = skip

    def forward(self, x: Tensor) -> Tensor:
        return self.skip(x) + self.branch(x)   # the skip sees x_k itself, not BN/ReLU(x_k)


@dataclass(frozen=True)
class _Transition:
    """The skip that enters stage ``stage`` (>= 1).

    ``position`` is the block index k whose S_k it is, or N for a trailing skip (part of T); exit k passes
    through it iff k <= position. ``exit_slot`` indexes ``exit_skip_weights`` (full exits, learned skips).
    """
    stage: int
    position: int
    in_channels: int
    out_channels: int
    learned: bool
    tail_index: Optional[int]
    exit_slot: Optional[int]


@dataclass(frozen=True)
class _ExitGroup:
    """Exits start..stop-1 whose states share one shape (one stage); ``transitions`` remain after them."""
    stage: int
    start: int
    stop: int
    channels: int
    transitions: tuple


# ----------------------------------------------------------------------------------------------------------
# Argument checks
# ----------------------------------------------------------------------------------------------------------
def _is_channels_last(x: Tensor) -> bool:
    """Stored channels-last (and not also contiguous, as a 1 × 1 image is)."""
    return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


def _check_widths(widths) -> tuple:
    if isinstance(widths, (str, bytes)) or not isinstance(widths, Sequence) or len(widths) == 0:
        fail("widths", "a non-empty tuple of per-stage channel counts", widths)
    return tuple(integer(f"widths[{i}]", w, minimum=1) for i, w in enumerate(widths))


def _check_blocks_per_stage(blocks_per_stage, stages: int) -> tuple:
    if isinstance(blocks_per_stage, (str, bytes)) or not isinstance(blocks_per_stage, Sequence):
        return (integer("blocks_per_stage", blocks_per_stage, minimum=0),) * stages
    if len(blocks_per_stage) != stages:
        fail("blocks_per_stage", f"{stages} per-stage block counts (one per entry of widths)", blocks_per_stage)
    counts = tuple(integer(f"blocks_per_stage[{i}]", n, minimum=0) for i, n in enumerate(blocks_per_stage))
    last_nonempty = max((i for i, n in enumerate(counts) if n > 0), default=-1)
    if any(n == 0 for n in counts[:last_nonempty + 1]):
        # an empty stage may only trail (its skip then belongs to the output map T of a SubResNet)
        fail("blocks_per_stage", "zero block counts only after the last non-empty stage", blocks_per_stage)
    return counts


def _truncated_blocks_per_stage(blocks_per_stage: tuple, depth: int) -> tuple:
    """The first ``depth`` blocks, stage by stage: (18, 18, 18), 12 -> (12, 0, 0); 20 -> (18, 2, 0)."""
    counts, remaining = [], depth
    for n in blocks_per_stage:
        counts.append(min(n, remaining))
        remaining -= counts[-1]
    return tuple(counts)


# ----------------------------------------------------------------------------------------------------------
# The network
# ----------------------------------------------------------------------------------------------------------
class PreActResNet(nn.Module, ModuleSystem):
    r"""Pre-activation ResNet x_{k+1} = S_k(x_k) + F_k(x_k) with N+1 intermediate outputs E_k (eq. 2).

    Keyword-only arguments
        blocks_per_stage  int (same count in every stage) or tuple of per-stage counts; trailing zeros
                          give a SubResNet whose remaining stage transitions form its output map T.
                          ResNet-54: 18 (x 3 stages).
        widths            per-stage channel counts; the stem has widths[0] channels. Standard:
                          (16, 32, 64); homogeneous: one width, e.g. (64, 64, 64) or (32, 32, 32).
        in_channels       image channels (3 CIFAR, 1 MNIST).
        num_classes       logits per output.
        exits             "standard", "ws" or "full" (see the module docstring).
        zero_branches     zero-initialise the last conv of every residual branch, so that the untrained
                          net is carried by the skips alone (all exits then agree, Lemma 1 with M = 0).
        exit_momentum     momentum of the exit running statistics (0.1 like torch BN); None gives the
                          cumulative average (as BatchNorm's momentum=None). May be reassigned.

    Initialisation: convolutions (3x3 and learned 1x1 skips) Kaiming normal (fan_out, relu); every BN
    weight 1, bias 0; the linear layer keeps torch's default; full exits copy the backbone's skips and
    head. Exit running statistics start at mean 0, var 1.

    Shapes: images (B, in_channels, H, W); state x_k (B, widths[stage_of(k)], H_s, W_s) with H_s =
    ceil(H / 2^s); head features (B, widths[-1], H_f, W_f); logits (B, num_classes).

    Parameter groups (a partition of ``parameters()``): ``branch_parameters`` (all of every F_k),
    ``exit_parameters`` (full exits' own copies; empty otherwise) and ``backbone_parameters`` (stem,
    learned skips, head). Buffers: every BatchNorm2d's, plus exit_running_mean / exit_running_var
    (N+1, widths[-1]) and exit_num_batches_tracked (N+1,); row N is what ``forward`` uses.

    DistributedDataParallel wraps ``forward`` only: call ``model(images, all_exits=True)`` there to get all
    exits. With exits="full", ``forward`` without all_exits leaves the exit parameters unused.
    """

    def __init__(self, *, blocks_per_stage: Union[int, Sequence[int]] = 18,
                 widths: Sequence[int] = STANDARD_WIDTHS, in_channels: int = 3, num_classes: int = 10,
                 exits: str = "ws", zero_branches: bool = False, exit_momentum: Optional[float] = 0.1):
        super().__init__()
        self.widths = _check_widths(widths)
        self.blocks_per_stage = _check_blocks_per_stage(blocks_per_stage, len(self.widths))
        self.in_channels = integer("in_channels", in_channels, minimum=1)
        self.num_classes = integer("num_classes", num_classes, minimum=1)
        self.exits = choice("exits", exits, EXIT_VARIANTS)
        if not isinstance(zero_branches, bool):
            fail("zero_branches", "True or False", zero_branches)
        self.exit_momentum = self._check_momentum(exit_momentum)
        self._synced_exit_statistics = False   # see synchronise_batch_norm

        self.stem = nn.Sequential(_conv3x3(self.in_channels, self.widths[0], 1), nn.BatchNorm2d(self.widths[0]),
                                  nn.ReLU(inplace=True))
        self.blocks = nn.ModuleList(self._build_blocks())
        self._transitions = self._describe_transitions()
        self.tail_skips = nn.ModuleList(_make_skip(t.in_channels, t.out_channels)
                                        for t in self._transitions if t.tail_index is not None)
        self._groups = self._describe_exit_groups()

        final, depth = self.widths[-1], self.depth
        self.head_bn_weight = nn.Parameter(torch.ones(final))
        self.head_bn_bias = nn.Parameter(torch.zeros(final))
        self.head_linear = nn.Linear(final, self.num_classes)
        # per-exit head BN statistics, rows k = 0..N; row N belongs to the network output
        self.register_buffer("exit_running_mean", torch.zeros(depth + 1, final))
        self.register_buffer("exit_running_var", torch.ones(depth + 1, final))
        self.register_buffer("exit_num_batches_tracked", torch.zeros(depth + 1, dtype=torch.long))

        self._initialise(zero_branches)
        self._build_full_exits()

    # -------------------------------------------------------------------------------- constructors
    @classmethod
    def standard(cls, *, blocks_per_stage: Union[int, Sequence[int]] = 18, in_channels: int = 3,
                 num_classes: int = 10, exits: str = "ws", **options) -> "PreActResNet":
        """The paper's standard ResNet: widths 16/32/64 (ResNet-54 with the default 18 blocks per stage)."""
        return cls(blocks_per_stage=blocks_per_stage, widths=STANDARD_WIDTHS, in_channels=in_channels,
                   num_classes=num_classes, exits=exits, **options)

    @classmethod
    def homogeneous(cls, *, width: int = 64, stages: int = 3, blocks_per_stage: Union[int, Sequence[int]] = 18,
                    in_channels: int = 3, num_classes: int = 10, exits: str = "ws",
                    **options) -> "PreActResNet":
        """One width everywhere, stem included (64 CIFAR, 32 MNIST); the resolution still halves per stage."""
        width = integer("width", width, minimum=1)
        stages = integer("stages", stages, minimum=1)
        if isinstance(blocks_per_stage, Sequence) and not isinstance(blocks_per_stage, (str, bytes)):
            stages = len(blocks_per_stage)
        return cls(blocks_per_stage=blocks_per_stage, widths=(width,) * stages, in_channels=in_channels,
                   num_classes=num_classes, exits=exits, **options)

    def subresnet_architecture(self, depth: int, *, exits: Optional[str] = None,
                               zero_branches: bool = False) -> "PreActResNet":
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

    # -------------------------------------------------------------------------------- structure
    @property
    def input_shape(self) -> tuple:
        """(channels, height, width) of one image; any height and width (None) are accepted."""
        return (self.in_channels, None, None)

    @property
    def depth(self) -> int:
        """N, the number of residual blocks."""
        return len(self.blocks)

    @property
    def num_exits(self) -> int:
        return self.depth + 1

    @property
    def stage_starts(self) -> tuple:
        """Index of the first block of each stage (b_s = n_0 + ... + n_{s-1})."""
        return tuple(sum(self.blocks_per_stage[:s]) for s in range(len(self.widths)))

    def stage_of(self, k: int) -> int:
        """Stage whose width and resolution the state x_k (k = 0..N) has; x_0 belongs to stage 0."""
        k = self._check_exit_index("k", k)
        return next(g.stage for g in self._groups if g.start <= k < g.stop)

    @property
    def exit_groups(self) -> tuple:
        """((stage, first_exit, stop), ...): exits batched together by ``exit_logits``, one group per stage."""
        return tuple((g.stage, g.start, g.stop) for g in self._groups)

    def _build_blocks(self) -> list:
        blocks = []
        for stage, count in enumerate(self.blocks_per_stage):
            for i in range(count):
                enters_stage = stage > 0 and i == 0   # resolution halves, width may change
                in_width = self.widths[stage - 1] if enters_stage else self.widths[stage]
                skip = _make_skip(in_width, self.widths[stage]) if enters_stage else nn.Identity()
                blocks.append(_PreActBlock(in_width, self.widths[stage], 2 if enters_stage else 1, skip))
        return blocks

    def _describe_transitions(self) -> tuple:
        transitions, tails, slots = [], 0, 0
        for stage in range(1, len(self.widths)):
            trailing = self.blocks_per_stage[stage] == 0
            learned = self.widths[stage - 1] != self.widths[stage]
            transitions.append(_Transition(
                stage=stage, position=self.depth if trailing else self.stage_starts[stage],
                in_channels=self.widths[stage - 1], out_channels=self.widths[stage], learned=learned,
                tail_index=tails if trailing else None, exit_slot=slots if learned else None))
            tails += trailing
            slots += learned
        return tuple(transitions)

    def _describe_exit_groups(self) -> tuple:
        groups = []
        for stage, count in enumerate(self.blocks_per_stage):
            if stage > 0 and count == 0:
                break
            # stage 0 holds x_0..x_{n_0}; a later stage s holds the outputs x_{b_s+1}..x_{b_s+n_s} of its blocks
            start = 0 if stage == 0 else self.stage_starts[stage] + 1
            stop = self.stage_starts[stage] + count + 1
            remaining = tuple(i for i, t in enumerate(self._transitions) if t.stage > stage)
            groups.append(_ExitGroup(stage, start, stop, self.widths[stage], remaining))
        return tuple(groups)

    def _initialise(self, zero_branches: bool) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        if zero_branches:
            for block in self.blocks:
                nn.init.zeros_(block.branch[-1].weight)

    def _build_full_exits(self) -> None:
        """Own parameters of exits k < N (full only): row k of each tensor belongs to exit k."""
        self.exit_skip_weights = nn.ParameterList()
        self.exit_bn_weight = self.exit_bn_bias = self.exit_linear_weight = self.exit_linear_bias = None
        if self.exits != "full" or self.depth == 0:
            return
        depth, final = self.depth, self.widths[-1]
        for t in self._transitions:
            if t.learned:   # exits 0..min(position, N-1) pass through this skip: (rows, C_out, C_in)
                rows = min(t.position + 1, depth)
                self.exit_skip_weights.append(nn.Parameter(torch.empty(rows, t.out_channels, t.in_channels)))
        self.exit_bn_weight = nn.Parameter(torch.empty(depth, final))
        self.exit_bn_bias = nn.Parameter(torch.empty(depth, final))
        self.exit_linear_weight = nn.Parameter(torch.empty(depth, self.num_classes, final))
        self.exit_linear_bias = nn.Parameter(torch.empty(depth, self.num_classes))
        self.copy_backbone_to_exits()

    @torch.no_grad()
    def copy_backbone_to_exits(self) -> None:
        """Set every full exit's own skips and head (affine, linear, not statistics) to the backbone's.

        Done at construction; call it again e.g. after loading backbone weights trained elsewhere.
        A no-op for "ws" and "standard" exits, which own no parameters.
        """
        if self.exit_bn_weight is None:
            return
        for t in self._transitions:
            if t.learned:
                self.exit_skip_weights[t.exit_slot].copy_(self._backbone_skip_matrix(t).expand_as(
                    self.exit_skip_weights[t.exit_slot]))
        self.exit_bn_weight.copy_(self.head_bn_weight.expand_as(self.exit_bn_weight))
        self.exit_bn_bias.copy_(self.head_bn_bias.expand_as(self.exit_bn_bias))
        self.exit_linear_weight.copy_(self.head_linear.weight.expand_as(self.exit_linear_weight))
        self.exit_linear_bias.copy_(self.head_linear.bias.expand_as(self.exit_linear_bias))

    # -------------------------------------------------------------------------------- parameter groups
    def branch_parameters(self) -> Iterator[nn.Parameter]:
        """w_F: every parameter of every residual branch F_k (convs and BN affines)."""
        for block in self.blocks:
            yield from block.branch.parameters()

    def exit_parameters(self) -> Iterator[nn.Parameter]:
        """Full exits' own skip and head parameters (learning rate α/γ in the paper); empty otherwise."""
        yield from self.exit_skip_weights
        if self.exit_bn_weight is not None:
            yield from (self.exit_bn_weight, self.exit_bn_bias, self.exit_linear_weight, self.exit_linear_bias)

    def backbone_parameters(self) -> Iterator[nn.Parameter]:
        """Everything else: stem, learned skips (S_k and trailing), head BN affine and linear."""
        yield from self.stem.parameters()
        for block in self.blocks:
            yield from block.skip.parameters()
        yield from self.tail_skips.parameters()
        yield from (self.head_bn_weight, self.head_bn_bias)
        yield from self.head_linear.parameters()

    def parameter_count(self) -> int:
        """Number of (trainable) parameters, exit parameters included."""
        return sum(p.numel() for p in self.parameters())

    @torch.no_grad()
    def exit_costs(self, height: int, width: int) -> dict:
        """Multiply-adds per image of size ``height`` × ``width`` (convolutions and linear maps):

        ``{"network": the plain forward pass, "early_exit": (N+1,) list}`` where early_exit[k] is
        what early exit spends on an image that stops at exit k: the stem, blocks 0..k-1 and the
        heads of exits 0..k (each head's skips S_j..S_{N-1}, T as strided 1×1 convolutions, and
        its linear map). Counted from one forward pass of a blank image, so every shape is the one
        the network computes.
        """
        height = integer("height", height, minimum=1)
        width = integer("width", width, minimum=1)
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

    def branch_parameter_norms(self) -> Tensor:
        """(N,) tensor of ‖w_F,k‖ (Euclidean norm over all of F_k's parameters); differentiable."""
        norms = [torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p) for p in b.branch.parameters()]))
                 for b in self.blocks]
        return torch.stack(norms) if norms else self.head_bn_weight.new_zeros(0)

    # -------------------------------------------------------------------------------- forward passes
    def forward(self, images: Tensor, *, all_exits: bool = False) -> Tensor:
        """The network output ŷ = E_N(x_N): (B, num_classes). No other exit is computed.

        ``all_exits=True`` returns ``exit_logits(images)`` instead, (N+1, B, num_classes); use it under
        DistributedDataParallel, which only sees calls of the module itself.
        """
        if all_exits:
            return self.exit_logits(images)
        x = self.stem(images)
        for block in self.blocks:
            x = block(x)
        features = self._apply_tail(x)[:, None]   # (B, 1, C_f, H_f, W_f)
        return self._head(features, self.depth, batch_statistics=self.training,
                          cumulative=self.exit_momentum is None)[0]

    def states(self, images: Tensor) -> list:
        """[x_0, ..., x_N]; x_k has shape (B, widths[stage_of(k)], H_s, W_s)."""
        x = self.stem(images)
        states = [x]
        for block in self.blocks:
            x = block(x)
            states.append(x)
        return states

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

    # -------------------------------------------------------------------------------- batched exits
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

    # -------------------------------------------------------------------------------- statistics
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
                    images = batch[0] if isinstance(batch, (tuple, list)) else batch
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

    # -------------------------------------------------------------------------------- SubResNet
    @torch.no_grad()
    def subresnet(self, depth: int, *, exits: Optional[str] = None) -> "PreActResNet":
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

    # -------------------------------------------------------------------------------- helpers
    def _apply_tail(self, x: Tensor) -> Tensor:
        for skip in self.tail_skips:
            x = skip(x)
        return x

    def _remaining_transitions(self, k: int) -> list:
        """Non-identity skips exit k passes through, in order (S_k..S_{N-1}, then T)."""
        return [t for t in self._transitions if t.position >= k]

    def _backbone_skip_module(self, t: _Transition) -> nn.Module:
        return self.tail_skips[t.tail_index] if t.tail_index is not None else self.blocks[t.position].skip

    def _backbone_skip_matrix(self, t: _Transition) -> Tensor:
        return self._backbone_skip_module(t).weight.flatten(1)   # (C_out, C_in, 1, 1) -> (C_out, C_in)

    def _skip_matrix(self, t: _Transition, k: int) -> Tensor:
        """Exit k's weight of learned skip t: its own copy for full exits k < N, else the backbone's."""
        if self.exit_bn_weight is not None and k < self.depth:
            return self.exit_skip_weights[t.exit_slot][k]
        return self._backbone_skip_matrix(t)

    def _default_sub_exits(self, exits: Optional[str]) -> str:
        if exits is None:
            return "standard" if self.exits == "standard" else "ws"
        return choice("exits", exits, EXIT_VARIANTS)

    def _check_exit_index(self, name: str, k) -> int:
        k = integer(name, k, minimum=0)
        if k > self.depth:
            fail(name, f"an exit index in 0..{self.depth}", k)
        return k

    def _check_state(self, k: int, x_k) -> None:
        group = next(g for g in self._groups if g.start <= k < g.stop)
        if not isinstance(x_k, Tensor) or x_k.dim() != 4 or x_k.shape[1] != group.channels:
            fail("x_k", f"a (B, {group.channels}, H, W) tensor (state x_{k})", x_k)

    @staticmethod
    def _check_momentum(momentum) -> Optional[float]:
        if momentum is None:
            return None
        return real("exit_momentum", momentum, minimum=0.0, maximum=1.0, strict_min=True)

    def extra_repr(self) -> str:
        return (f"blocks_per_stage={self.blocks_per_stage}, widths={self.widths}, exits={self.exits!r}, "
                f"depth={self.depth}, parameters={self.parameter_count()}")
