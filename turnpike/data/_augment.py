"""Normalisation, augmentation and batch order for image data that lives on the GPU.

Everything here is a batched tensor operation on the batch's own device — no per-sample
Python loops, no loader processes — so a training loop can keep the whole data set on the
GPU as uint8 and build each batch with a handful of kernels:

    generator = epoch_generator(seed, epoch, images.device)
    for index in batch_indices(len(labels), 128, seed=seed, epoch=epoch, device=images.device):
        batch = normalise(augment(images[index], generator=generator), mean, std)

Augment the uint8 images first, then normalise: the crop's padding is then black (pixel 0),
as in the usual CIFAR recipe, and the augmentation moves a quarter of the bytes.

Randomness comes from a ``torch.Generator`` on the images' device (``epoch_generator`` makes
one from a seed and an epoch), so a batch is reproducible from its seed; CPU and CUDA draw
different streams, but each is deterministic.
"""
from __future__ import annotations

from collections.abc import Sequence
from numbers import Real

import numpy as np
import torch
import torch.nn.functional as F

from .._checks import device as checked_device
from .._checks import fail, integer, real


def _check_batch(name: str, images) -> torch.Tensor:
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        fail(name, "a tensor of shape (batch, channels, height, width)", images)
    return images


def _check_generator(generator, device: torch.device):
    if generator is None:
        return None
    if not isinstance(generator, torch.Generator):
        fail("generator", "a torch.Generator or None", generator)
    # torch refuses a generator on another device with an opaque message; say which one is needed
    here = generator.device
    if here.type != device.type or (None not in (here.index, device.index) and here.index != device.index):
        raise ValueError(f"generator: expected a torch.Generator on the images' device ({device}), "
                         f"got one on {here}")
    return generator


def checked_statistics(mean, std, channels: int, *, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, std) as (1, C, 1, 1) tensors that broadcast over a batch: each C per-channel values (a list,
    tuple, numpy array or tensor) or one number for every channel; finite, and std > 0."""
    return (_channel_stats("mean", mean, channels, device, dtype, positive=False),
            _channel_stats("std", std, channels, device, dtype, positive=True))


def _channel_stats(name: str, values, channels: int, device, dtype, *, positive: bool) -> torch.Tensor:
    given = values
    if isinstance(values, (torch.Tensor, np.ndarray)):
        values = values.tolist()
    if isinstance(values, (Real, np.number)) and not isinstance(values, bool):
        values = [values] * channels
    if not isinstance(values, Sequence) or isinstance(values, str) or len(values) != channels:
        fail(name, f"{channels} per-channel values (one per image channel) or one number for all", given)
    checked = [real(f"{name}[{i}]", v, minimum=0.0 if positive else None, strict_min=positive)
               for i, v in enumerate(values)]
    return torch.tensor(checked, dtype=dtype, device=device).view(1, channels, 1, 1)


def normalise(images: torch.Tensor, mean, std, dtype=torch.float32) -> torch.Tensor:
    """``(images / 255 - mean) / std`` per channel: uint8 (B, C, H, W) → ``dtype`` (B, C, H, W).

    ``mean`` and ``std`` are the per-channel statistics of the training images in [0, 1]
    (``ImageTensors.mean`` / ``.std``): C values each, or one number for every channel.
    """
    _check_batch("images", images)
    if images.dtype != torch.uint8:
        # float input would be scaled by 1/255 a second time; refuse it rather than guess
        fail("images", "uint8 pixel values 0..255", images)
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        fail("dtype", "a floating-point torch dtype", dtype)
    mean_t, std_t = checked_statistics(mean, std, images.shape[1], device=images.device, dtype=dtype)
    return images.to(dtype).div_(255).sub_(mean_t).div_(std_t)


def random_crop(images: torch.Tensor, padding: int = 4, generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-sample random crops: zero-pad each side by ``padding``, cut out H×W at a random offset.

    Sample ``b`` is ``padded[b, :, dy:dy+H, dx:dx+W]`` with ``dy, dx`` uniform in 0..2·padding,
    drawn independently per sample (offset (padding, padding) is the identity). Any dtype.
    """
    _check_batch("images", images)
    padding = integer("padding", padding, minimum=0)
    generator = _check_generator(generator, images.device)
    offsets = torch.randint(0, 2 * padding + 1, (images.shape[0], 2), generator=generator, device=images.device)
    return _crop_at(images, offsets, padding)


def _crop_at(images: torch.Tensor, offsets: torch.Tensor, padding: int) -> torch.Tensor:
    """``padded[b, :, dy:dy+H, dx:dx+W]`` for each sample, with ``(dy, dx) = offsets[b]``; offsets (B, 2)."""
    batch, channels, height, width = images.shape
    padded = F.pad(images, (padding, padding, padding, padding))                    # (B, C, H+2p, W+2p), zeros
    rows = offsets[:, :1] + torch.arange(height, device=images.device)             # (B, H)
    cols = offsets[:, 1:] + torch.arange(width, device=images.device)              # (B, W)
    # two gathers, rows then columns, keep the output contiguous in (B, C, H, W)
    picked_rows = padded.gather(2, rows[:, None, :, None].expand(batch, channels, height, width + 2 * padding))
    return picked_rows.gather(3, cols[:, None, None, :].expand(batch, channels, height, width))


#: tries per image to draw a box that fits, as torchvision's RandomResizedCrop; after them, the whole image
_BOX_TRIES = 10


def random_resized_crop(images: torch.Tensor, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3),
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-sample random-resized crops of a batch, torchvision's ``RandomResizedCrop`` recipe on the stored
    images: each sample's box covers an area fraction uniform in ``scale`` of its H×W, with width/height
    log-uniform in ``ratio`` (integer sides, drawn up to 10 times until the box fits, else the whole image),
    at a uniform integer offset, and is resized back to H×W bilinearly (no antialiasing: F.interpolate's
    ``align_corners=False`` arithmetic on the box). One ``grid_sample`` for the batch, on its device.
    uint8 images come back uint8 (rounded), float ones in their dtype.
    """
    _check_batch("images", images)
    scale = _range("scale", scale, upper=1.0)
    ratio = _range("ratio", ratio, upper=None)
    generator = _check_generator(generator, images.device)
    boxes = _random_boxes(images.shape[0], *images.shape[2:], scale, ratio, generator, images.device)
    return _resized(images, boxes)


def _range(name: str, values, *, upper) -> tuple[float, float]:
    if not isinstance(values, Sequence) or isinstance(values, str) or len(values) != 2:
        fail(name, "a pair (low, high)", values)
    low, high = (real(f"{name}[{i}]", v, minimum=0.0, strict_min=True, maximum=upper) for i, v in enumerate(values))
    if low > high:
        fail(name, "low <= high", values)
    return low, high


def _random_boxes(batch: int, height: int, width: int, scale, ratio, generator, device) -> torch.Tensor:
    """(B, 4) integer boxes (top, left, box height, box width), drawn as :func:`random_resized_crop` says."""
    draws = torch.rand((batch, _BOX_TRIES, 4), generator=generator, device=device, dtype=torch.float64)
    area = height * width * (scale[0] + (scale[1] - scale[0]) * draws[..., 0])                # (B, tries)
    log_low, log_high = np.log(ratio[0]), np.log(ratio[1])
    aspect = torch.exp(log_low + (log_high - log_low) * draws[..., 1])
    box_width = torch.sqrt(area * aspect).round()
    box_height = torch.sqrt(area / aspect).round()
    fits = (box_width >= 1) & (box_width <= width) & (box_height >= 1) & (box_height <= height)
    first = fits.double().argmax(1, keepdim=True)                                               # first fit
    found = fits.any(1)
    box_height = torch.where(found, box_height.gather(1, first)[:, 0], torch.full_like(found, height, dtype=area.dtype))
    box_width = torch.where(found, box_width.gather(1, first)[:, 0], torch.full_like(found, width, dtype=area.dtype))
    top = (draws[..., 2].gather(1, first)[:, 0] * (height - box_height + 1)).floor().clamp(max=height - box_height)
    left = (draws[..., 3].gather(1, first)[:, 0] * (width - box_width + 1)).floor().clamp(max=width - box_width)
    return torch.stack([top, left, box_height, box_width], 1).long()


def _resized(images: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Each sample's box (top, left, height, width) resized to the images' H×W, bilinearly: what
    ``F.interpolate(crop, (H, W), mode="bilinear", align_corners=False)`` makes of the cut-out box (its
    sampling points clamped to the box's pixels, never its neighbours'), one grid_sample for the batch."""
    batch, _, height, width = images.shape
    source = images if images.is_floating_point() else images.to(torch.float32)
    boxes = boxes.to(device=images.device, dtype=source.dtype)

    def sampled(start, size, length):          # (B, length) grid coordinates of one axis, in [-1, 1]
        centres = torch.arange(length, device=images.device, dtype=source.dtype) + 0.5
        inside = (centres[None] * size[:, None] / length - 0.5).clamp(min=0)        # in box pixels
        inside = torch.minimum(inside, size[:, None] - 1)
        return (2 * (start[:, None] + inside) + 1) / length - 1

    rows = sampled(boxes[:, 0], boxes[:, 2], height)                                  # (B, H)
    cols = sampled(boxes[:, 1], boxes[:, 3], width)                                   # (B, W)
    grid = torch.stack([cols[:, None, :].expand(batch, height, width),
                        rows[:, :, None].expand(batch, height, width)], dim=-1)        # (B, H, W, 2): x, y
    resized = F.grid_sample(source, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return resized if images.is_floating_point() else resized.round_().clamp_(0, 255).to(images.dtype)


def random_flip(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Mirror each sample left-right with probability 1/2, independently. Any dtype."""
    _check_batch("images", images)
    generator = _check_generator(generator, images.device)
    flip = torch.randint(0, 2, (images.shape[0],), generator=generator, device=images.device).bool()
    return torch.where(flip[:, None, None, None], images.flip(3), images)


def augment(images: torch.Tensor, *, crop_padding: int = 4, flip: bool = True,
            generator: torch.Generator | None = None) -> torch.Tensor:
    """Random crop (skipped when ``crop_padding`` is 0), then random horizontal flip if ``flip``.

    ``flip`` is on by default, as CIFAR wants; turn it off for digits (MNIST), whose mirror
    images are not digits. Fashion-MNIST's classes are left-right symmetric, so either works.
    """
    _check_batch("images", images)
    if not isinstance(flip, bool):
        fail("flip", "True or False", flip)
    if integer("crop_padding", crop_padding, minimum=0) > 0:
        images = random_crop(images, crop_padding, generator)
    if flip:
        images = random_flip(images, generator)
    return images


def _epoch_seed(seed: int, epoch: int) -> int:
    # SeedSequence mixes (seed, epoch) so that neighbouring seeds and epochs give unrelated streams
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1, np.uint64)[0])


def epoch_generator(seed: int, epoch: int, device="cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded from (seed, epoch), e.g. for ``augment``."""
    seed = integer("seed", seed, minimum=0)
    epoch = integer("epoch", epoch, minimum=0)
    device = checked_device("device", device)
    return torch.Generator(device=device).manual_seed(_epoch_seed(seed, epoch))


def batch_indices(count: int, batch_size: int, *, seed: int, epoch: int, device="cpu", drop_last: bool = False,
                  rank: int = 0, world_size: int = 1) -> list[torch.Tensor]:
    """This epoch's mini-batches for one rank: a list of int64 index tensors on ``device``.

    The epoch's order is a permutation of ``range(count)`` drawn on the CPU from (seed, epoch)
    alone, so it is the same on every device and a resumed run redraws the same batches.
    With ``world_size`` > 1 the permutation is cut to a multiple of ``world_size`` by DROPPING
    its last ``count % world_size`` entries (different samples each epoch), and rank ``r`` takes
    every ``world_size``-th entry from position ``r``: shares are disjoint and of equal size, so
    every rank makes the same number of steps. Each share is split into batches of
    ``batch_size``; ``drop_last`` drops a final shorter batch.
    """
    count = integer("count", count, minimum=1)
    batch_size = integer("batch_size", batch_size, minimum=1)
    world_size = integer("world_size", world_size, minimum=1)
    rank = integer("rank", rank, minimum=0)
    if rank >= world_size:
        fail("rank", f"a rank in 0..{world_size - 1}", rank)
    if not isinstance(drop_last, bool):
        fail("drop_last", "True or False", drop_last)
    share = count // world_size
    if share == 0:
        fail("count", f"at least world_size={world_size} samples", count)
    if drop_last and share < batch_size:
        fail("batch_size", f"at most {share} (the samples per rank) with drop_last=True", batch_size)
    device = checked_device("device", device)
    cpu = epoch_generator(seed, epoch, "cpu")
    order = torch.randperm(count, generator=cpu)[rank:share * world_size:world_size]    # (share,)
    batches = list(torch.split(order.to(device), batch_size))
    if drop_last and len(batches[-1]) < batch_size:
        batches.pop()
    return batches
