"""The parts of a :class:`~turnpike.ResidualNetwork`: its blocks, and what its exit paths are made of (the
operations, the per-exit statistics tables, the exit variants)."""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import NamedTuple, Optional

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

#: the exit variants: "ws" shares every parameter with the backbone, "full" gives each exit its own copies,
#: "standard" is "ws" trained without the stage cost
EXIT_VARIANTS = ("standard", "ws", "full")


class ResidualBlock(nn.Module):
    r"""One residual block x_{k+1} = a(s(x_k) + F(x_k)): ``branch`` F, ``skip`` s (None: the identity) and the
    post-addition ``activation`` a (None: none). Its skip path, what it computes when F = 0, is a ∘ s.

    The modules are held, not copied: a block built from a user's modules trains their parameters.
    """

    def __init__(self, branch: nn.Module, skip: Optional[nn.Module] = None, activation: Optional[nn.Module] = None):
        super().__init__()
        for name, module, optional in (("branch", branch, False), ("skip", skip, True),
                                       ("activation", activation, True)):
            if not (isinstance(module, nn.Module) or (optional and module is None)):
                raise ValueError(f"{name}: expected a torch.nn.Module{' or None' if optional else ''}, "
                                 f"got {type(module).__name__}")
        self.branch = branch
        self.skip = nn.Identity() if skip is None else skip
        self.activation = activation

    @property
    def projection(self) -> bool:
        """Whether the skip is more than the identity (a projection, a subsampling, ...)."""
        return not isinstance(self.skip, nn.Identity)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_parts(x)[0]

    def forward_parts(self, x: Tensor) -> tuple:
        """(x_{k+1}, s(x_k)): the block's output and its skip's output."""
        skip = self.skip(x)
        out = skip + self.branch(x)
        return (out if self.activation is None else self.activation(out)), skip


@dataclass(frozen=True)
class _Op:
    """One operation of an exit path; ``path`` names its module inside the network, ``position`` is q for the
    skip path of block q and N for the head; ``stats`` indexes ``exit_statistics`` (norms), ``copies`` maps a
    parameter name to its index in ``exit_copies`` (full exits: row e, flattened, is exit e's copy)."""
    kind: str
    path: str
    position: int
    stats: Optional[int] = None
    copies: tuple = ()


class _Mode(NamedTuple):
    batch_statistics: bool    # normalise by the batch's statistics (training, recalibration)
    cumulative: bool          # running statistics as the exact average over the batches (momentum None)


class _ExitStatistics(nn.Module):
    """Running statistics of one BatchNorm for ``rows`` exits (row e: exit e), initialised as the module's own."""

    def __init__(self, norm: _BatchNorm, rows: int):
        super().__init__()
        features = norm.num_features
        mean = norm.running_mean if norm.running_mean is not None else torch.zeros(features)
        var = norm.running_var if norm.running_var is not None else torch.ones(features)
        self.register_buffer("running_mean", mean.detach().expand(rows, features).clone())
        self.register_buffer("running_var", var.detach().expand(rows, features).clone())
        self.register_buffer("num_batches_tracked", torch.zeros(rows, dtype=torch.long, device=mean.device))

    def reset(self) -> None:
        self.running_mean.zero_()
        self.running_var.fill_(1.0)
        self.num_batches_tracked.zero_()


def _leaves(module: nn.Module, prefix: str):
    """(path, module) of the operations ``module`` applies in order: an ``nn.Sequential`` (exactly that class,
    whose forward is known) is opened, nested ones too; anything else is one operation."""
    if type(module) is nn.Sequential:
        for name, child in module.named_children():
            yield from _leaves(child, f"{prefix}.{name}")
    else:
        yield prefix, module


def _out_of_place(module: nn.Module) -> nn.Module:
    """``module`` itself, or a shallow copy with ``inplace=False`` (an exit path must not overwrite a state)."""
    if getattr(module, "inplace", False) is True:
        module = copy.copy(module)
        module.inplace = False
    return module
