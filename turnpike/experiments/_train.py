r"""``turnpike train``: the 2025 paper's method for any residual network, as one reusable run.

The user's network (a built-in model of :mod:`turnpike.models`, or a factory ``PACKAGE.MODULE:FACTORY`` /
``FILE.py:FACTORY`` returning a module with torchvision's ResNet layout or a :class:`~turnpike.ResidualNetwork`)
becomes a module system with skip-path exits (:func:`turnpike.residual_network`) and is trained by the shared
run of :mod:`._training`: objective (3) with ``variant`` "ws" / "full" exits, or standard training, on a
built-in data set or an image folder (one sub-folder per class), with the same run folder, checkpoints,
turnpike, pruning and early-exit curve as ``turnpike resnet54``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import _checks
from ..backends._module_data import checked_workers
from ..data import IMAGE_DATASETS, image_folder, image_folder_streams, random_flip, random_resized_crop
from ..data._folder import folder_channels
from ..data._images import available_data
from ..models import build_model, load_weights, model_factory
from ..systems import ResidualNetwork, residual_network
from ._recipe import TrainingRecipe
from ._training import run_training

__all__ = ["TrainConfig", "run_train"]

#: how training batches are cropped (``TrainConfig.crop``)
CROPS = ("padded", "resized", "none")
#: image channels of the built-in data sets
_CHANNELS = {"cifar10": 3, "cifar100": 3, "mnist": 1, "fashion-mnist": 1}


@dataclass
class TrainConfig(TrainingRecipe):
    """A ``turnpike train`` run: the recipe's settings (``dataset`` "folder": ``data_dir`` is an image folder),
    the model and how a folder's images are read."""

    command = "train"

    dataset: str = "folder"              # folder (an image folder, data_dir) | cifar10 | cifar100 | mnist | ...
    model: str = "resnet18"              # a built-in model, PACKAGE.MODULE:FACTORY or FILE.py:FACTORY
    model_options: dict = dataclasses.field(default_factory=dict)   # keywords of the model's factory
    image_size: int = 32                 # folder: images resized (centre crop) to image_size × image_size
    image_channels: int | None = None    # folder: 3 (RGB) or 1 (grey); None: 1 if its images are grey, else 3
    test_fraction: float | None = None   # folder without train/ and val/: the share of each class held out
    flip: bool | None = None             # random horizontal flips (None: CIFAR's; not for folders, digits, clothes)
    stream: bool = False                 # folder: read the images from the files batch by batch, not into memory
    crop: str = "padded"                 # padded (4-pixel padded random crops, CIFAR's) | resized (random-resized
                                         # crops, torchvision's ImageNet recipe) | none
    weights: str | None = None           # a state_dict file loaded into the model before training (pretrained)
    weights_new: tuple = ()              # names (prefixes) of the model's tensors that may stay as initialised

    datasets = ("folder",) + IMAGE_DATASETS
    architecture_fields = TrainingRecipe.architecture_fields + ("model", "model_options", "image_size",
                                                                "image_channels", "test_fraction")

    def __post_init__(self):
        super().__post_init__()
        if self.dataset == "folder" and self.data_dir is None:
            _checks.fail("data_dir", "an image folder (one sub-folder per class) for the dataset 'folder', or a "
                         f"built-in data set instead ({available_data()})", None)
        if not isinstance(self.model_options, dict) or not all(isinstance(k, str) for k in self.model_options):
            _checks.fail("model_options", "a dict of keyword arguments of the model's factory", self.model_options)
        self.model = self._absolute(self.model)
        if self.weights is not None:
            if not isinstance(self.weights, (str, Path)):
                _checks.fail("weights", "the path of a weights file, or None", self.weights)
            self.weights = str(Path(self.weights).resolve())     # a run folder's config finds it from anywhere
        if isinstance(self.weights_new, str) or not all(isinstance(p, str) and p for p in self.weights_new):
            _checks.fail("weights_new", "a tuple of tensor names or name prefixes (e.g. ('fc',))", self.weights_new)
        self.weights_new = tuple(self.weights_new)
        if self.weights_new and self.weights is None:
            _checks.fail("weights_new", "names only with weights (--weights FILE) to load the rest from",
                         ",".join(self.weights_new))
        model_factory(self.model)             # resolves now: a wrong name fails before any data is read
        _checks.integer("image_size", self.image_size, minimum=1)
        if self.image_channels is not None:
            _checks.choice("image_channels", self.image_channels, (1, 3))
        if self.test_fraction is not None:
            _checks.real("test_fraction", self.test_fraction, minimum=0.0, maximum=1.0, strict_min=True,
                         strict_max=True)
        if self.flip is not None:
            _checks.boolean("flip", self.flip)
        _checks.choice("crop", self.crop, CROPS)
        if _checks.boolean("stream", self.stream) and self.dataset != "folder":
            _checks.fail("stream", f"False for the built-in data set {self.dataset!r} (read into memory; streaming "
                                   "reads an image folder, --data DIR)", self.stream)

    def augment_batch(self, images, generator):
        """The training batch's crops as ``crop`` says, then random flips where :attr:`flips`."""
        if self.crop == "padded":
            return super().augment_batch(images, generator)
        if self.crop == "resized":
            images = random_resized_crop(images, generator=generator)
        return random_flip(images, generator) if self.flips else images

    @staticmethod
    def _absolute(model):
        """FILE.py:FACTORY with FILE absolute, so that a run folder's config rebuilds it from anywhere."""
        if isinstance(model, str) and ".py:" in model:
            file, _, factory = model.rpartition(":")
            return f"{Path(file).resolve()}:{factory}"
        return model

    @property
    def flips(self) -> bool:
        """``flip``; by default not for an image folder (a flipped digit, letter or sign is another one: --flip
        for natural images), else as the recipe says for the built-in data set."""
        if self.flip is not None:
            return self.flip
        return False if self.dataset == "folder" else super().flips

    def folder_channels(self) -> int:
        """``image_channels``, or the folder's (1 if its images are grey, else 3)."""
        if self.image_channels is not None:
            return self.image_channels
        return folder_channels(self.data_dir, split=self.test_fraction)

    def load_data(self):
        """The run's images: a built-in data set or an image folder in memory, or the folder's files read
        batch by batch (``stream``; DataLoader workers as the module backend's "auto": 0 on a CPU)."""
        if self.dataset != "folder":
            return super().load_data()
        if self.stream:
            workers = checked_workers("auto", torch.device(self.device))
            data = image_folder_streams(self.data_dir, size=self.image_size, split=self.test_fraction,
                                        channels=self.folder_channels(), workers=workers)
        else:
            data = image_folder(self.data_dir, size=self.image_size, split=self.test_fraction,
                                channels=self.folder_channels())
        if self.train_subset or self.test_subset:
            data = data.subset(train=self.train_subset, test=self.test_subset, seed=self.seed)
        return data

    def build_network(self, data, *, initial_weights: bool = True) -> ResidualNetwork:
        """The user's model (seeded; ``weights`` loaded unless not ``initial_weights``) as a
        :class:`ResidualNetwork` with this run's exits, or (``subresnet`` M) its SubResNet-M architecture: the
        first M blocks and the remaining skip paths before the head, as initialised (Definition 1)."""
        return self._built(data, initial_weights=initial_weights)[0]

    def build_initial_network(self, data) -> tuple:
        """(:meth:`build_network`, ``{"weights": what was loaded from weights}`` or ``{}``)."""
        network, report = self._built(data, initial_weights=True)
        if report:
            self._check_weights_cover(report)
        return network, ({"weights": report} if report else {})

    def _check_weights_cover(self, report: dict) -> None:
        """Every tensor of the model loaded from ``weights`` except those under ``weights_new``: a file of
        another network, or with missing parts, is not trained on silently."""
        new = [name for name in report["kept"]
               if not any(name == p or name.startswith(p + ".") for p in self.weights_new)]
        if new:
            total = report["loaded"] + len(report["kept"])
            listed = "; ".join(f"{name} ({report['kept'][name]})" for name in new[:3]) + (", ..." if len(new) > 3
                                                                                          else "")
            raise ValueError(f"weights: expected a file with every tensor of the model but those under --weights-new, "
                             f"got {report['source']}, which loads {report['loaded']} of {total} and not {listed}; "
                             f"say which may stay as initialised with --weights-new PREFIX (e.g. --weights-new fc "
                             f"for a new classifier)")

    def _built(self, data, *, initial_weights: bool) -> tuple:
        network, report = self._network(data.num_classes, data.channels, initial_weights=initial_weights)
        if network.num_classes != data.num_classes:
            _checks.fail("model", f"a network with {data.num_classes} outputs, the data's classes ({self.model} "
                         f"has {network.num_classes}; give its factory a num_classes parameter)", self.model)
        if network.input_shape[0] != data.channels:
            _checks.fail("model", f"a network of {data.channels}-channel images, the data's ({self.model} takes "
                         f"{network.input_shape[0]}; give its factory an in_channels parameter)", self.model)
        if self.subresnet is not None:
            network = network.subresnet(self._checked_subresnet_depth(network.depth), exits="standard")
        return network, report

    def _network(self, num_classes: int, channels: int, *, initial_weights: bool = False) -> tuple:
        """(the user's model as a ResidualNetwork with this run's exits, what ``weights`` loaded into it or None)."""
        torch.manual_seed(self.seed)
        model = build_model(self.model, num_classes=num_classes, in_channels=channels, options=self.model_options)
        report = load_weights(model, self.weights).as_dict() if initial_weights and self.weights is not None else None
        if isinstance(model, ResidualNetwork):
            if model.exits == self.variant:
                return model, report
            # the same parts with this run's exits: one factory serves every variant (and a study's runs)
            return ResidualNetwork(model.stem, model.blocks, model.head, num_classes=model.num_classes,
                                   input_shape=model.input_shape, exits=self.variant,
                                   exit_momentum=model.exit_momentum), report
        return residual_network(model, exits=self.variant), report

    def network_depth(self) -> int:
        channels = (self.image_channels or 3) if self.dataset == "folder" else _CHANNELS[self.dataset]
        return self._network(num_classes=10, channels=channels)[0].depth    # (the depth does not depend on them)

    def network_label(self, depth: int) -> str:
        return self.model.rpartition(":")[2]           # the model's (or its factory's) name

    def architecture_label(self) -> str:
        return f"model {self.model}"

    def describe(self) -> dict:
        """The variant, SubResNet depth and model."""
        return {**super().describe(), "model": self.model}


def run_train(config: TrainConfig, out=None, *, plots: bool = True, resume: bool = False, overwrite: bool = False,
              progress: bool = True, on_epoch=None) -> dict:
    """Train the configured model, write its run folder, return its metrics (see :func:`run_training`)."""
    _checks.instance("config", config, TrainConfig, "a TrainConfig")
    return run_training(config, out, plots=plots, resume=resume, overwrite=overwrite, progress=progress,
                        on_epoch=on_epoch)
