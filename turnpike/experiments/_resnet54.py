r"""The 2025 stage-cost paper's ResNet-54 experiments (Sec. 3, App. A.1), as one reusable run.

A pre-activation ResNet (:func:`~turnpike.preact_resnet`) trained by the shared run of
:mod:`._training` (objective (3), the paper's recipe as :class:`TrainingRecipe`'s defaults, ``_recipe.py``).
``subresnet=M`` trains the SubResNet-M architecture from scratch (Definition 1). He et al.'s
weight decay λ = 1e-4 for this network is the paper's Table 2–3 value.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import _checks
from ..systems._preact import STANDARD_WIDTHS, preact_resnet, truncated_blocks_per_stage
from ..systems._residual import ResidualNetwork
from ._recipe import TrainingRecipe
from ._training import run_training

__all__ = ["ResNet54Config", "build_network", "load_data", "run_resnet54"]

_DEFAULT_WIDTH = {"cifar10": 64, "cifar100": 64, "mnist": 32, "fashion-mnist": 32}


@dataclass
class ResNet54Config(TrainingRecipe):
    """A ``turnpike resnet54`` run: the recipe's settings and the pre-activation network's shape."""

    command = "resnet54"

    arch: str = "standard"               # standard (16/32/64) | homogeneous
    width: int | None = None             # homogeneous width (default 64 CIFAR, 32 MNIST-like)
    blocks_per_stage: int = 18           # 18 → ResNet-54 (He et al.'s ResNet-110)

    architecture_fields = TrainingRecipe.architecture_fields + ("arch", "width", "blocks_per_stage")

    def __post_init__(self):
        super().__post_init__()
        _checks.choice("arch", self.arch, ("standard", "homogeneous"))
        _checks.integer("blocks_per_stage", self.blocks_per_stage, minimum=1)
        if self.width is not None:
            _checks.integer("width", self.width, minimum=1)

    def build_network(self, data, *, initial_weights: bool = True) -> ResidualNetwork:
        """The configured network (seeded), or its SubResNet-M architecture."""
        torch.manual_seed(self.seed)
        widths = (self.width or _DEFAULT_WIDTH[self.dataset],) * 3 if self.arch == "homogeneous" else STANDARD_WIDTHS
        common = dict(widths=widths, in_channels=data.channels, num_classes=data.num_classes)
        net = preact_resnet(blocks_per_stage=self.blocks_per_stage, exits=self.variant, **common)
        if self.subresnet is not None:
            # built after the whole network, from the generator it leaves, as the weights of earlier runs were
            counts = truncated_blocks_per_stage((self.blocks_per_stage,) * 3,
                                                self._checked_subresnet_depth(net.depth))
            net = preact_resnet(blocks_per_stage=counts, exits="standard" if self.variant == "standard" else "ws",
                                **common)
        return net

    def network_depth(self) -> int:
        return 3 * self.blocks_per_stage          # three stages

    def architecture_label(self) -> str:
        return f"{self.arch} architecture"


def build_network(config: ResNet54Config, data) -> ResidualNetwork:
    """The configured network (seeded), or its SubResNet-M architecture."""
    return config.build_network(data)


def load_data(config: ResNet54Config):
    """The run's images (its train/test subsets drawn from its seed), on the CPU."""
    return config.load_data()


def run_resnet54(config: ResNet54Config | None = None, out=None, *, plots: bool = True, resume: bool = False,
                 overwrite: bool = False, progress: bool = True, on_epoch=None) -> dict:
    """Train one network of the paper's comparison, write its run folder, return its metrics.

    A folder that holds a run is refused unless ``resume`` (continue it; every setting but
    :data:`RESUMABLE` must match) or ``overwrite`` (its run files are removed first)."""
    config = ResNet54Config() if config is None else _checks.instance("config", config, ResNet54Config,
                                                                      "a ResNet54Config")
    return run_training(config, out, plots=plots, resume=resume, overwrite=overwrite, progress=progress,
                        on_epoch=on_epoch)

