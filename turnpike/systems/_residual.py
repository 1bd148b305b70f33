r"""Any residual network as a module system, with skip-path exits for which Lemma 1 holds by construction.

A network is a stem V, residual blocks k = 0..N-1 and a head H:

    x_0 = V(inputs),     x_{k+1} = a_k(s_k(x_k) + F_k(x_k)),     ŷ = H(x_N)

with F_k the residual branch, s_k the skip (identity or a projection) and a_k an optional post-addition
activation. Block k's *skip path* is what it computes when its branch is zero, P_k = a_k ∘ s_k, and exit k is

    ŷ_k = E_k(x_k) = H(P_{N-1}(⋯ P_k(x_k))),    k = 0..N,

eq. (2) of the 2025 paper for pre-activation networks (a_k = id) and, for torchvision's blocks,
H(relu(downsample(⋯ relu(x_k)))). Lemma 1: if F_k = 0 for k = M..N-1 then ŷ_k = ŷ_M for k = M..N, in training
mode (batch statistics) on every batch and in eval mode after :meth:`recalibrate_exit_statistics`
(``theory/skip-path-exits.md``).

Every BatchNorm on an exit path (in a projection skip or in the head) normalises each exit by that exit's own
statistics: rows of ``exit_statistics``, and the module's own buffers for the backbone's exit (exit N in the
head; in "ws"/"standard", exit q at the skip of block q, which *is* the block's skip output). Exits
("exits"): "ws" shares every parameter with the backbone, "full" gives each exit k < N its own copy of the Conv,
Linear and BatchNorm layers on its path (initialised as the backbone's), "standard" is "ws" trained without the
stage cost. All N+1 exits are computed batched (:meth:`exit_logits`): the states of a stage are stacked, each
remaining skip runs once on the stack of every exit that passes it, with one normalisation per BatchNorm and
one head call for all exits.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Iterable, Iterator, Optional, Sequence

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from .._checks import choice, fail, integer, real
from ._protocol import ModuleSystem, SavedLayout
from ._linear_skips import _CONVS
from ._residual_parts import EXIT_VARIANTS, ResidualBlock, _leaves, _Mode
from ._residual_paths import ExitPaths
from ._residual_pruning import ResidualPruning

__all__ = ["ResidualNetwork", "ResidualBlock"]


def _as_block(index: int, block) -> ResidualBlock:
    if isinstance(block, ResidualBlock):
        return block
    if isinstance(block, Mapping):
        unknown = set(block) - {"branch", "skip", "activation"}
        if unknown or "branch" not in block:
            fail(f"blocks[{index}]", "a dict with keys branch, skip (optional), activation (optional)", dict(block))
        return ResidualBlock(block["branch"], block.get("skip"), block.get("activation"))
    if isinstance(block, (tuple, list)) and 1 <= len(block) <= 3:
        return ResidualBlock(*block)
    fail(f"blocks[{index}]", "a turnpike.ResidualBlock(branch, skip, activation), a tuple (branch, skip, activation) "
                             "or a dict with those keys", block)


def _read_saved_layout(network, state_dict, prefix, *args) -> None:
    """load_state_dict pre-hook: a state in the network's saved layout is read in its own keys."""
    if network._saved_layout.wrote(state_dict, prefix):
        mapped = network._saved_layout.state_dict(state_dict, network, prefix)
        state_dict.clear()
        state_dict.update(mapped)


class ResidualNetwork(ExitPaths, ResidualPruning, nn.Module, ModuleSystem):
    r"""A residual network V → blocks → H with skip-path exits (see the module docstring).

    Arguments
        stem          the module V mapping the inputs to x_0 (``nn.Identity()`` for none).
        blocks        the residual blocks in order: :class:`ResidualBlock` (branch, skip, activation), or tuples
                      / dicts of those; the skip None is the identity.
        head          the module H mapping x_N to the logits (B, num_classes).
        num_classes   default: ``out_features`` of the head's last ``nn.Linear``.
        input_shape   one sample's input shape, None for any size: default (in_channels, None, ...) of the
                      stem's first convolution.
        exits         "ws" (default), "full" or "standard".
        exit_momentum momentum of the exits' running statistics (None: cumulative average).
        architecture  the name reports and run fingerprints give the network (a checkpoint resumes only into a
                      network of the same name and size).
        saved_layout  another layout of this network's states (:class:`SavedLayout`, e.g. a former class's) that
                      ``load_state_dict`` and checkpoints read too.

    The modules are held, not copied: the parameters and BatchNorm statistics are the user's own tensors, so a
    pretrained network keeps its weights and training through turnpike updates them in place.

    Parameter groups (a partition of ``parameters()``): ``branch_parameters`` (every F_k), ``exit_parameters``
    (the full exits' copies) and ``backbone_parameters`` (stem, skips, activations, head). Requirements on an exit
    path (the skips and the head): each operation acts on every sample separately, except BatchNorms, which must
    be entries of an ``nn.Sequential`` (nested ones are opened) so that each exit gets its own statistics.
    """

    def __init__(self, stem: nn.Module, blocks: Sequence, head: nn.Module, *, num_classes: Optional[int] = None,
                 input_shape: Optional[Sequence] = None, exits: str = "ws", exit_momentum: Optional[float] = 0.1,
                 architecture: str = "ResidualNetwork", saved_layout: Optional[SavedLayout] = None):
        super().__init__()
        for name, module in (("stem", stem), ("head", head)):
            if not isinstance(module, nn.Module):
                fail(name, "a torch.nn.Module", module)
        if isinstance(blocks, (str, bytes)) or not isinstance(blocks, Iterable):
            fail("blocks", "a sequence of residual blocks (turnpike.ResidualBlock or (branch, skip, activation))",
                 blocks)
        self.exits = choice("exits", exits, EXIT_VARIANTS)
        self.exit_momentum = None if exit_momentum is None else real(
            "exit_momentum", exit_momentum, minimum=0.0, maximum=1.0, strict_min=True)
        if not isinstance(architecture, str) or not architecture:
            fail("architecture", "a non-empty name", architecture)
        self._architecture = architecture
        if saved_layout is not None and not isinstance(saved_layout, SavedLayout):
            fail("saved_layout", "a turnpike.systems.SavedLayout or None", saved_layout)
        self._saved_layout = saved_layout
        if saved_layout is not None:
            self.register_load_state_dict_pre_hook(_read_saved_layout)
        self.stem = stem
        self.blocks = nn.ModuleList(_as_block(i, b) for i, b in enumerate(blocks))
        self.head = head
        self.num_classes = self._infer_classes(num_classes)
        self._input_shape = self._infer_input_shape(input_shape)
        self._synced_exit_statistics = False   # see synchronise_batch_norm
        #: how exit_logits computes the exits: True batched per stage, False one exit after the other, None
        #: (default) batched where the skips compose (``_linear_skips``) or on GPUs (fewer kernel launches), else
        #: one by one: on a CPU, stacking exits that pass normalised skips costs layout copies
        #: (benchmarks/residual_network.py)
        self.batched_exits = None
        self._counter = None                   # multiply-add counter while exit_costs runs
        self._groups = self._describe_groups()
        self._build_exit_paths()
        self.copy_backbone_to_exits()

    # -------------------------------------------------------------------------------- structure
    def _infer_classes(self, num_classes) -> int:
        if num_classes is None:
            linears = [m for m in self.head.modules() if isinstance(m, nn.Linear)]
            if not linears:
                fail("num_classes", "the number of classes (the head has no nn.Linear to read it from)", num_classes)
            num_classes = linears[-1].out_features
        return integer("num_classes", num_classes, minimum=2)

    def _infer_input_shape(self, input_shape) -> tuple:
        if input_shape is None:
            for module in list(self.stem.modules()) + (list(self.blocks[0].modules()) if len(self.blocks) else []):
                if type(module) in _CONVS:
                    return (module.in_channels,) + (None,) * (_CONVS.index(type(module)) + 1)
            fail("input_shape", "one sample's input shape, e.g. (3, None, None) (the stem has no convolution to "
                                "read the channels from)", input_shape)
        if isinstance(input_shape, (str, bytes)) or not isinstance(input_shape, Sequence) or not input_shape:
            fail("input_shape", "a tuple of sizes (None for any size)", input_shape)
        return tuple(None if s is None else integer(f"input_shape[{i}]", s, minimum=1)
                     for i, s in enumerate(input_shape))

    def _describe_groups(self) -> tuple:
        """(start, stop, q): exits start..stop-1 share a state shape; q is the projection block after them
        (None for the last group). Exit k passes block q's skip iff k <= q."""
        groups, start = [], 0
        for q, block in enumerate(self.blocks):
            if block.projection:
                groups.append((start, q + 1, q))
                start = q + 1
        groups.append((start, self.depth + 1, None))
        return tuple(groups)

    @property
    def architecture(self) -> str:
        return self._architecture

    def optimiser_order(self, module_state: dict):
        layout = self._saved_layout
        return layout.optimiser_order(self) if layout is not None and layout.wrote(module_state) else None

    @property
    def input_shape(self) -> tuple:
        return self._input_shape

    @property
    def depth(self) -> int:
        """N, the number of residual blocks."""
        return len(self.blocks)

    @property
    def num_exits(self) -> int:
        return self.depth + 1

    @property
    def exit_groups(self) -> tuple:
        """((first_exit, stop), ...): the exits stacked together, one group per stage (state shape)."""
        return tuple((start, stop) for start, stop, _ in self._groups)

    @property
    def projections(self) -> tuple:
        """Indices q of the blocks whose skip is not the identity."""
        return tuple(q for q, block in enumerate(self.blocks) if block.projection)

    # -------------------------------------------------------------------------------- parameter groups
    def branch_parameters(self) -> Iterator[nn.Parameter]:
        """w_F: every parameter of every residual branch F_k."""
        seen = set()
        for block in self.blocks:
            for p in block.branch.parameters():
                if id(p) not in seen:
                    seen.add(id(p))
                    yield p

    def exit_parameters(self) -> Iterator[nn.Parameter]:
        """The full exits' own copies (learning rate α/γ in the paper); empty for "ws" and "standard"."""
        yield from self.exit_copies

    def backbone_parameters(self) -> Iterator[nn.Parameter]:
        """Everything else: stem, skips, activations and head."""
        others = {id(p) for p in self.branch_parameters()} | {id(p) for p in self.exit_copies}
        for p in self.parameters():
            if id(p) not in others:
                yield p

    def parameter_count(self) -> int:
        """Number of (trainable) parameters, exit copies included."""
        return sum(p.numel() for p in self.parameters())

    def branch_parameter_norms(self) -> Tensor:
        """(N,) tensor of ‖w_F,k‖ (Euclidean norm over all of F_k's parameters); differentiable."""
        reference = next(self.parameters(), None)
        zero = torch.zeros((), dtype=reference.dtype if reference is not None else torch.float32,
                           device=reference.device if reference is not None else None)
        norms = [torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p) for p in params]))
                 if params else zero for params in (list(b.branch.parameters()) for b in self.blocks)]
        return torch.stack(norms) if norms else zero.new_zeros(0)

    @torch.no_grad()
    def refresh_exits(self) -> None:
        """Set everything the exits own to the backbone's: the full exits' weights (:meth:`copy_backbone_to_exits`)
        and every exit's BatchNorm statistics on the skip paths and in the head (the rows start as that
        BatchNorm's own statistics, as at construction). Call it after loading weights into the wrapped model
        (e.g. :func:`turnpike.models.load_weights`): the exits then start from the loaded network."""
        self.copy_backbone_to_exits()
        for op, module in self._exit_path_norms():
            table = self.exit_statistics[op.stats]
            table.running_mean.copy_(module.running_mean.expand_as(table.running_mean))
            table.running_var.copy_(module.running_var.expand_as(table.running_var))
            table.num_batches_tracked.zero_()

    @torch.no_grad()
    def copy_backbone_to_exits(self) -> None:
        """Set every full exit's own copies (weights, not statistics) to the backbone's. Done at construction;
        :meth:`refresh_exits` does it and sets the exits' statistics too. A no-op for "ws" and "standard"."""
        for ops in self._paths.values():
            for op in ops:
                module = self.get_submodule(op.path)
                for name, index in op.copies:
                    self.exit_copies[index].copy_(getattr(module, name).reshape(-1).expand_as(self.exit_copies[index]))

    # -------------------------------------------------------------------------------- forward passes
    def forward(self, inputs: Tensor, *, all_exits: bool = False) -> Tensor:
        """The network output ŷ = H(x_N), (B, num_classes); ``all_exits=True``: ``exit_logits(inputs)``
        (use it under DistributedDataParallel, which only sees calls of the module itself)."""
        if all_exits:
            return self.exit_logits(inputs)
        x = self.stem(self.check_inputs(inputs))
        for block in self.blocks:
            x = block(x)
        return self.head(x)

    def states(self, inputs: Tensor) -> list:
        """[x_0, ..., x_N]."""
        return self._states_and_skips(inputs)[0]

    def _states_and_skips(self, inputs: Tensor) -> tuple:
        """([x_0..x_N], {q: s_q(x_q)}) — the skip outputs of projection blocks, which exit q shares ("ws")."""
        x = self.stem(self.check_inputs(inputs))
        states, skips = [x], {}
        keep = self.exits != "full"
        for q, block in enumerate(self.blocks):
            if keep and block.projection:
                x, skips[q] = block.forward_parts(x)
            else:
                x = block(x)
            states.append(x)
        return states, skips

    def exit_logits(self, inputs: Tensor) -> Tensor:
        """All exits ŷ_0..ŷ_N, (N+1, B, num_classes) (batched per stage or one by one: ``batched_exits``); row N
        equals ``forward``."""
        return self.forward_all(inputs)[0]

    def forward_all(self, inputs: Tensor, *, return_states: bool = False) -> tuple:
        """(exit logits (N+1, B, num_classes), [x_0..x_N] if ``return_states`` else None). In training mode each
        exit's BatchNorms use that exit's batch statistics and update its running statistics."""
        states, skips = self._states_and_skips(inputs)
        mode = _Mode(self.training, False)
        batched = self.batched_exits
        if batched is None:
            batched = self._chains is not None or states[0].device.type != "cpu"
        if batched:
            logits = self._exit_logits_from(states, skips, mode)
        else:          # the same exits and statistics updates (tested), exit by exit
            logits = torch.stack([self._exit_path(k, states[k], mode, head=True) for k in range(self.depth + 1)])
        return logits, (states if return_states else None)

    def exit_logit(self, k: int, x_k: Tensor) -> Tensor:
        """Reference ŷ_k = E_k(x_k) for one exit, (B, num_classes): the skip paths P_k..P_{N-1} one after the
        other, then the head, with exit k's statistics and parameters (the batched exits are tested against it;
        early exit uses it)."""
        k = self._check_exit_index("k", k)
        return self._exit_path(k, self._check_state(k, x_k), _Mode(self.training, False), head=True)

    def exit_features(self, k: int, x_k: Tensor) -> Tensor:
        """P_{N-1}(⋯ P_k(x_k)) with exit k's statistics and parameters: the input of exit k's head."""
        k = self._check_exit_index("k", k)
        return self._exit_path(k, self._check_state(k, x_k), _Mode(self.training, False), head=False)

    # -------------------------------------------------------------------------------- statistics
    def _exit_path_norms(self) -> list:
        """(op, module) of every BatchNorm on an exit path that keeps running statistics."""
        return [(op, self.get_submodule(op.path)) for position in sorted(self._paths)
                for op in self._paths[position] if op.stats is not None]

    def recalibrate_exit_statistics(self, batches: Iterable) -> int:
        """Reset every statistic on the exit paths and recompute it over ``batches`` (inputs, or (inputs, ...)).

        The exits' rows, the head's own statistics (exit N) and the projection skips' own statistics (shared by
        the backbone and exit q) become the exact average of their batch statistics over the batches; the
        other BatchNorms (stem, branches) run in eval mode, untouched. The skips' own statistics are
        recomputed too, since Lemma 1 in eval mode needs every exit that passes a skip to see statistics of
        the same features (``theory/skip-path-exits.md``). No gradient; parameters and the train/eval flag
        unchanged. Returns the number of batches; an empty iterable raises ValueError, statistics restored.
        """
        norms = self._exit_path_norms()
        tensors = [t for table in self.exit_statistics for t in table.buffers()]
        tensors += [t for _, m in norms for t in (m.running_mean, m.running_var, m.num_batches_tracked)]
        saved = [t.clone() for t in tensors]
        skip_norms = [m for op, m in norms if op.position < self.depth]
        momenta = [m.momentum for m in skip_norms]
        was_training = self.training
        reference = next(iter(self.buffers()), None) if next(self.parameters(), None) is None \
            else next(self.parameters())
        used = 0
        try:
            for table in self.exit_statistics:
                table.reset()
            for _, m in norms:
                m.reset_running_stats()
            self.eval()
            for m in skip_norms:        # the backbone's skip normalisations: batch statistics, exact average
                m.train()
                m.momentum = None
            with torch.no_grad():
                for batch in batches:
                    inputs = self.check_inputs(batch[0] if isinstance(batch, (tuple, list)) else batch, "batches")
                    if reference is not None:
                        inputs = inputs.to(reference.device)
                    states, skips = self._states_and_skips(inputs)
                    self._exit_logits_from(states, skips, _Mode(True, True))
                    used += 1
            if used == 0:
                fail("batches", "at least one batch of inputs", "an empty iterable")
        except BaseException:
            with torch.no_grad():
                for tensor, old in zip(tensors, saved):
                    tensor.copy_(old)
            raise
        finally:
            for m, momentum in zip(skip_norms, momenta):
                m.momentum = momentum
            self.train(was_training)
        return used

    def synchronise_batch_norm(self) -> None:
        super().synchronise_batch_norm()
        self._synced_exit_statistics = True
        self._plain_modules.clear()

    # -------------------------------------------------------------------------------- checks
    def _check_exit_index(self, name: str, k) -> int:
        k = integer(name, k, minimum=0)
        if k > self.depth:
            fail(name, f"an exit index in 0..{self.depth}", k)
        return k

    def _check_state(self, k: int, x_k) -> Tensor:
        """x_k batched like the inputs, with the channels of the first layer that reads it where that layer is
        known (the first entry of an ``nn.Sequential`` branch or head: a convolution, BatchNorm or Linear)."""
        width = None
        first = next(_leaves(self.blocks[k].branch if k < self.depth else self.head, ""), (None, None))[1]
        if type(first) in _CONVS:
            width = first.in_channels
        elif isinstance(first, _BatchNorm):
            width = first.num_features
        elif isinstance(first, nn.Linear):
            width = first.in_features
        if not isinstance(x_k, Tensor) or x_k.dim() != len(self.input_shape) + 1 or (
                width is not None and x_k.shape[1] != width):
            channels = "C" if width is None else str(width)
            fail("x_k", f"a batch of states x_{k} ({len(self.input_shape) + 1} dimensions, {channels} channels)", x_k)
        return x_k

    def extra_repr(self) -> str:
        return (f"architecture={self.architecture!r}, depth={self.depth}, projections={self.projections}, exits={self.exits!r}, "
                f"num_classes={self.num_classes}, parameters={self.parameter_count()}")
