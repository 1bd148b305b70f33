"""What a ``torch.utils.data.Dataset`` may provide so that a run reading it batch by batch stays exact.

The module backend reads a Dataset through a ``DataLoader`` whose batches are the same per-epoch
permutation as for tensors held in memory (:func:`~turnpike.data.batch_indices`). Two optional
protocols, checked with ``isinstance`` (any class with these methods satisfies them):

- :class:`SupportsEpoch`: ``set_epoch(epoch)`` is called before each epoch's batches are read (the
  convention of torch's ``DistributedSampler``). A dataset that draws its augmentation from
  (seed, epoch, index) alone, as :class:`~turnpike.data.ImageFolderDataset` does, then gives the
  same images in a resumed run, with any number of loader workers.
- :class:`SupportsUnaugmented`: ``unaugmented()`` returns the same items without augmentation; the
  solution evaluates the training set (and recalibrates the exits' BatchNorm statistics) on it, as
  it does on the un-augmented tensors. Without it the training set is evaluated as the dataset
  returns its items.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class SupportsEpoch(Protocol):
    """A dataset whose items depend on the epoch (its augmentation's draws)."""

    def set_epoch(self, epoch: int) -> None:
        """Make the next reads draw ``epoch``'s items."""


@runtime_checkable
class SupportsUnaugmented(Protocol):
    """A dataset that can give its items without augmentation."""

    def unaugmented(self):
        """The same items, in the same order, not augmented (a ``torch.utils.data.Dataset``)."""


__all__ = ["SupportsEpoch", "SupportsUnaugmented"]
