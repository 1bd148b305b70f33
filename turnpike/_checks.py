"""Argument validation shared by the whole package.

Every error names the argument, what was expected and what was given, so that a
user reading a traceback knows what to change without opening the source.
"""
from __future__ import annotations

import math
import sys
from collections.abc import Mapping
from numbers import Real

import numpy as np


def _describe(value) -> str:
    if isinstance(value, np.ndarray) or (hasattr(value, "shape") and hasattr(value, "dtype")
                                         and not isinstance(value, type)):     # not the class np.float32
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


def integer(name: str, value, *, minimum=None, maximum=None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        fail(name, "an integer", value)
    value = int(value)
    if minimum is not None and value < minimum:
        fail(name, f"an integer >= {minimum}", value)
    if maximum is not None and value > maximum:
        fail(name, f"an integer <= {maximum}", value)
    return value


def boolean(name: str, value) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        fail(name, "True or False", value)
    return bool(value)


def choice(name: str, value, options) -> str:
    try:
        known = value in options
    except TypeError:              # unhashable (a list for a name): not one of them either
        known = False
    if not known:
        fail(name, f"one of {sorted(options)}", value)
    return value


def instance(name: str, value, kinds, expected: str):
    """``value`` if it is an instance of ``kinds``; else fail naming ``expected`` (e.g. "a turnpike cost")."""
    if not isinstance(value, kinds):
        fail(name, expected, value)
    return value


def function(name: str, value, expected: str, *, optional: bool = True):
    """A callable (or None when ``optional``)."""
    if not (callable(value) or (optional and value is None)):
        fail(name, expected, value)
    return value


def names(name: str, value, count: int, expected: str) -> tuple:
    """A tuple of ``count`` entries from a list or tuple (a string is one name, not a sequence of them)."""
    if not isinstance(value, (tuple, list)) or len(value) != count:
        fail(name, expected, value)
    return tuple(value)


def finite_array(name: str, value, *, ndim: int | None = None, min_ndim: int | None = None, nonempty: bool = False,
                 dtype=np.float64) -> np.ndarray:
    """Convert to a numpy array, rejecting NaN/inf, the wrong number of dimensions and (``nonempty``) no entries."""
    if hasattr(value, "detach"):  # torch tensor
        value = value.detach().cpu().numpy()
    if isinstance(value, (str, bytes)):
        fail(name, "an array of numbers", value)
    try:
        array = np.asarray(value, dtype=dtype)
    except (TypeError, ValueError):
        fail(name, "an array of numbers", value)
    if ndim is not None and array.ndim != ndim:
        fail(name, f"an array with {ndim} dimension(s)", array)
    if min_ndim is not None and array.ndim < min_ndim:
        fail(name, f"an array with at least {min_ndim} dimension(s)", array)
    if nonempty and array.size == 0:
        fail(name, "a non-empty array", array)
    if not np.all(np.isfinite(array)):
        bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        raise ValueError(f"{name}: expected finite values, got {bad} NaN or infinite entries "
                         f"in an array of shape {array.shape}")
    return array


def labels(name: str, value, *, count: int, num_classes: int | None) -> np.ndarray:
    """Integer class labels (B,) = (``count``,) in 0..num_classes-1 (any range for None), numpy or torch."""
    array = np.asarray(value.detach().cpu().numpy() if hasattr(value, "detach") else value)
    if array.ndim != 1 or array.shape[0] != count:
        fail(name, f"a 1-d array of {count} integer class labels", array)
    if array.size and (array.dtype.kind not in "iuf"):     # bool, strings, objects: not class indices
        fail(name, "integer class labels", array)
    if array.size and not np.issubdtype(array.dtype, np.integer):
        if not np.all(np.equal(np.mod(array, 1), 0)):
            fail(name, "integer class labels", array)
    array = array.astype(np.int64)
    if num_classes is not None and array.size and (array.min() < 0 or array.max() >= num_classes):
        fail(name, f"labels in 0..{num_classes - 1}", f"labels in {array.min()}..{array.max()}")
    return array


def options(name: str, given: dict, allowed: dict) -> dict:
    """Merge user options over defaults, refusing unknown keys with the list of valid ones."""
    if given is not None and not isinstance(given, Mapping):
        fail(name, f"a dict of options (valid ones: {sorted(allowed)})", given)
    given = dict(given or {})
    unknown = sorted(set(given) - set(allowed), key=repr)
    if unknown:
        raise ValueError(f"{name}: expected valid options {sorted(allowed)}, got unknown option(s) {unknown}")
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


def is_dataset(value) -> bool:
    """Whether ``value`` is a ``torch.utils.data.Dataset`` (without importing torch for numpy-only uses:
    a Dataset implies torch is loaded)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.utils.data.Dataset)


def image_dataset(name: str, value, shape: tuple):
    """A ``torch.utils.data.Dataset`` of (image, label) pairs whose images have ``shape``: its length and
    its first item are checked here (the rest as batches are read, by the loader's collation)."""
    try:
        count = len(value)
    except TypeError:
        fail(name, "a map-style Dataset with a length (len(dataset)), not an iterable-style one", value)
    if count < 1:
        fail(name, "a Dataset of at least one (image, label) pair", f"{type(value).__name__} of length 0")
    item = value[0]
    if not isinstance(item, (tuple, list)) or len(item) != 2:
        fail(f"{name}[0]", "an (image, label) pair", item)
    import torch

    image = item[0] if isinstance(item[0], torch.Tensor) else torch.as_tensor(np.asarray(item[0]))
    described = ", ".join("any" if size is None else str(size) for size in shape)
    if image.ndim != len(shape) or any(s is not None and s != t for s, t in zip(shape, image.shape)):
        fail(f"{name}[0][0]", f"an image of shape ({described})", image)
    if image.dtype != torch.uint8 and not image.is_floating_point():
        fail(f"{name}[0][0]", "a uint8 or floating-point image", image)
    label = item[1]
    integral = (isinstance(label, (int, np.integer)) and not isinstance(label, bool)) or (
        isinstance(label, torch.Tensor) and label.ndim == 0 and not label.is_floating_point()
        and label.dtype != torch.bool)
    if not integral:
        fail(f"{name}[0][1]", "an integer class label", label)
    return value
