"""The few array operations that differ between numpy and torch.

Costs and systems are written once against numpy-style operators; the helpers here
cover the handful of calls whose names or signatures differ, so that the same code
runs on numpy arrays (the fast CPU adjoint engine) and on torch tensors (autograd,
GPU).
"""
from __future__ import annotations

import numpy as np


def is_numpy(x) -> bool:
    return isinstance(x, (np.ndarray, np.generic))


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
        return np.ones(x.shape[0], dtype=x.dtype) @ x
    return x.sum(0)


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


def log_softmax_parts(s):
    """For logits ``s`` (..., C): log p = s - lse and the normaliser lse (..., 1)."""
    m = max_last(s)
    shifted = s - m
    lse = log(sum_last(exp(shifted)))[..., None]
    return shifted - lse, m + lse


def log(x):
    return np.log(x) if is_numpy(x) else x.log()


def exp(x):
    return np.exp(x) if is_numpy(x) else x.exp()


def one_hot(labels, num_classes: int, like):
    """(B, C) indicator of ``labels`` in the dtype and device of ``like``."""
    if is_numpy(like):
        return np.eye(num_classes, dtype=like.dtype)[np.asarray(labels)]
    import torch
    labels = torch.as_tensor(labels, device=like.device)
    return torch.nn.functional.one_hot(labels, num_classes).to(like.dtype)


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
