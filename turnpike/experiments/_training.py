r"""One training run of a residual network with intermediate-output stage costs, shared by ``turnpike resnet54``
(the 2025 paper's pre-activation ResNet-54) and ``turnpike train`` (any residual network).

The network is a :class:`~turnpike.systems.ModuleSystem` with exits (``PreActResNet`` or
``ResidualNetwork``), trained through the same ``OCP`` + ``solve_ocp`` as every other system, with
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
import json
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from .. import _checks
from .._costs import CrossEntropy, InputPenalty
from .._distributed import is_main_process, world
from .._ocp import OCP
from .._runs import (claim_run_folder, holds_run, read_json, stored_settings, write_atomically, write_metrics,
                     write_run_config)
from ..results import Status
from .._solve import solve_ocp
from ..backends import COMPILE_MODES, MODULE_METHODS, learning_rate
from ..data import IMAGE_DATASETS, augment, load_image_tensors, normalise
from ..systems._early_exit import early_exit_curve

#: data sets of digits and clothes: no horizontal flip (a flipped digit is another symbol)
_NO_FLIP = ("mnist", "fashion-mnist")
#: the config class of each command that trains such a run (filled by TrainingRecipe's subclasses)
_CONFIGS: dict = {}


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
    milestones: tuple = (82, 123)        # epochs after which the lr is divided by 10
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

    #: the command whose run folders hold this config (set by ``class X(TrainingRecipe, command=...)``)
    command = None
    #: data sets the command accepts
    datasets = IMAGE_DATASETS
    #: the settings that define the data, the architecture and the weight decay: Theorem 1 compares a
    #: network with SubResNets trained from scratch only where these are the same
    architecture_fields = ("dataset", "train_subset", "weight_decay")

    def __init_subclass__(cls, *, command: str, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.command = command
        _CONFIGS[command] = cls

    def __post_init__(self):
        _checks.choice("dataset", self.dataset, self.datasets)
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


def _tensorboard_writer(folder: Path):
    """``torch.utils.tensorboard.SummaryWriter`` on ``folder``; a clear error without the package."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        _checks.fail("tensorboard", "the tensorboard package installed (pip install tensorboard)",
                     "it missing (the per-epoch log.jsonl is written without it)")
    return SummaryWriter(log_dir=str(folder))


class _EpochLog:
    """Per-epoch JSON lines (objective, lr, time, images/s) from the solver's callback, and the
    same scalars to TensorBoard when a writer is given.

    One line per epoch, also across stops: a resumed run repeats the steps after its checkpoint, so
    an epoch logged before the stop is logged again and its new line replaces the old one (the file is
    rewritten atomically). ``previous`` is the checkpoint's J history: when a stop split an epoch,
    the J of its steps before the stop come from there, so its mean is the uninterrupted run's."""

    def __init__(self, path: Path, options: dict, steps: int, per_epoch: int, count: int, resume: bool,
                 tensorboard=None, previous=()):
        self.path, self.options, self.steps, self.per_epoch, self.count = path, options, steps, per_epoch, count
        self.tensorboard, self.previous = tensorboard, list(previous)
        if not resume and path.exists():
            path.unlink()
        self.values, self.started = [], time.perf_counter()

    def __call__(self, step, value, module) -> None:
        if not self.values and step % self.per_epoch:       # resumed inside an epoch: its earlier steps' J
            self.values = self.previous[step - step % self.per_epoch:step]
        self.values.append(value)
        if (step + 1) % self.per_epoch:
            return
        seconds = time.perf_counter() - self.started
        epoch = (step + 1) // self.per_epoch
        line = {"epoch": epoch, "step": step + 1, "objective": float(np.mean(self.values)),
                "lr": learning_rate(self.options, step, self.steps),     # the lr of the epoch's last step
                "epoch_time_s": seconds, "images_per_s": self.count / seconds}
        kept = [text for text in (self.path.read_text().splitlines() if self.path.exists() else [])
                if json.loads(text)["epoch"] < epoch]
        write_atomically(self.path, lambda stream: stream.write("".join(f"{text}\n" for text in
                                                                       [*kept, json.dumps(line)])), "w")
        if self.tensorboard is not None:
            for key in ("objective", "lr", "epoch_time_s", "images_per_s"):
                self.tensorboard.add_scalar(f"train/{key}", line[key], epoch)
            self.tensorboard.flush()
        self.values, self.started = [], time.perf_counter()


def _objective_history(checkpoint: Path) -> list:
    """J of every step before a run's checkpoint (empty without one)."""
    try:
        return list(torch.load(checkpoint, map_location="cpu", weights_only=True)["history"]["objective"])
    except Exception:     # noqa: BLE001 (none, or unreadable: the solve's resume says what is wrong with it)
        return []


def _evaluate_pruned(solution, depth, data, config) -> dict:
    """Test accuracy and size of the SubResNet-``depth`` cut at the turnpike."""
    sub = solution.prune(depth).to(config.device).eval()
    correct = 0
    with torch.no_grad():
        for images, labels in EvaluationBatches(data, config.device, channels_last=config.channels_last):
            correct += int((sub(images).argmax(-1).cpu() == labels).sum())
    return {"depth": depth, "test_accuracy": correct / data.split_size("test"), "parameters": sub.parameter_count(),
            "multiply_adds": sub.exit_costs(*data.image_size)["network"]}


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


def _solve_settings(config: TrainingRecipe, data) -> dict:
    """What the run's training and its fine-tuning share: batches, augmentation, device and format."""
    count = data.split_size("train")
    batch = min(config.batch_size, count)
    test, labels = data.inputs("test")
    return dict(batch_size=batch, checkpoint_every=-(-count // batch), seed=config.seed, device=config.device,
                test_data=test if labels is None else (test, labels), normalise=(data.mean, data.std),
                augment=config.augment_batch,
                amp=config.amp, channels_last=config.channels_last, compile=config.compile,
                cuda_graph=config.cuda_graph, sync_batchnorm=config.sync_batchnorm)


def _sgd_options(config: TrainingRecipe, per_epoch: int) -> dict:
    """The paper's SGD schedule in steps, every option of the method given (the log reads the lr from it)."""
    milestones = tuple(m * per_epoch for m in config.milestones)
    return {**MODULE_METHODS["sgd"].defaults, "lr": config.lr, "momentum": config.momentum,
            "schedule": "multistep" if milestones else "constant", "milestones": milestones}


#: how a solve stops just after writing its checkpoint: the run is unfinished and --resume continues it
RESUMABLE_STOPS = (Status.TIME_LIMIT, Status.INTERRUPTED)
#: settings that may change when a run is resumed (they do not change its result; train's initial ``weights``
#: are replaced by the checkpoint's)
RESUMABLE = ("time_limit_s", "device", "data_dir", "tensorboard", "compile", "cuda_graph", "weights")
#: what a run writes into its folder: ``overwrite`` removes these, and nothing else there
RUN_FILES = ("config.json", "metrics.json", "log.jsonl", "checkpoint.pt", "finetune_checkpoint.pt", "network.pt",
             "*.png", "early_exit.json", "tensorboard", "pruned-*.pt2", "pruned-*.json")



def run_training(config: TrainingRecipe, out=None, *, plots: bool = True, resume: bool = False,
                 overwrite: bool = False, progress: bool = True) -> dict:
    """Train the network ``config`` describes, write its run folder ``out`` (none if None), return its metrics.

    A folder that holds a run is refused unless ``resume`` (continue it; every setting but
    :data:`RESUMABLE` must match) or ``overwrite`` (its run files are removed first)."""
    _checks.instance("config", config, TrainingRecipe, "a training config (ResNet54Config, TrainConfig)")
    command = config.command
    out = Path(out) if out is not None else None
    if resume and overwrite:
        _checks.fail("overwrite", "False with resume=True (continue the run or replace it, not both)", overwrite)
    if config.sync_batchnorm and world()[1] == 1:
        _checks.fail("sync_batchnorm", "it only inside a process group of several ranks (torchrun "
                     "--nproc-per-node K > 1)", "it in one process")
    continues = resume and out is not None and holds_run(out)     # config.json is written once, at the start
    created = out is not None and not out.exists()
    if out is not None and (is_main_process() or not overwrite):    # rank 0 alone removes an overwritten run's files
        claim_run_folder(out, config, command=command, resume=resume, overwrite=overwrite, resumable=RESUMABLE,
                         run_files=RUN_FILES, writes=is_main_process())
    started = time.perf_counter()              # the time limit covers training and fine-tuning
    try:
        data = config.load_data()
        net = config.build_network(data)
        ocp = problem(config, net, data)
    except BaseException:
        # data or model refused: a folder this run created stays no empty leftover that looks like a run
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        raise
    data_fingerprint = data.fingerprint()
    if continues:
        _check_same_data(out, data_fingerprint)
    settings = _solve_settings(config, data)
    per_epoch = settings["checkpoint_every"]
    options = _sgd_options(config, per_epoch)
    # under torchrun every rank trains its share of each batch, and only rank 0 writes the folder
    writes = out is not None and is_main_process()
    tensorboard = _tensorboard_writer(out / "tensorboard") if writes and config.tensorboard else None
    log = (_EpochLog(out / "log.jsonl", options, config.epochs * per_epoch, per_epoch, data.split_size("train"),
                     resume, tensorboard, previous=_objective_history(out / "checkpoint.pt") if resume else ())
           if writes else None)
    if writes and not continues:
        write_run_config(out, config, command=command, parameters=net.parameter_count(), world_size=world()[1],
                         data_fingerprint=data_fingerprint)
    solution = solve_ocp(
        ocp, method="sgd", steps=config.epochs * per_epoch, options=options,
        checkpoint=out / "checkpoint.pt" if out is not None else None, resume=resume,
        time_limit=config.time_limit_s, progress=progress, callback=log, **settings)
    metrics = summarise(solution, config, data, per_epoch)
    if config.finetune_epochs and metrics["pruned"] and solution.status not in RESUMABLE_STOPS:
        left = None if config.time_limit_s is None else max(0.0, config.time_limit_s - (time.perf_counter() - started))
        _, tuned = finetune_pruned(
            solution.prune(metrics["pruned"]["depth"]), config, data, out=out,   # every rank: the same checkpoints
            resume=resume, progress=progress, time_limit=left)
        metrics["pruned"]["finetuned"] = tuned
        if tuned["status"] in RESUMABLE_STOPS:    # the run is not finished: --resume continues the fine-tuning
            metrics["status"], metrics["signal"] = tuned["status"], tuned.get("signal")
            why = "at the time limit" if tuned["status"] == Status.TIME_LIMIT else f"by {tuned['signal']}"
            metrics["message"] = (f"fine-tuning stopped {why} after {tuned['epochs_done']} of "
                                  f"{tuned['epochs']} epochs; the same command with --resume continues it")
    if tensorboard is not None:
        for key in ("test_accuracy", "train_accuracy"):
            tensorboard.add_scalar(f"final/{key}", metrics[key], metrics["epochs_done"])
        for k, (loss, accuracy) in enumerate(zip(metrics["exit_test_loss"], metrics["exit_test_accuracy"])):
            tensorboard.add_scalar("exits/test_loss", loss, k)           # the curve of Fig. 2-3 over k
            tensorboard.add_scalar("exits/test_accuracy", accuracy, k)
        tensorboard.close()
    if writes:
        _save_network(out / "network.pt", solution.network, data)
        write_metrics(out, metrics, RUN_FILES)
        if plots:
            from ._conv_plots import resnet54_figures
            metrics["figures"] = [str(p) for p in resnet54_figures(metrics, out)]
            write_metrics(out, metrics, RUN_FILES)
    return metrics


def _check_same_data(out: Path, fingerprint: str) -> None:
    """A resumed run reads the images and labels it was trained on: ``--data`` may move (a folder copied
    elsewhere), its content may not (another folder of the same shape would train on other data)."""
    stored = read_json(out / "config.json", "the run's config.json").get("data_fingerprint")
    if stored is not None and stored != fingerprint:      # (runs written before it have none: not checked)
        raise ValueError(f"data_dir: expected the images and labels the run in {out} was trained on (fingerprint "
                         f"{stored}), got other data (fingerprint {fingerprint}): resume with the run's data, or "
                         "start a new run (another out folder, or overwrite)")


def finetune_pruned(network, config: TrainingRecipe, data, *, out=None, resume=False, progress=False,
                    time_limit=None) -> tuple:
    """Train a pruned SubResNet ``config.finetune_epochs`` more epochs: plain cross-entropy and the run's
    weight decay (standard training, Definition 1's objective), at the run's last learning rate, with
    the run's batches and augmentation. Returns (the network, {"epochs", "lr", "test_accuracy", "status",
    "epochs_done"}); ``time_limit`` (seconds) stops it at the first epoch end past it (status "time_limit").

    Pruning at the turnpike drops the blocks whose residuals are small but not zero; a few epochs let
    the kept blocks and the head absorb what they contributed (the outlook of the 2025 paper, Sec. 3).
    ``out``: the run folder, which receives ``finetune_checkpoint.pt`` (``resume`` continues it).
    """
    settings = {**_solve_settings(config, data), "seed": config.seed + 1}
    per_epoch = settings["checkpoint_every"]
    steps = config.epochs * per_epoch          # the run's schedule at its last step (milestones past it never applied)
    lr = learning_rate(_sgd_options(config, per_epoch), steps - 1, steps)
    loss = CrossEntropy(num_classes=data.num_classes)
    ocp = OCP(network.train(), *data.inputs("train"), stage_cost=InputPenalty(config.weight_decay / 2),
              terminal_cost=loss)
    solution = solve_ocp(
        ocp, method="sgd", steps=config.finetune_epochs * per_epoch, options={"lr": lr, "momentum": config.momentum},
        checkpoint=Path(out) / "finetune_checkpoint.pt" if out is not None else None, resume=resume,
        time_limit=time_limit, progress=progress, **settings)
    return solution.network, {"epochs": config.finetune_epochs, "lr": lr, "test_accuracy": solution.accuracy("test"),
                              "status": str(solution.status), "signal": solution.extra.get("signal"),
                              "epochs_done": _steps_taken(solution) // per_epoch}


def _steps_taken(solution) -> int:
    """The optimiser steps a solve took: a stop at a checkpoint evaluated (not updated) the next epoch's first."""
    return len(solution.history["step"]) - (solution.status in RESUMABLE_STOPS)


def _save_network(path, network, data) -> None:
    """The evaluated network (its exits' statistics recalibrated where they were not trained), atomically."""
    state = {"state_dict": network.state_dict(), "channels": data.channels, "num_classes": data.num_classes}
    write_atomically(path, lambda stream: torch.save(state, stream), "wb")


def _commands(command: str | None) -> str:
    """"`turnpike resnet54`", or every training command's name for None."""
    return " or ".join(f"`turnpike {name}`" for name in ([command] if command else _CONFIGS))


def _run_file(folder, name: str, command: str | None = None) -> Path:
    path = Path(folder) / name
    if not path.is_file():
        _checks.fail("folder", f"a finished {_commands(command)} run folder with {name}", str(folder))
    return path


def run_config(folder, *, command: str | None = None) -> TrainingRecipe:
    """The config a run folder of ``turnpike resnet54`` or ``turnpike train`` was trained with (its
    ``config.json``), as the command's config class; ``command`` requires that command's folder."""
    path = _run_file(folder, "config.json", command)
    stored = read_json(path, "the config.json of a training run")
    settings = stored.get("config") if isinstance(stored, dict) else None
    made_by = stored.get("command", "resnet54") if isinstance(stored, dict) else None
    kind = _CONFIGS.get(made_by)
    if kind is None or not isinstance(settings, dict) or command not in (None, made_by):
        by = made_by if isinstance(made_by, str) else "another program"
        _checks.fail("folder", f"a {_commands(command)} run folder", f"{folder}, whose config.json was written by {by}")
    settings = stored_settings(settings, kind, f"folder: {path}")    # settings added since: their defaults
    settings["milestones"] = tuple(settings["milestones"])
    return kind.from_stored(settings)


def load_run_network(folder, *, device="cpu", command: str | None = None):
    """The network a finished run folder holds (``network.pt``), in eval mode and the run's memory format, as
    evaluated for its metrics: e.g. for :func:`turnpike.early_exit_predict` or ``subresnet(M)``. A missing or
    unreadable ``config.json`` or ``network.pt``, or weights of another network, is a ValueError naming the
    file."""
    device = _checks.device("device", device)
    config = run_config(folder, command=command)
    path = _run_file(folder, "network.pt", command)
    saved = f"the network a finished `turnpike {config.command}` run saved"
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as error:                         # noqa: BLE001 (truncated, not a torch file, ...)
        raise ValueError(f"{path}: expected {saved}, got an unreadable file ({type(error).__name__}: "
                         f"{error})") from None
    if not isinstance(state, dict) or not {"state_dict", "channels", "num_classes"} <= set(state):
        raise ValueError(f"{path}: expected {saved} (a dict with state_dict, channels and num_classes), got "
                         f"{sorted(state) if isinstance(state, dict) else type(state).__name__}")
    shape = SimpleNamespace(channels=state["channels"], num_classes=state["num_classes"])
    network = config.build_network(shape, initial_weights=False).to(device)
    try:
        network.load_state_dict(state["state_dict"])
    except (RuntimeError, TypeError, AttributeError) as error:
        raise ValueError(f"{path}: expected the weights of the network its config.json describes, got others "
                         f"({str(error).splitlines()[0]})") from None
    if config.channels_last:         # as it was trained: channels-last inference is 1.6x NCHW's on a CPU
        network.to(memory_format=torch.channels_last)
    return network.eval()


#: confidence thresholds of the early-exit curve in a run's metrics (1: the full network)
EARLY_EXIT_THRESHOLDS = (0.5, 0.8, 0.9, 0.95, 0.99, 1.0)


def summarise(solution, config, data, per_epoch) -> dict:
    train_loss = solution.loss_per_layer("train")
    eps = config.eps_fraction * max(float(train_loss[0] - train_loss.min()), 1e-12)
    layer = solution.turnpike_layer(eps)
    taken = _steps_taken(solution)
    epochs = max(taken // per_epoch, 1)
    metrics = {
        "status": str(solution.status), "message": solution.message, "signal": solution.extra.get("signal"),
        "objective": solution.objective,
        "exit_train_loss": train_loss, "exit_test_loss": solution.loss_per_layer("test"),
        "exit_train_accuracy": solution.accuracy_per_layer("train"),
        "exit_test_accuracy": solution.accuracy_per_layer("test"),
        "output_residual_norms": solution.output_residual_norms,
        "branch_parameter_norms": solution.branch_parameter_norms,
        "test_accuracy": solution.accuracy("test"), "train_accuracy": solution.accuracy("train"),
        "parameters": solution.network.parameter_count(), "depth": solution.depth,
        "multiply_adds": solution.network.exit_costs(*data.image_size)["network"],   # per image
        "eps": eps, "turnpike_layer": layer,
        "pruned": _evaluate_pruned(solution, layer, data, config) if layer is not None else None,
        "train_time_s": solution.wall_time_s, "epoch_time_s": solution.wall_time_s / epochs,
        "images_per_s": epochs * data.split_size("train") / max(solution.wall_time_s, 1e-9),
        "epochs": config.epochs, "epochs_done": taken // per_epoch, "training_step": solution.extra["training_step"],
        **config.describe(), "dataset": data.name,
        "early_exit": _early_exit(solution.network, data, config),
    }
    return metrics


def _early_exit(network, data, config) -> dict:
    """Test accuracy against mean blocks executed and compute over ``EARLY_EXIT_THRESHOLDS`` (no timing)."""
    batches = EvaluationBatches(data, config.device, channels_last=config.channels_last)
    curve = early_exit_curve(network, batches, None, EARLY_EXIT_THRESHOLDS)
    return {key: curve[key] for key in ("thresholds", "accuracy", "mean_blocks", "mean_compute")}
