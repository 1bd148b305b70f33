"""Image folders, what they hold: the image files of each class, and the split into training and test files
(see :mod:`turnpike.data._folder`)."""
from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path

import numpy as np

from .._checks import fail, integer, real

#: the file endings read as images (compared in lower case); every other file is skipped
IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".pbm", ".pgm", ".png", ".ppm", ".tif", ".tiff", ".webp")
#: how an image becomes ``size``: "crop" scales it to cover ``size`` and cuts out the centre (keeps the
#: aspect ratio, like torchvision's Resize + CenterCrop); "stretch" resizes it to ``size`` as it is
FITS = ("crop", "stretch")
#: the held-out folder next to ``train/`` that ``split=None`` looks for
TEST_FOLDERS = ("val", "validation", "valid", "test")

_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")
_AUGMENT_STREAM = 0x41554731          # "AUG1": keeps the augmentation's seeds apart from any other stream


def _pillow():
    """Pillow's ``Image`` and ``ImageOps`` modules, or an ImportError that says how to install them."""
    try:
        from PIL import Image, ImageOps
    except ImportError:
        raise ImportError("Pillow: expected the Pillow package to decode image files (`pip install pillow`), "
                          "got no module named PIL") from None
    return Image, ImageOps


# --- arguments ------------------------------------------------------------------------------

def _size(value) -> tuple[int, int]:
    """``size`` as (height, width): one positive integer for a square, or a pair of them."""
    def positive(entry):
        return isinstance(entry, (int, np.integer)) and not isinstance(entry, bool) and entry >= 1

    pair = (value, value) if positive(value) else value
    if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and all(positive(entry) for entry in pair)):
        fail("size", "a positive integer or a pair (height, width) of positive integers", value)
    return int(pair[0]), int(pair[1])


def _folder(name: str, value) -> Path:
    if not isinstance(value, (str, os.PathLike)):
        fail(name, "a folder path (str or pathlib.Path)", value)
    folder = Path(value)
    if not folder.is_dir():
        state = "a file, not a folder" if folder.exists() else "not found"
        # not fail(): it shortens long values, and the path is the point here
        raise ValueError(f"{name}: expected an existing folder of images (one sub-folder per class), got "
                         f"{str(folder)!r} ({state})")
    return folder


def _pair(name: str, value, *, low: float, high: float | None, expected: str) -> tuple[float, float]:
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        fail(name, expected, value)
    first, second = (real(f"{name}[{i}]", entry, minimum=low, maximum=high, strict_min=True)
                     for i, entry in enumerate(value))
    if first > second:
        fail(name, expected, value)
    return first, second


def _workers(value) -> int:
    if value is None:
        return max(1, min(8, os.cpu_count() or 1))
    return integer("workers", value, minimum=1)


# --- finding the images ------------------------------------------------------------------------

def _visible(name: str) -> bool:
    return not name.startswith(".")


def _images_under(folder: Path) -> tuple[list[Path], list[str]]:
    """(image files under ``folder``, sorted by relative path; names of the other files skipped).

    Follows links to folders like torchvision does, each real folder once (a link loop ends).
    """
    images, skipped, seen = [], [], set()
    for here, folders, files in os.walk(folder, followlinks=True):
        real_here = os.path.realpath(here)
        if real_here in seen:
            folders[:] = []
            continue
        seen.add(real_here)
        folders[:] = sorted(name for name in folders if _visible(name))
        for name in files:
            if _visible(name) and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
                images.append(Path(here) / name)
            else:
                skipped.append(name)
    images.sort(key=lambda path: path.relative_to(folder).as_posix())
    return images, sorted(skipped)


def _scan(root: Path) -> tuple[tuple[str, ...], list[list[Path]]]:
    """(class names, sorted; each class's image files) of a folder with one sub-folder per class."""
    classes = tuple(sorted(entry.name for entry in os.scandir(root) if _visible(entry.name) and entry.is_dir()))
    if not classes:
        loose = [entry.name for entry in os.scandir(root)
                 if entry.is_file() and os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS]
        hint = (f" (but {len(loose)} image file(s) directly in it: put each class's images in a sub-folder "
                f"named after the class)" if loose else "")
        raise ValueError(f"{root}: expected one sub-folder per class holding its images, got no sub-folders{hint}")
    files = []
    for name in classes:
        images, skipped = _images_under(root / name)
        if not images:
            others = (f" (skipped {len(skipped)} other file(s): {', '.join(skipped[:3])}"
                      f"{', ...' if len(skipped) > 3 else ''})" if skipped else "")
            raise ValueError(f"{root / name}: expected image files ({', '.join(IMAGE_EXTENSIONS)}) in class "
                             f"folder {name!r}, got none{others}")
        files.append(images)
    return classes, files


def _same_classes(train: Path, train_classes, test: Path, test_classes) -> None:
    if tuple(test_classes) != tuple(train_classes):
        missing = sorted(set(train_classes) - set(test_classes))
        extra = sorted(set(test_classes) - set(train_classes))
        raise ValueError(f"{test}: expected the class folders of {train} {list(train_classes)}, got "
                         f"{list(test_classes)} (missing: {missing}; extra: {extra})")


def _held_out(files: list[Path], folder: Path, fraction: float, seed: int) -> set[int]:
    """Indices of the round(fraction * count) files (never all of them) held out of one class.

    Files are ranked by a hash of (seed, path relative to the split folder): the choice is the
    same on every machine and file system, and adding a file moves at most a few others.
    """
    count = min(math.floor(fraction * len(files) + 0.5), len(files) - 1)
    keys = [hashlib.blake2b(f"{seed}/{path.relative_to(folder).as_posix()}".encode(), digest_size=8).digest()
            for path in files]
    return set(sorted(range(len(files)), key=keys.__getitem__)[:count])


Samples = list[tuple[Path, int]]


def _split(path, split, seed) -> tuple[tuple[str, ...], Samples, Samples, Path, Path]:
    """(classes, train samples, test samples, train folder, test folder) of ``path`` split by ``split``."""
    root = _folder("path", path)
    seed = integer("seed", seed, minimum=0)
    if split is None:
        present = [name for name in TEST_FOLDERS if (root / name).is_dir()]
        if not (root / "train").is_dir() or len(present) != 1:
            got = (f"None for {root}, which has train/ and {', '.join(name + '/' for name in present)}"
                   if present and (root / "train").is_dir() else
                   f"None for {root}, which has no train/ and val/ (or test/) sub-folders")
            raise ValueError("split: expected a fraction of each class to hold out (e.g. 0.2) for one folder of "
                             "classes, or (train_dir, test_dir) naming two folders (None looks for train/ and "
                             f"one of {', '.join(name + '/' for name in TEST_FOLDERS)}), got {got}")
        split = ("train", present[0])
    if isinstance(split, (tuple, list)):
        if len(split) != 2 or not all(isinstance(entry, (str, os.PathLike)) for entry in split):
            fail("split", "a pair of folders (train_dir, test_dir), relative to path or absolute", split)
        train_dir, test_dir = (_folder(f"split[{i}]", root / entry) for i, entry in enumerate(split))
        classes, train_files = _scan(train_dir)
        test_classes, test_files = _scan(test_dir)
        _same_classes(train_dir, classes, test_dir, test_classes)
        train = [(file, label) for label, files in enumerate(train_files) for file in files]
        test = [(file, label) for label, files in enumerate(test_files) for file in files]
        return classes, train, test, train_dir, test_dir
    if isinstance(split, bool) or not isinstance(split, (float, int, np.floating, np.integer)) \
            or not 0 < float(split) < 1:
        fail("split", "None, a fraction in (0, 1) of each class to hold out, or a pair (train_dir, test_dir)", split)
    fraction = float(split)
    classes, files = _scan(root)
    train, test = [], []
    for label, class_files in enumerate(files):
        held = _held_out(class_files, root, fraction, seed)
        for index, file in enumerate(class_files):
            (test if index in held else train).append((file, label))
    if not test:
        fail("split", f"a fraction that holds out at least one image (each class rounds its share; "
             f"{sum(map(len, files))} images in {len(classes)} classes)", split)
    return classes, train, test, root, root
