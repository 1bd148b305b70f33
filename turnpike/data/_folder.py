"""Image folders: one sub-folder per class, images decoded by Pillow (no torchvision needed).

The layout is torchvision's ``ImageFolder``::

    flowers/daisy/0001.jpg, flowers/daisy/0002.png, ..., flowers/tulip/0001.jpg, ...

Class names are the sub-folders' names, sorted; a class's label is its position in that order.
Every file whose name ends in one of :data:`IMAGE_EXTENSIONS` (any case), in the class folder or
below it, is an image of the class; hidden files and folders (``.DS_Store``, ``.ipynb_checkpoints``)
and other files (``README.txt``, ``labels.csv``) are skipped. Images are converted to RGB (3
channels) or grey (1) the way torchvision's loader does — ``Image.convert`` drops an alpha channel,
palettes are looked up — after turning them upright by their EXIF orientation; 16-bit grey images
keep their top 8 bits.

Two ways to use a folder:

- :func:`image_folder` decodes every image once, resized to one size, into an
  :class:`ImageFolderTensors`: the :class:`~turnpike.data.ImageTensors` that ``load_image_tensors``
  returns (uint8 train/test tensors (D, C, H, W), labels, the training split's per-channel mean and
  std), plus the class names. It is used exactly like CIFAR's: moved to the GPU once and augmented
  there.
- :class:`ImageFolderDataset` is a ``torch.utils.data.Dataset`` that decodes each image when it is
  read, for folders that do not fit in memory, with an optional random-resized-crop and horizontal
  flip drawn from (seed, epoch, index) alone: the same epoch gives the same images after a resume,
  in any order and with any number of ``DataLoader`` workers. :func:`image_folder_datasets` splits a
  folder into a training and a test ``Dataset`` exactly as :func:`image_folder` splits it.

Splits: ``train/`` + ``val/`` (or ``validation/``, ``valid/``, ``test/``) sub-folders with the same
classes, two folders named explicitly, or one folder of classes of which a fraction of each class is
held out. That choice is by a hash of (seed, file path), not by a random permutation: each image's
side depends only on its own name and its class's size, so adding images to a class moves few others.
"""
from __future__ import annotations

import dataclasses
import hashlib
import operator
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .._checks import boolean, choice, fail, integer
from ._cifar import SPLITS, ImageTensors, channel_statistics, subset_indices
from ._folder_decode import _array, _decode, _decode_all, _each, _fitted, _random_box
from ._folder_files import (_AUGMENT_STREAM, FITS, IMAGE_EXTENSIONS, TEST_FOLDERS, Samples, _folder, _pair, _pillow, _scan,
                            _size, _split, _workers)

# --- resident tensors --------------------------------------------------------------------------

@dataclass(frozen=True, eq=False, repr=False)
class ImageFolderTensors(ImageTensors):
    """An :class:`~turnpike.data.ImageTensors` read from an image folder, with its class names
    (``classes[label]``); ``subset`` and ``to`` keep them."""
    classes: tuple[str, ...] = ()

    def __post_init__(self):
        super().__post_init__()
        if not isinstance(self.classes, tuple) or len(self.classes) != self.num_classes \
                or not all(isinstance(name, str) for name in self.classes):
            fail("classes", f"a tuple of {self.num_classes} class names (one per label)", self.classes)

    def __repr__(self) -> str:
        shown = ", ".join(self.classes[:5]) + (", ..." if len(self.classes) > 5 else "")
        _, _, fields = super().__repr__().partition("(")
        return f"{type(self).__name__}({fields[:-1]}, classes=[{shown}])"


#: Pillow modes of grey images (one channel; an alpha channel beside it is dropped as in decoding)
_GREY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")


def folder_channels(path, *, split=None, seed: int = 0, sample: int = 64) -> int:
    """1 when a folder's training images are grey, else 3 (RGB): Pillow's mode of up to ``sample`` of them spread
    over the files (``path``, ``split`` as :func:`image_folder` reads them); one colour image makes it 3."""
    Image, _ = _pillow()
    _, train, _, _, _ = _split(path, split, seed)
    for file, _ in train[::max(1, len(train) // sample)][:sample]:
        try:
            with Image.open(file) as image:
                if image.mode not in _GREY_MODES:
                    return 3
        except Exception as error:                 # noqa: BLE001 (Pillow raises OSError, SyntaxError, ValueError...)
            raise ValueError(f"{file}: expected an image file Pillow can decode, got a corrupt or unsupported "
                             f"file ({type(error).__name__}: {error})") from None
    return 1


def image_folder(path, *, size, split=None, seed: int = 0, channels: int = 3, fit: str = "crop", name=None,
                 workers: int | None = None) -> ImageFolderTensors:
    """The images of a folder with one sub-folder per class, decoded and resized, as uint8 tensors.

    ``size`` is the images' (height, width), or one integer for square images; ``fit`` how each image
    gets there (see :data:`FITS`; bilinear, antialiased when shrinking). ``split`` says which images
    test:

    - None: ``path`` holds ``train/`` and one of ``val/``, ``validation/``, ``valid/``, ``test/``, each
      with the same class sub-folders;
    - (train_dir, test_dir): those two folders (relative to ``path``, or absolute);
    - a fraction in (0, 1): ``path`` holds the class folders, and round(fraction × count) images of each
      class (never all) test, chosen by a hash of (``seed``, file path): see the module docstring.

    ``channels`` is 3 (RGB) or 1 (grey). Returns an :class:`ImageFolderTensors` on the CPU: images
    (D, channels, H, W) uint8 in class order (then file path), int64 labels (the sorted class names'
    positions), the training images' per-channel mean and std in [0, 1], ``classes`` and
    ``num_classes``; ``name`` (default: the folder's name) and ``source`` (the folder). ``workers``
    threads decode (default: up to 8). Any image that cannot be decoded is a ValueError naming it.
    """
    size = _size(size)
    channels = choice("channels", channels, (1, 3))
    fit = choice("fit", fit, FITS)
    workers = _workers(workers)
    if name is not None and not isinstance(name, str):
        fail("name", "a str naming the data set, or None for the folder's name", name)
    _pillow()
    classes, train, test, train_dir, _ = _split(path, split, seed)
    root = Path(path)
    if len(classes) < 2:
        raise ValueError(f"{train_dir}: expected at least 2 class sub-folders (a classifier needs two classes), "
                         f"got 1 ({classes[0]!r})")
    train_images = _decode_all(train, size, channels, fit, workers)
    test_images = _decode_all(test, size, channels, fit, workers)
    mean, std = channel_statistics(train_images)
    labels = [torch.tensor([label for _, label in samples], dtype=torch.int64) for samples in (train, test)]
    return ImageFolderTensors(name if name is not None else root.resolve().name, train_images, labels[0],
                              test_images, labels[1], len(classes), mean, std, str(root), classes)


# --- streamed dataset --------------------------------------------------------------------------

def _settings(size, channels, fit, augment, crop_scale, crop_ratio, flip, seed) -> dict:
    """An ImageFolderDataset's settings, checked (Pillow's presence too)."""
    settings = dict(
        size=_size(size), channels=choice("channels", channels, (1, 3)), fit=choice("fit", fit, FITS),
        augment=boolean("augment", augment),
        crop_scale=None if crop_scale is None else _pair(
            "crop_scale", crop_scale, low=0.0, high=1.0,
            expected="None or (low, high) area fractions, 0 < low <= high <= 1"),
        crop_ratio=_pair("crop_ratio", crop_ratio, low=0.0, high=None,
                         expected="(low, high) width/height ratios, 0 < low <= high"),
        flip=boolean("flip", flip), seed=integer("seed", seed, minimum=0))
    _pillow()
    return settings


class ImageFolderDataset(torch.utils.data.Dataset):
    """A ``torch.utils.data.Dataset`` of (uint8 image (C, H, W), label) read from an image folder as
    each item is asked for, for folders that do not fit in memory.

    ``path`` holds one sub-folder per class (see :func:`image_folder`; ``classes``, if given, are the
    class names it must hold, e.g. the training folder's for a test folder). Without ``augment``
    each image is resized as ``fit`` says, the same pixels :func:`image_folder` returns. With it,
    each item is a random-resized-crop of the image (area fraction in ``crop_scale``, width/height
    in ``crop_ratio``, torchvision's recipe; ``crop_scale=None`` resizes as ``fit`` says instead),
    then mirrored with probability 1/2 if ``flip``. Its randomness is drawn from (``seed``, epoch,
    index) alone: call :meth:`set_epoch` before each epoch's ``iter(loader)`` (as with a
    ``DistributedSampler``), and any number of ``DataLoader`` workers — persistent ones too, since
    the epoch lives in shared memory — in any order give the same images, after a resume too.

    A file that cannot be decoded is a ValueError naming it when its item is read.
    """

    def __init__(self, path, *, size, channels: int = 3, fit: str = "crop", augment: bool = False,
                 crop_scale=(0.08, 1.0), crop_ratio=(3 / 4, 4 / 3), flip: bool = True, seed: int = 0,
                 classes=None):
        self._configure(_settings(size, channels, fit, augment, crop_scale, crop_ratio, flip, seed))
        root = _folder("path", path)
        found, files = _scan(root)
        if classes is not None:
            if not isinstance(classes, Sequence) or isinstance(classes, str) \
                    or not all(isinstance(entry, str) for entry in classes):
                fail("classes", "a list of class names, or None", classes)
            if tuple(classes) != found:
                raise ValueError(f"{root}: expected the class folders {list(classes)} (classes=), got "
                                 f"{list(found)} (missing: {sorted(set(classes) - set(found))}; extra: "
                                 f"{sorted(set(found) - set(classes))})")
        self.root = root
        self.classes = found
        self.samples = [(file, label) for label, class_files in enumerate(files) for file in class_files]

    @classmethod
    def _from_samples(cls, root: Path, classes, samples: Samples, settings: dict) -> ImageFolderDataset:
        dataset = cls.__new__(cls)
        dataset._configure(settings)
        dataset.root, dataset.classes, dataset.samples = root, tuple(classes), list(samples)
        return dataset

    def _configure(self, settings: dict) -> None:
        for key, value in settings.items():
            setattr(self, key, value)
        # shared memory: DataLoader workers (persistent ones too) read the epoch set in the main process
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def targets(self) -> list[int]:
        """Every item's label, in item order (torchvision's name)."""
        return [label for _, label in self.samples]

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        """The epoch whose augmentation the next reads draw (before ``iter(loader)`` for that epoch)."""
        self._epoch.fill_(integer("epoch", epoch, minimum=0))

    def unaugmented(self) -> ImageFolderDataset:
        """The same images in the same order, resized as ``fit`` says and not augmented (what
        :func:`image_folder` decodes): the solution evaluates the training set on these."""
        return ImageFolderDataset._from_samples(self.root, self.classes, self.samples,
                                                {**self._current_settings(), "augment": False})

    def _current_settings(self) -> dict:
        return {key: getattr(self, key) for key in
                ("size", "channels", "fit", "augment", "crop_scale", "crop_ratio", "flip", "seed")}

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index) -> tuple[torch.Tensor, int]:
        try:
            position = operator.index(index)
        except TypeError:
            fail("index", "an integer", index)
        if position < 0:
            position += len(self.samples)
        if not 0 <= position < len(self.samples):
            raise IndexError(f"index: expected an integer in -{len(self.samples)}..{len(self.samples) - 1}, "
                             f"got {index}")
        path, label = self.samples[position]
        image = _decode(path, self.channels)
        if not self.augment:
            return torch.from_numpy(_array(_fitted(image, self.size, self.fit))), label
        Image, _ = _pillow()
        rng = np.random.default_rng(np.random.SeedSequence([_AUGMENT_STREAM, self.seed, self.epoch, position]))
        if self.crop_scale is None:
            image = _fitted(image, self.size, self.fit)
        else:
            box = _random_box(rng, *image.size, self.crop_scale, self.crop_ratio)
            image = image.resize((self.size[1], self.size[0]), Image.Resampling.BILINEAR, box=box)
        if self.flip and rng.random() < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return torch.from_numpy(_array(image)), label

    def statistics(self, workers: int | None = None) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel mean and std in [0, 1] of the images resized as ``fit`` says (not augmented), exact:
        one pass over the folder that keeps a 256-bin histogram per channel, never the images. For a
        training set, :func:`image_folder` gives the same numbers."""
        workers = _workers(workers)
        counts, lock = np.zeros((self.channels, 256), dtype=np.int64), threading.Lock()

        def one(index):
            pixels = _array(_fitted(_decode(self.samples[index][0], self.channels), self.size, self.fit))
            histograms = [np.bincount(plane.ravel(), minlength=256) for plane in pixels]
            with lock:
                counts[:] += histograms

        _each(one, len(self.samples), workers)
        totals = torch.from_numpy(counts)                             # (C, 256)
        # the same histogram arithmetic as channel_statistics, so the numbers agree to the last bit
        values = torch.arange(256, dtype=torch.float64) / 255
        means, stds = [], []
        for channel in range(self.channels):
            histogram = totals[channel].to(torch.float64)
            mean = float((histogram * values).sum() / histogram.sum())
            means.append(mean)
            stds.append(float(((histogram * (values - mean) ** 2).sum() / histogram.sum()).sqrt()))
        return tuple(means), tuple(stds)

    def __repr__(self) -> str:
        augment = (f"augment=(crop_scale={self.crop_scale}, crop_ratio={self.crop_ratio}, flip={self.flip}, "
                   f"seed={self.seed}), " if self.augment else "")
        return (f"ImageFolderDataset({str(self.root)!r}, images={len(self)}, classes={self.num_classes}, "
                f"size={self.size}, channels={self.channels}, {augment}epoch={self.epoch})")


def image_folder_datasets(path, *, size, split=None, seed: int = 0, channels: int = 3, fit: str = "crop",
                          augment: bool = True, crop_scale=(0.08, 1.0), crop_ratio=(3 / 4, 4 / 3),
                          flip: bool = True) -> tuple[ImageFolderDataset, ImageFolderDataset]:
    """(train, test) :class:`ImageFolderDataset` of a folder, split as :func:`image_folder` splits it for
    the same ``split`` and ``seed`` (the same images on each side, in the same order). The training set
    is augmented if ``augment`` (from ``seed``); the test set never is."""
    settings = _settings(size, channels, fit, augment, crop_scale, crop_ratio, flip, seed)
    classes, train, test, train_dir, test_dir = _split(path, split, seed)
    return (ImageFolderDataset._from_samples(train_dir, classes, train, settings),
            ImageFolderDataset._from_samples(test_dir, classes, test, {**settings, "augment": False}))


# --- a streamed data set for a training run ---------------------------------------------------------

@dataclass(frozen=True, eq=False)
class ImageFolderStreams:
    """An image folder's training and test splits read from the files as a run asks for them: what
    :class:`ImageFolderTensors` is for a folder that does not fit in memory, with the same members a
    training run uses (``inputs``, ``batches``, ``split_size``, ``mean``/``std``, ``fingerprint``, ``subset``).

    Both datasets are unaugmented (the images :func:`image_folder` decodes, in its order); a run augments
    the batches as it augments tensors, so a streamed run trains the same network as one in memory.
    """
    name: str
    train: ImageFolderDataset
    test: ImageFolderDataset
    mean: tuple[float, ...]       # per channel, of the training images in [0, 1] (exact: one pass over them)
    std: tuple[float, ...]
    source: str                   # the folder it was read from
    workers: int = 0              # DataLoader worker processes of ``batches`` (0: read in this process)

    def __post_init__(self):
        integer("workers", self.workers, minimum=0)

    @property
    def num_classes(self) -> int:
        return self.train.num_classes

    @property
    def classes(self) -> tuple[str, ...]:
        return self.train.classes

    @property
    def channels(self) -> int:
        return self.train.channels

    @property
    def image_size(self) -> tuple[int, int]:
        return self.train.size

    def split_size(self, split: str) -> int:
        return len(self._dataset(split))

    def _dataset(self, split: str) -> ImageFolderDataset:
        return getattr(self, choice("split", split, SPLITS))

    def inputs(self, split: str) -> tuple:
        """(the split's Dataset, None): ``turnpike.OCP`` inputs with their labels inside."""
        return self._dataset(split), None

    def batches(self, split: str, batch_size: int, *, workers: int | None = None):
        """The split's (uint8 images (b, C, H, W), int64 labels (b,)) in order, decoded by a DataLoader with
        ``workers`` processes (default: this data set's ``workers``)."""
        workers = self.workers if workers is None else integer("workers", workers, minimum=0)
        yield from torch.utils.data.DataLoader(self._dataset(split), num_workers=workers,
                                               batch_size=integer("batch_size", batch_size, minimum=1))

    def subset(self, train: int | None = None, test: int | None = None, seed: int = 0) -> ImageFolderStreams:
        """The images :meth:`ImageTensors.subset` keeps for the same sizes and seed, in its order; the
        mean and std of the kept training images."""
        fields = {}
        for split, chosen in subset_indices({"train": self.train.targets, "test": self.test.targets},
                                            {"train": train, "test": test}, seed).items():
            dataset = self._dataset(split)
            fields[split] = ImageFolderDataset._from_samples(dataset.root, dataset.classes,
                                                             [dataset.samples[i] for i in chosen],
                                                             dataset._current_settings())
        if "train" in fields:
            fields["mean"], fields["std"] = fields["train"].statistics()
        return dataclasses.replace(self, **fields)

    def fingerprint(self) -> str:
        """A digest of the classes and of each image file's path (relative to its split's folder), size and
        label, in order (16 hex digits): the same folder moved elsewhere keeps it; added, removed, renamed or
        rewritten files change it (the pixels are not read)."""
        digest = hashlib.sha256(repr((self.classes, self.image_size, self.channels)).encode())
        for split in ("train", "test"):
            dataset = self._dataset(split)
            for path, label in dataset.samples:
                digest.update(f"{split} {label} {path.relative_to(dataset.root)} {path.stat().st_size}\n".encode())
        return digest.hexdigest()[:16]


def image_folder_streams(path, *, size, split=None, seed: int = 0, channels: int = 3, fit: str = "crop", name=None,
                         workers: int = 0) -> ImageFolderStreams:
    """An :class:`ImageFolderStreams` of the folder: the splits :func:`image_folder` makes for the same
    ``split`` and ``seed``, read from the files (``batches`` by ``workers`` DataLoader processes), with the
    training images' exact mean and std (one pass over them by a thread per CPU, at most 8)."""
    train, test = image_folder_datasets(path, size=size, split=split, seed=seed, channels=channels, fit=fit,
                                        augment=False)
    mean, std = train.statistics()
    root = _folder("path", path)
    return ImageFolderStreams(name if name is not None else root.resolve().name, train, test, mean, std, str(root),
                              workers)


__all__ = ["FITS", "IMAGE_EXTENSIONS", "ImageFolderDataset", "ImageFolderStreams", "ImageFolderTensors",
           "TEST_FOLDERS", "image_folder", "image_folder_datasets", "image_folder_streams"]
