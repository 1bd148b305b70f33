"""Argument validation shared by the whole package.

Every error names the argument, what was expected and what was given, so that a
user reading a traceback knows what to change without opening the source.
"""
from __future__ import annotations

import math
from numbers import Real

import numpy as np


def _describe(value) -> str:
    if isinstance(value, np.ndarray) or hasattr(value, "shape"):
        return f"an array of shape {tuple(value.shape)} and dtype {value.dtype}"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def fail(name: str, expected: str, value) -> None:
    raise ValueError(f"{name}: expected {expected}, got {_describe(value)}")


def real(name: str, value, *, minimum=None, maximum=None, strict_min=False, strict_max=False) -> float:
    """Return ``value`` as a float after checking that it is a finite real in range."""
    if isinstance(value, bool) or not isinstance(value, (Real, np.floating, np.integer)):
        fail(name, "a real number", value)
    value = float(value)
    if not math.isfinite(value):
        fail(name, "a finite number", value)
    if minimum is not None and (value < minimum or (strict_min and value == minimum)):
        fail(name, f"a number {'>' if strict_min else '>='} {minimum}", value)
    if maximum is not None and (value > maximum or (strict_max and value == maximum)):
        fail(name, f"a number {'<' if strict_max else '<='} {maximum}", value)
    return value


def integer(name: str, value, *, minimum=None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        fail(name, "an integer", value)
    value = int(value)
    if minimum is not None and value < minimum:
        fail(name, f"an integer >= {minimum}", value)
    return value


def boolean(name: str, value) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        fail(name, "True or False", value)
    return bool(value)


def choice(name: str, value, options) -> str:
    if value not in options:
        fail(name, f"one of {sorted(options)}", value)
    return value


def finite_array(name: str, value, *, ndim: int | None = None, dtype=np.float64) -> np.ndarray:
    """Convert to a numpy array, rejecting NaN/inf and the wrong number of dimensions."""
    if hasattr(value, "detach"):  # torch tensor
        value = value.detach().cpu().numpy()
    try:
        array = np.asarray(value, dtype=dtype)
    except (TypeError, ValueError):
        fail(name, "an array of numbers", value)
    if ndim is not None and array.ndim != ndim:
        fail(name, f"an array with {ndim} dimension(s)", array)
    if not np.all(np.isfinite(array)):
        bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        raise ValueError(f"{name}: expected finite values, got {bad} NaN or infinite entries "
                         f"in an array of shape {array.shape}")
    return array


def labels(name: str, value, *, count: int, num_classes: int | None) -> np.ndarray:
    array = np.asarray(value.detach().cpu().numpy() if hasattr(value, "detach") else value)
    if array.ndim != 1 or array.shape[0] != count:
        fail(name, f"a 1-d array of {count} integer class labels", array)
    if array.size and not np.issubdtype(array.dtype, np.integer):
        if not np.all(np.equal(np.mod(array, 1), 0)):
            fail(name, "integer class labels", array)
    array = array.astype(np.int64)
    if num_classes is not None and array.size and (array.min() < 0 or array.max() >= num_classes):
        fail(name, f"labels in 0..{num_classes - 1}", f"labels in {array.min()}..{array.max()}")
    return array


def options(name: str, given: dict, allowed: dict) -> dict:
    """Merge user options over defaults, refusing unknown keys with the list of valid ones."""
    given = dict(given or {})
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise ValueError(f"{name}: unknown option(s) {unknown}; valid options are {sorted(allowed)}")
    merged = dict(allowed)
    merged.update(given)
    return merged


def device(name: str, value):
    """A torch device that exists here: "cpu", "cuda" or "cuda:N" (the latter only with a GPU)."""
    import torch
    try:
        parsed = torch.device(value)
    except (RuntimeError, TypeError):
        fail(name, "'cpu', 'cuda' or 'cuda:N'", value)
    if parsed.type not in ("cpu", "cuda"):
        fail(name, "'cpu', 'cuda' or 'cuda:N'", value)
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            fail(name, "'cpu' on this machine (torch sees no CUDA GPU)", value)
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            fail(name, f"a GPU index below {torch.cuda.device_count()}", value)
    return parsed


def image_batch(name: str, value, shape: tuple):
    """A batch of images (D, *shape), uint8 or finite float, as a torch tensor (no copy if possible)."""
    import torch

    if not isinstance(value, (np.ndarray, torch.Tensor)):
        fail(name, f"an array of images with {len(shape)} axes after the sample axis", value)
    tensor = torch.as_tensor(value)
    described = ", ".join("any" if size is None else str(size) for size in shape)
    if tensor.ndim != len(shape) + 1 or any(s is not None and s != t for s, t in zip(shape, tensor.shape[1:])):
        fail(name, f"images of shape (D, {described})", tensor)
    if tensor.dtype != torch.uint8 and not tensor.is_floating_point():
        fail(name, "uint8 or floating-point images", tensor)
    if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
        fail(name, "finite values (no NaN or inf)", tensor)
    return tensor
