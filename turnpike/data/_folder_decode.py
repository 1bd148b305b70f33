"""Image folders, decoding: images read by Pillow, turned upright, converted, fitted to a size, in threads
(see :mod:`turnpike.data._folder`)."""
from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from ._folder_files import _SIXTEEN_BIT, Samples, _pillow

# --- decoding ----------------------------------------------------------------------------------

def _decode(path: Path, channels: int):
    """The image at ``path`` as a Pillow image in mode RGB (3 channels) or L (1), upright."""
    Image, ImageOps = _pillow()
    try:
        empty = path.stat().st_size == 0
    except OSError as error:
        raise ValueError(f"{path}: expected a readable image file, got {type(error).__name__}: {error}") from None
    if empty:
        raise ValueError(f"{path}: expected an image file, got an empty file (0 bytes)")
    try:
        with Image.open(path) as opened:
            opened.load()
            image = opened
            try:
                image = ImageOps.exif_transpose(opened)
            except Exception:                      # noqa: BLE001 (a damaged EXIF block: keep the pixels as stored)
                image = opened.copy()
        if image.mode in _SIXTEEN_BIT:
            image = Image.fromarray((np.asarray(image).astype(np.uint16) >> 8).astype(np.uint8))
        if image.mode in ("P", "PA") and (image.mode == "PA" or "transparency" in image.info):
            image = image.convert("RGBA")          # the palette's transparency, without Pillow's warning
        return image.convert("RGB" if channels == 3 else "L")
    except Exception as error:                     # noqa: BLE001 (Pillow raises OSError, SyntaxError, ValueError...)
        raise ValueError(f"{path}: expected an image file Pillow can decode, got a corrupt or unsupported file "
                         f"({type(error).__name__}: {error})") from None


def _centre_box(width: int, height: int, size: tuple[int, int]) -> tuple[float, float, float, float]:
    """The largest centred box of the output's aspect ratio in a width × height image."""
    target = size[1] / size[0]                     # width / height
    if width / height > target:
        cut = height * target
        return ((width - cut) / 2, 0.0, (width + cut) / 2, float(height))
    cut = width / target
    return (0.0, (height - cut) / 2, float(width), (height + cut) / 2)


def _fitted(image, size: tuple[int, int], fit: str):
    Image, _ = _pillow()
    box = _centre_box(*image.size, size) if fit == "crop" else None
    return image.resize((size[1], size[0]), Image.Resampling.BILINEAR, box=box)


def _random_box(rng: np.random.Generator, width: int, height: int, scale, ratio) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop box: a random area fraction in ``scale`` and width/height ratio in
    ``ratio`` (log-uniform), ten tries, else the centred crop nearest to ``ratio``; (left, top, right, bottom)."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_ratio))
        crop_w = int(round(math.sqrt(target * aspect)))
        crop_h = int(round(math.sqrt(target / aspect)))
        if 0 < crop_w <= width and 0 < crop_h <= height:
            top = int(rng.integers(0, height - crop_h + 1))
            left = int(rng.integers(0, width - crop_w + 1))
            return left, top, left + crop_w, top + crop_h
    aspect = width / height
    crop_w, crop_h = width, height
    if aspect < ratio[0]:
        crop_h = max(1, int(round(width / ratio[0])))
    elif aspect > ratio[1]:
        crop_w = max(1, int(round(height * ratio[1])))
    left, top = (width - crop_w) // 2, (height - crop_h) // 2
    return left, top, left + crop_w, top + crop_h


def _array(image) -> np.ndarray:
    """A Pillow RGB / L image as a writable uint8 array (C, H, W)."""
    pixels = np.array(image, dtype=np.uint8)          # a copy: Pillow's buffer is read-only
    return np.ascontiguousarray(pixels.transpose(2, 0, 1) if pixels.ndim == 3 else pixels[None])


def _each(function, count: int, workers: int) -> None:
    """``function(i)`` for i in 0..count-1 on ``workers`` threads (Pillow decodes and resizes without the
    GIL); the first failure in index order is raised, and the work not yet started is cancelled."""
    if workers == 1 or count < 2:
        for index in range(count):
            function(index)
        return
    pool = ThreadPoolExecutor(max_workers=min(workers, count))
    try:
        for _ in pool.map(function, range(count)):
            pass
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _decode_all(samples: Samples, size, channels: int, fit: str, workers: int) -> torch.Tensor:
    images = np.empty((len(samples), channels, *size), dtype=np.uint8)

    def one(index):
        images[index] = _array(_fitted(_decode(samples[index][0], channels), size, fit))

    _each(one, len(samples), workers)
    return torch.from_numpy(images)
