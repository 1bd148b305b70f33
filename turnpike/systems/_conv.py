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

from typing import Iterator, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from .._checks import choice, fail, integer, real
from ._conv_blocks import (EXIT_VARIANTS, STANDARD_WIDTHS, _check_blocks_per_stage, _check_widths, _ExitGroup,
                           _conv3x3, _make_skip, _PreActBlock, _Transition)
from ._conv_exits import BatchedExits
from ._conv_pruning import PruningAndCosts
from ._protocol import ModuleSystem

__all__ = ["PreActResNet", "EXIT_VARIANTS", "STANDARD_WIDTHS"]



# ----------------------------------------------------------------------------------------------------------
# The network
# ----------------------------------------------------------------------------------------------------------
class PreActResNet(BatchedExits, PruningAndCosts, nn.Module, ModuleSystem):
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
        self.num_classes = integer("num_classes", num_classes, minimum=2)
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
        x = self.stem(self.check_inputs(images, "images"))
        for block in self.blocks:
            x = block(x)
        features = self._apply_tail(x)[:, None]   # (B, 1, C_f, H_f, W_f)
        return self._head(features, self.depth, batch_statistics=self.training,
                          cumulative=self.exit_momentum is None)[0]

    def states(self, images: Tensor) -> list:
        """[x_0, ..., x_N]; x_k has shape (B, widths[stage_of(k)], H_s, W_s)."""
        x = self.stem(self.check_inputs(images, "images"))
        states = [x]
        for block in self.blocks:
            x = block(x)
            states.append(x)
        return states

    # -------------------------------------------------------------------------------- helpers
    def _apply_tail(self, x: Tensor) -> Tensor:
        for skip in self.tail_skips:
            x = skip(x)
        return x

    def _backbone_skip_module(self, t: _Transition) -> nn.Module:
        return self.tail_skips[t.tail_index] if t.tail_index is not None else self.blocks[t.position].skip

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
