"""The IDX file format of MNIST and Fashion-MNIST, raw or gzip-compressed.

An IDX file is a big-endian header — two zero bytes, a type code, the number of
dimensions d — then d uint32 sizes, then the data in row-major order. MNIST uses type
0x08 (unsigned byte): magic 0x00000803 for images (count, rows, cols) and 0x00000801
for labels (count). Files are validated against the header: a wrong magic number, a
truncated or over-long body, or images and labels of different counts are refused
with an error naming the file.
"""
from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
          0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09}

SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _path(name: str, value) -> Path:
    if not isinstance(value, (str, os.PathLike)):
        raise ValueError(f"{name}: expected a path (a string or pathlib.Path), got {value!r:.60}")
    return Path(value)


def _open_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as stream:
                return stream.read()
        return path.read_bytes()
    except (OSError, EOFError) as error:
        raise ValueError(f"{path}: expected a readable IDX file{' (gzip)' if path.suffix == '.gz' else ''}, "
                         f"got an error reading it: {error}") from None


def read_idx(path) -> np.ndarray:
    """The array stored in the IDX file ``path`` (``.gz`` is decompressed)."""
    path = _path("path", path)
    if not path.is_file():
        raise ValueError(f"path: expected an existing IDX file, got {str(path)!r} (not found)")
    raw = _open_bytes(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _TYPES:
        raise ValueError(f"{path}: expected an IDX magic number 0x0000TTDD, got "
                         f"{raw[:4].hex() if len(raw) >= 4 else 'a file of ' + str(len(raw)) + ' bytes'}")
    dtype, ndim = np.dtype(_TYPES[raw[2]]), raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: expected a header of {header} bytes, got a file of {len(raw)} bytes")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        raise ValueError(f"{path}: expected {expected} bytes for an array of shape {shape}, got {len(raw)} "
                         f"({'truncated' if len(raw) < expected else 'trailing data'})")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


def write_idx(path, array) -> Path:
    """Write a uint8/int8 array as an IDX file (gzip if the name ends in .gz)."""
    array = np.ascontiguousarray(array)
    if array.dtype not in _CODES:
        raise ValueError(f"array: expected dtype uint8 or int8, got {array.dtype}")
    header = bytes([0, 0, _CODES[array.dtype], array.ndim]) + b"".join(
        int(n).to_bytes(4, "big") for n in array.shape)
    path = Path(path)
    data = header + array.tobytes()
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as stream:
            stream.write(data)
    else:
        path.write_bytes(data)
    return path


def _find(directory: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz"):
        if (directory / name).is_file():
            return directory / name
    raise ValueError(f"data directory {str(directory)!r}: expected {stem} or {stem}.gz, not found")


def load_idx_split(directory, split: str):
    """(images (D, rows, cols) uint8, labels (D,) int64) of ``split`` ("train" or "test")."""
    if not isinstance(split, str) or split not in SPLIT_FILES:
        raise ValueError(f"split: expected one of {sorted(SPLIT_FILES)}, got {split!r}")
    directory = _path("directory", directory)
    if not directory.is_dir():
        raise ValueError(f"data directory: expected an existing directory, got {str(directory)!r}")
    image_path, label_path = (_find(directory, stem) for stem in SPLIT_FILES[split])
    images, labels = read_idx(image_path), read_idx(label_path)
    if images.ndim != 3:
        raise ValueError(f"{image_path}: expected images of shape (count, rows, cols), got {images.shape}")
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise ValueError(f"{label_path}: expected {images.shape[0]} labels to match {image_path.name}, "
                         f"got shape {labels.shape}")
    return images, labels.astype(np.int64)
