"""Where the module backend's images come from: tensors held on the device, or a Dataset read batch by batch.

Both sources give the backend the same thing, a batch of (images, labels) on the device for a list
of sample indices (the per-epoch permutation of :func:`~turnpike.data.batch_indices`), and chunks in
order for the solution's evaluation. So a :class:`StreamedData` over a Dataset of the same samples
trains exactly as :class:`ResidentData` does, batch for batch (tested).

:class:`StreamedData` keeps one ``DataLoader`` iterator open per epoch, started at the step asked
for: a resumed run (or a rollback) reopens it at that step. Workers (``loader_workers``) decode
ahead of the step; on a GPU batches are pinned and copied without blocking. The loader's own seed
(for a dataset that draws from torch's generator) comes from (seed, phase, epoch); datasets whose
augmentation depends on (seed, epoch, index) alone (:class:`~turnpike.data.SupportsEpoch`) give the
same images for any worker count and after a resume in mid-epoch.
"""
from __future__ import annotations

import math
import os

import torch

from .. import _checks
from ..data import SupportsEpoch, SupportsUnaugmented


class ResidentData:
    """Images (D, C, H, W) and labels (D,) held on the device."""

    streamed = False

    def __init__(self, images, labels, device):
        self.images = images.to(device)
        self.labels = torch.as_tensor(labels, device=device)
        self.count = int(self.images.shape[0])
        self.uint8 = self.images.dtype == torch.uint8
        self.shape = tuple(self.images.shape)

    def batch(self, index):
        """(images, labels) of the samples ``index`` (a device tensor; None: all of them)."""
        return (self.images, self.labels) if index is None else (self.images[index], self.labels[index])

    def chunks(self, size: int):
        """(images, labels) in order, ``size`` samples at a time."""
        for begin in range(0, self.count, size):
            yield self.images[begin:begin + size], self.labels[begin:begin + size]


class _Collate:
    """Stacks a batch's (image, label) items, checking each against the first item of the data set
    (a top-level class: loader workers receive it pickled)."""

    def __init__(self, name: str, shape: tuple, dtype, num_classes: int | None):
        self.name, self.shape, self.dtype, self.num_classes = name, shape, dtype, num_classes

    def __call__(self, items):
        images = [image if isinstance(image, torch.Tensor) else torch.as_tensor(image) for image, _ in items]
        for image in images:
            if tuple(image.shape) != self.shape or image.dtype != self.dtype:
                raise ValueError(f"{self.name}: expected every image of shape {self.shape} and dtype {self.dtype} "
                                 f"like the first item's, got one of shape {tuple(image.shape)} and dtype "
                                 f"{image.dtype}")
        labels = torch.as_tensor([int(label) for _, label in items], dtype=torch.int64)          # (b,)
        if self.num_classes is not None and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise ValueError(f"{self.name}: expected labels in 0..{self.num_classes - 1}, got labels in "
                             f"{int(labels.min())}..{int(labels.max())}")
        batch = torch.stack(images)                                                               # (b, C, H, W)
        if batch.is_floating_point() and not bool(torch.isfinite(batch).all()):
            raise ValueError(f"{self.name}: expected finite images (no NaN or inf), got a batch holding some")
        return batch, labels


def _worker_failure(error: Exception) -> ValueError:
    """A one-line error from a loader worker's: torch wraps it in 'Caught ... in DataLoader worker
    process k. Original Traceback ...', whose last line is the original message."""
    last = str(error).strip().splitlines()[-1] if str(error).strip() else repr(error)
    for prefix in ("ValueError: ", "OSError: ", "FileNotFoundError: ", "IndexError: "):
        last = last.removeprefix(prefix)
    return ValueError(last)


class StreamedData:
    """A ``torch.utils.data.Dataset`` of (image, label) read through a ``DataLoader``."""

    streamed = True

    def __init__(self, dataset, *, name: str, device, workers: int, num_classes: int | None, seed: int):
        self.dataset, self.device, self.workers, self.seed = dataset, device, workers, seed
        self.count = len(dataset)
        first = dataset[0][0]
        first = first if isinstance(first, torch.Tensor) else torch.as_tensor(first)
        self.uint8 = first.dtype == torch.uint8
        self.shape = (self.count, *first.shape)
        self.pin = device.type == "cuda"          # page-locked batches: copies that do not block the host
        self._collate = _Collate(name, tuple(first.shape), first.dtype, num_classes)
        self._iterator, self._next = None, None   # the open epoch's iterator and (key, position) it gives next

    def _loader(self, dataset, **batching):
        """A DataLoader over ``dataset`` with ``batching`` (``batch_sampler=`` and ``generator=``, or
        ``batch_size=``: torch refuses the two together)."""
        return torch.utils.data.DataLoader(dataset, num_workers=self.workers, collate_fn=self._collate,
                                           pin_memory=self.pin, **batching)

    def _to_device(self, batch):
        images, labels = batch
        return (images.to(self.device, non_blocking=self.pin), labels.to(self.device, non_blocking=self.pin))

    def _read(self, iterator):
        try:
            return next(iterator)
        except (ValueError, OSError, IndexError) as error:
            raise (_worker_failure(error) if self.workers > 0 else error) from None

    def batch(self, key: tuple, epoch: int, position: int, batches: list):
        """(images, labels) on the device of ``batches[position]`` (lists of sample indices: an epoch's
        batches, this rank's share of each); ``key`` = (phase, epoch) names the epoch."""
        if self._next != (key, position):
            self._iterator = None                 # shut the previous epoch's workers down first
            if isinstance(self.dataset, SupportsEpoch):
                self.dataset.set_epoch(epoch)
            generator = torch.Generator().manual_seed(hash((self.seed, *key)) & 0x7FFF_FFFF_FFFF)
            self._iterator = iter(self._loader(self.dataset, batch_sampler=batches[position:], generator=generator))
        batch = self._read(self._iterator)
        self._next = (key, position + 1)
        return self._to_device(batch)

    def chunks(self, size: int):
        """(images, labels) on the device in order, ``size`` at a time, not augmented where the dataset
        can say how (:class:`~turnpike.data.SupportsUnaugmented`)."""
        dataset = self.dataset.unaugmented() if isinstance(self.dataset, SupportsUnaugmented) else self.dataset
        iterator = iter(self._loader(dataset, batch_size=size))
        for _ in range(math.ceil(self.count / size)):
            yield self._to_device(self._read(iterator))


def data_source(name: str, inputs, labels, *, device, workers: int, num_classes, seed: int):
    """The source of ``inputs``: a :class:`StreamedData` for a Dataset (``labels`` None), else the
    tensors on the device."""
    if isinstance(inputs, torch.utils.data.Dataset):
        return StreamedData(inputs, name=name, device=device, workers=workers, num_classes=num_classes, seed=seed)
    return ResidentData(inputs, labels, device)


def checked_workers(value, device) -> int:
    """``loader_workers``: "auto" is 0 on a CPU (the training threads use its cores) and up to 8 on a GPU."""
    if value == "auto":
        return min(8, os.cpu_count() or 1) if device.type == "cuda" else 0
    return _checks.integer("loader_workers", value, minimum=0)
