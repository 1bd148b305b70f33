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

import numpy as np
import torch

from .. import _checks
from ..data import SupportsEpoch, SupportsUnaugmented, batch_indices


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


def test_source(test_data, *, like, shape, device, workers: int, num_classes, seed: int):
    """The test set's source (None without one): (images, labels) or a Dataset of (image, label) pairs, its images
    stored like the training inputs ``like`` (uint8 or floating point: they are prepared alike)."""
    if test_data is None:
        return None
    kind = "uint8" if like.uint8 else "floating-point"
    if isinstance(test_data, torch.utils.data.Dataset):
        _checks.image_dataset("test_data", test_data, shape)
        source = data_source("test_data", test_data, None, device=device, workers=workers, num_classes=num_classes,
                             seed=seed)
        if source.uint8 != like.uint8:
            _checks.fail("test_data", f"{kind} images like the training inputs", test_data[0][0])
        return source
    images = _checks.image_batch("test_data[0]", test_data[0], shape)
    if (images.dtype == torch.uint8) != like.uint8:
        _checks.fail("test_data[0]", f"{kind} images like the training inputs", images)
    labels = _checks.labels("test_data[1]", np.asarray(test_data[1]), count=images.shape[0], num_classes=num_classes)
    return data_source("test_data", images, labels, device=device, workers=workers, num_classes=num_classes,
                       seed=seed)


def checked_workers(value, device) -> int:
    """``loader_workers``: "auto" is 0 on a CPU (the training threads use its cores) and up to 8 on a GPU."""
    if value == "auto":
        return min(8, os.cpu_count() or 1) if device.type == "cuda" else 0
    return _checks.integer("loader_workers", value, minimum=0)


class TrainingBatches:
    """The batch of a training step: drawn from a per-epoch permutation seeded by (seed, phase, epoch), so that
    a resumed run draws the same ones; augmented from a generator seeded by (seed, phase, step); inside a
    process group of K ranks this rank's contiguous share of it (shares differ by at most one sample)."""

    def __init__(self, data, *, batch_size, seed: int, device, augment, prepare, rank: int, world_size: int):
        self.data, self.batch_size, self.seed, self.device = data, batch_size, seed, device
        self.augment, self.prepare, self.rank, self.world_size = augment, prepare, rank, world_size
        self.count = data.count
        self.per_epoch = 1 if batch_size is None else -(-self.count // batch_size)
        self._order = (None, None, None)          # (phase, epoch), its batches, this rank's shares of them

    def draw(self, phase: int, step: int):
        """(prepared images, labels, loss scale) of ``step``'s batch: this rank's share of it inside a
        process group, whose loss is scaled by K·b_r/B so that DDP's mean of the ranks' gradients is
        the gradient of the whole batch's mean (1 in one process)."""
        epoch, position = divmod(step, self.per_epoch)
        batches = self._epoch_batches(phase, epoch)
        index, size = batches[position], self.count if batches[position] is None else len(batches[position])
        if self.data.streamed:      # this rank's share only, read from the dataset
            images, labels = self.data.batch((phase, epoch), epoch, position, self._order[2])
        else:
            images, labels = self.data.batch(index)
        if self.augment is not None:
            generator = torch.Generator(device=self.device)
            generator.manual_seed(hash((self.seed, phase, step)) & 0x7FFF_FFFF_FFFF)
            images = self.augment(images, generator)      # the global batch's draws on every rank
        scale = 1.0
        if self.world_size > 1:
            if not self.data.streamed:
                images, labels = self._share(images), self._share(labels)
            scale = self.world_size * labels.shape[0] / size
        return self.prepare(images), labels, scale

    def _epoch_batches(self, phase: int, epoch: int) -> list:
        """The epoch's global batches (index tensors; [None] for the full batch); for a Dataset also this
        rank's share of each, as lists of sample indices (``_order[2]``)."""
        if self._order[0] == (phase, epoch):
            return self._order[1]
        if self.batch_size is None or self.batch_size == self.count:
            batches = [None]
        else:
            batches = batch_indices(self.count, self.batch_size, seed=self.seed * 7919 + phase, epoch=epoch,
                                    device="cpu" if self.data.streamed else self.device)
        shares = None
        if self.data.streamed:
            shares = [self._share(torch.arange(self.count) if index is None else index).tolist()
                      for index in batches]
        self._order = ((phase, epoch), batches, shares)
        return batches

    def _share(self, batch):
        return torch.tensor_split(batch, self.world_size)[self.rank]
