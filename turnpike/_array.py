"""The few array operations that differ between numpy and torch.

Costs and systems are written once against numpy-style operators; the helpers here
cover the handful of calls whose names or signatures differ, so that the same code
runs on numpy arrays (the fast CPU adjoint engine) and on torch tensors (autograd,
GPU).
"""
from __future__ import annotations

import functools

import numpy as np


def is_numpy(x) -> bool:
    return isinstance(x, (np.ndarray, np.generic))


def as_array(name: str, x):
    """``x`` itself if it is an array or tensor, else a float64 numpy array of it (a list of numbers)."""
    if hasattr(x, "shape"):
        return x
    try:
        return np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected an array of numbers, got {x!r:.60}") from None


# numpy reduces a short last axis row by row, about 50x slower than a matrix product
# or an elementwise op for the (layers, batch, classes) arrays of the stacked costs;
# these helpers take the fast route for the few columns a classifier has.
_SHORT_AXIS = 32


def sum_last(x):
    """Σ over the last axis, without keeping it."""
    if is_numpy(x):
        return x @ np.ones(x.shape[-1], dtype=x.dtype)
    return x.sum(-1)


def sum_rows(x):
    """Σ over the first axis of a matrix (B, m) -> (m,): the bias gradient of a layer."""
    if is_numpy(x):
        return _ones(x.shape[0], x.dtype) @ x
    return x.sum(0)


@functools.lru_cache(maxsize=16)
def _ones(size: int, dtype) -> np.ndarray:
    ones = np.ones(size, dtype=dtype)
    ones.flags.writeable = False        # shared by every caller
    return ones


def max_last(x):
    """max over the last axis, keeping it (for a stable log-sum-exp)."""
    if is_numpy(x) and x.shape[-1] <= _SHORT_AXIS:
        m = x[..., 0].copy()
        for c in range(1, x.shape[-1]):
            np.maximum(m, x[..., c], out=m)
        return m[..., None]
    if is_numpy(x):
        return x.max(axis=-1, keepdims=True)
    return x.amax(dim=-1, keepdim=True)


def cross_entropy(s, targets, *, gradient: bool = True):
    """For logits ``s`` (..., C) and target distributions ``targets`` (broadcastable, Σ_c = 1):
    the cross-entropy −Σ_c q_c log softmax(s)_c (...,) and its gradient softmax(s) − q (None
    unless asked for).

    Written as sums of non-negative terms, so that the value keeps full relative accuracy
    near a minimum (a minimiser found numerically is off by ~√(round-off/curvature) otherwise).
    Two classes (the spirals) take a closed form on the logit difference d = s_1 − s_0:
    −log p_0 = max(d, 0) + log1p(e^{−|d|}), −log p_1 = max(−d, 0) + log1p(e^{−|d|}): one exp and one
    log on half the entries, and no broadcast over a 2-long axis (numpy loops over such an axis
    entry by entry).
    """
    if not is_numpy(s):
        log_p = s.log_softmax(-1)
        return -(targets * log_p).sum(-1), (log_p.exp() - targets if gradient else None)
    if s.shape[-1] == 2:
        difference = s[..., 1] - s[..., 0]
        small = np.exp(-np.abs(difference))                    # e^{−|d|} ∈ (0, 1]
        shared = np.log1p(small)
        value = (shared + targets[..., 0] * np.maximum(difference, 0.0)
                 + targets[..., 1] * np.maximum(-difference, 0.0))
        if not gradient:
            return value, None
        p = np.empty_like(s)
        np.divide(np.where(difference >= 0, 1.0, small), 1.0 + small, out=p[..., 1])   # sigmoid(d)
        np.subtract(1.0, p[..., 1], out=p[..., 0])
        p -= targets
        return value, p
    shifted = s - max_last(s)                                   # ≤ 0
    p = np.exp(shifted)
    total = sum_last(p)                                         # ≥ 1
    value = np.log(total) - sum_last(targets * shifted)
    if not gradient:
        return value, None
    p /= total[..., None]
    p -= targets
    return value, p


def one_hot(labels, num_classes: int, like):
    """(B, C) indicator of ``labels`` in the dtype and device of ``like``.

    For tensors a comparison with 0..C-1, not ``torch.nn.functional.one_hot``, whose range check reads
    the labels' minimum and maximum back to the host (a CUDA graph cannot hold that): labels are
    checked where they enter (the OCP, a data set's batches), and one outside 0..C-1 would give a
    zero row here."""
    if is_numpy(like):
        return np.eye(num_classes, dtype=like.dtype)[np.asarray(labels)]
    import torch
    labels = torch.as_tensor(labels, device=like.device)
    return (labels.unsqueeze(-1) == torch.arange(num_classes, device=like.device)).to(like.dtype)


def zeros_like(x):
    return np.zeros_like(x) if is_numpy(x) else x.new_zeros(x.shape)


def stack(items):
    if is_numpy(items[0]):
        return np.stack(items)
    import torch
    return torch.stack(items)


def to_numpy(x):
    """A numpy array of ``x`` (a view for numpy arrays and CPU tensors, else a copy)."""
    if is_numpy(x):
        return x
    return x.detach().cpu().numpy()


def like(values, reference):
    """``values`` (numpy) as a new array of ``reference``'s kind, dtype and device."""
    if is_numpy(reference):
        return np.array(values, dtype=reference.dtype)
    import torch
    return torch.as_tensor(np.asarray(values), dtype=reference.dtype, device=reference.device).clone()


def all_finite(x) -> bool:
    return bool(np.all(np.isfinite(x))) if is_numpy(x) else bool(x.isfinite().all())
