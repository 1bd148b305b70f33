r"""One training run of a residual network with intermediate-output stage costs, shared by ``turnpike resnet54``
(the 2025 paper's pre-activation ResNet-54) and ``turnpike train`` (any residual network).

The network is a :class:`~turnpike.systems.ModuleSystem` with exits (a ``ResidualNetwork``, e.g. the paper's
``preact_resnet``), trained through the same ``OCP`` + ``solve_ocp`` as every other system, with
objective (3) of the 2025 paper:

.. math:: J = \sum_{k=0}^{N-1} γ\,L(\hat y_k) + L(\hat y) + \frac{λ}{2}\|w\|^2,

i.e. ``stage_cost = γ·CrossEntropy + InputPenalty(λ/2)``, ``terminal_cost = CrossEntropy``
(2025 convention: γ on the loss only, the weight decay unscaled). ``variant="standard"``
drops the stage loss (γ = 0; its exits are evaluated post hoc), ``"ws"`` shares the exits'
weights with the backbone, ``"full"`` gives them their own (learning rate α/γ).

:class:`TrainingRecipe` holds what every such run shares, each default defined once (the paper's
recipe: SGD lr 0.1, momentum 0.9, batch 128, 165 epochs, lr ÷ 10 after epochs 82 and 123,
γ = 0.02, λ = 1e-4); a command's config subclasses it, naming its command and saying how its
network is built. The run folder gets ``config.json``, ``metrics.json``, ``log.jsonl`` (one line per
epoch), ``checkpoint.pt`` (every epoch, atomic; ``resume=True`` continues a killed run),
``network.pt`` and the figures.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch

from .. import _checks
from .._costs import CrossEntropy, InputPenalty
from .._ocp import OCP
from ..backends import COMPILE_MODES, MODULE_METHODS
from ..data import IMAGE_DATASETS, augment, load_image_tensors, normalise
from ..results import Status

#: the learning-rate schedules of a training run
LR_SCHEDULES = ("multistep", "cosine")

#: data sets of digits and clothes: no horizontal flip (a flipped digit is another symbol)
_NO_FLIP = ("mnist", "fashion-mnist")


@dataclass
class TrainingRecipe(abc.ABC):
    """What a training run of a residual network with exits is given: data, variant, schedule, speed."""

    dataset: str = "cifar10"             # cifar10 | cifar100 | mnist | fashion-mnist
    data_dir: str | None = None          # CIFAR: folder of the python-pickle batches
    variant: str = "ws"                  # standard | ws | full
    epochs: int = 165
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    milestones: tuple = (82, 123)        # epochs after which the lr is divided by 10 (lr_schedule "multistep")
    lr_schedule: str = "multistep"       # multistep (÷10 at the milestones) | cosine (to 0 over the epochs)
    warmup_epochs: int = 0               # linear warm-up of the lr over the first epochs
    gamma: float = 0.02                  # γ, the stage-cost weight
    weight_decay: float = 1e-4           # λ of λ/2‖w‖²
    train_subset: int | None = None
    test_subset: int | None = None
    seed: int = 0
    device: str = "cpu"
    amp: bool = False                    # bf16 autocast (GPU)
    channels_last: bool = True           # channels-last memory format (1.3x the images/s of NCHW on a CPU)
    compile: str | None = None           # torch.compile mode of the training forward pass (None: eager)
    cuda_graph: bool = False             # each training step as CUDA graphs (CUDA; elsewhere the same step eagerly)
    sync_batchnorm: bool = False         # under torchrun: BN statistics of the whole batch over all ranks
    tensorboard: bool = False            # the per-epoch scalars also to out/tensorboard
    time_limit_s: float | None = None    # training + fine-tuning stop at the first epoch end past it (resume later)
    eps_fraction: float = 0.05           # ε = eps_fraction × (L_0 − min_k L_k), train exit losses
    finetune_epochs: int = 0             # train the SubResNet pruned at the turnpike this many more epochs
    subresnet: int | None = None         # train the SubResNet-M architecture from scratch (Definition 1)

    #: the command whose run folders hold this config (each config class names its own)
    command: ClassVar[str]
    #: data sets the command accepts
    datasets = IMAGE_DATASETS
    #: the settings that define the data, the architecture and the weight decay: Theorem 1 compares a
    #: network with SubResNets trained from scratch only where these are the same
    architecture_fields = ("dataset", "train_subset", "weight_decay")

    def __post_init__(self):
        _checks.choice("dataset", self.dataset, self.datasets)
        if isinstance(self.data_dir, (str, Path)) and str(self.data_dir):
            # stored absolute: the run folder's commands (resume, prune, early-exit) work from any directory
            self.data_dir = str(Path(self.data_dir).expanduser().absolute())
        _checks.choice("variant", self.variant, ("standard", "ws", "full"))
        for name in ("epochs", "batch_size"):
            _checks.integer(name, getattr(self, name), minimum=1)
        _checks.integer("finetune_epochs", self.finetune_epochs, minimum=0)
        for name in ("train_subset", "test_subset"):
            if getattr(self, name) is not None:
                _checks.integer(name, getattr(self, name), minimum=1)
        _checks.integer("seed", self.seed, minimum=0)
        _checks.real("gamma", self.gamma, minimum=0.0, strict_min=self.variant != "standard")
        _checks.real("weight_decay", self.weight_decay, minimum=0.0)
        _checks.real("eps_fraction", self.eps_fraction, minimum=0.0, strict_min=True)
        _checks.real("lr", self.lr, minimum=0.0, strict_min=True)
        _checks.real("momentum", self.momentum, minimum=0.0, maximum=1.0, strict_max=True)
        if self.time_limit_s is not None:
            _checks.real("time_limit_s", self.time_limit_s, minimum=0.0)
        for name in ("amp", "channels_last", "sync_batchnorm", "tensorboard", "cuda_graph"):
            _checks.boolean(name, getattr(self, name))
        if self.compile is not None:
            _checks.choice("compile", self.compile, COMPILE_MODES)
        self.milestones = tuple(_checks.integer("milestones", m, minimum=0) for m in self.milestones)
        if any(b <= a for a, b in zip(self.milestones, self.milestones[1:])):
            _checks.fail("milestones", "increasing epochs", ",".join(map(str, self.milestones)))
        _checks.choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        _checks.integer("warmup_epochs", self.warmup_epochs, minimum=0, maximum=self.epochs - 1)
        self.device = str(_checks.device("device", self.device))
        if self.subresnet is not None:
            _checks.integer("subresnet", self.subresnet, minimum=0)
            if self.variant != "standard":
                _checks.fail("variant", "'standard' with subresnet (a SubResNet is trained from scratch without "
                             "stage cost, Definition 1)", self.variant)

    @classmethod
    def from_stored(cls, settings: dict):
        """The config from the settings a run folder's config.json stores (JSON: lists for tuples)."""
        return cls(**settings)

    # what a command's config says about its own network
    @abc.abstractmethod
    def build_network(self, data, *, initial_weights: bool = True):
        """The configured network (seeded) for ``data`` (its ``channels`` and ``num_classes``); without
        ``initial_weights`` any pretrained weights the config names are not read (a run folder's own weights
        replace them)."""

    def build_initial_network(self, data) -> tuple:
        """(the network a run starts from, what it started from for the metrics: ``{}``, or e.g. ``{"weights":
        report}`` of the pretrained weights loaded into it)."""
        return self.build_network(data), {}

    @abc.abstractmethod
    def network_depth(self) -> int:
        """N, the residual blocks of the configured network (not of its SubResNet), without reading the data."""

    def network_label(self, depth: int) -> str:
        """How tables name the network of ``depth`` blocks, e.g. "ResNet-54"."""
        return f"ResNet-{depth}"

    def architecture_label(self) -> str:
        """The architecture in a few words, for the titles of tables."""
        return "residual network"

    def describe(self) -> dict:
        """The metrics' fields that say which network this is (e.g. the variant)."""
        return {"variant": self.variant, "subresnet": self.subresnet}

    def _checked_subresnet_depth(self, depth: int) -> int:
        """``subresnet``, checked against the network's depth N."""
        if self.subresnet > depth:
            _checks.fail("subresnet", f"a depth of at most {depth} blocks, the network's", self.subresnet)
        return self.subresnet

    @property
    def flips(self) -> bool:
        """Whether training images are flipped horizontally at random (not digits and clothes)."""
        return self.dataset not in _NO_FLIP

    def augment_batch(self, images, generator):
        """A training batch's augmentation (uint8 images on the device): random crops of the images padded
        by 4 pixels (the paper's CIFAR recipe), and random flips where :attr:`flips`."""
        return augment(images, flip=self.flips, generator=generator)

    def load_data(self):
        """The run's images (its train/test subsets drawn from its seed), on the CPU."""
        data = load_image_tensors(self.dataset, self.data_dir)
        if self.train_subset or self.test_subset:
            data = data.subset(train=self.train_subset, test=self.test_subset, seed=self.seed)
        return data


def problem(config: TrainingRecipe, net, data) -> OCP:
    """Objective (3): γ-weighted exit losses, output loss, weight decay λ/2‖w‖²."""
    loss = CrossEntropy(num_classes=data.num_classes)
    decay = InputPenalty(config.weight_decay / 2)
    stage = decay if config.variant == "standard" else config.gamma * loss + decay
    return OCP(net, *data.inputs("train"), stage_cost=stage, terminal_cost=loss)


class EvaluationBatches:
    """A run's test images as its network takes them (normalised, on ``device``, channels-last or not) with
    their labels, ``batch_size`` at a time, from memory or read from files; iterable again and again (the
    early-exit curve times each threshold on them)."""

    def __init__(self, data, device, *, channels_last: bool, batch_size: int = 512):
        self.data, self.device, self.batch_size = data, device, batch_size
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def __iter__(self):
        for images, labels in self.data.batches("test", self.batch_size):
            images = normalise(images.to(self.device), self.data.mean, self.data.std)
            yield images.contiguous(memory_format=self.memory_format), labels


def solve_settings(config: TrainingRecipe, data) -> dict:
    """What the run's training and its fine-tuning share: batches, augmentation, device and format."""
    count = data.split_size("train")
    batch = min(config.batch_size, count)
    test, labels = data.inputs("test")
    return dict(batch_size=batch, checkpoint_every=-(-count // batch), seed=config.seed, device=config.device,
                test_data=test if labels is None else (test, labels), normalise=(data.mean, data.std),
                augment=config.augment_batch,
                amp=config.amp, channels_last=config.channels_last, compile=config.compile,
                cuda_graph=config.cuda_graph, sync_batchnorm=config.sync_batchnorm)


def sgd_options(config: TrainingRecipe, per_epoch: int) -> dict:
    """The run's SGD schedule in steps (the paper's multistep, or cosine), after ``warmup_epochs`` of linear warm-up,
    every option of the method given (the log reads the lr from it)."""
    milestones = tuple(m * per_epoch for m in config.milestones) if config.lr_schedule == "multistep" else ()
    schedule = "cosine" if config.lr_schedule == "cosine" else "multistep" if milestones else "constant"
    return {**MODULE_METHODS["sgd"].defaults, "lr": config.lr, "momentum": config.momentum,
            "schedule": schedule, "milestones": milestones, "warmup_steps": config.warmup_epochs * per_epoch}


#: how a solve stops just after writing its checkpoint: the run is unfinished and --resume continues it
RESUMABLE_STOPS = (Status.TIME_LIMIT, Status.INTERRUPTED)
#: settings that may change when a run is resumed (they do not change its result; train's initial ``weights``
#: are replaced by the checkpoint's)
RESUMABLE = ("time_limit_s", "device", "data_dir", "tensorboard", "compile", "cuda_graph", "weights", "weights_new")
#: what a run writes into its folder: ``overwrite`` removes these, and nothing else there
RUN_FILES = ("config.json", "metrics.json", "log.jsonl", "checkpoint.pt", "finetune_checkpoint.pt", "network.pt",
             "*.png", "early_exit.json", "tensorboard", "pruned-*.pt2", "pruned-*.json")

#: confidence thresholds of the early-exit curve in a run's metrics (1: the full network)
EARLY_EXIT_THRESHOLDS = (0.5, 0.8, 0.9, 0.95, 0.99, 1.0)
