r"""Early-exit inference with the exits a stage-cost network was trained with.

Each image runs block by block and stops at the first exit k whose softmax confidence
:math:`\max_c \mathrm{softmax}(\hat y_k)_c` exceeds the threshold τ; the output exit N answers
the rest. Exiting at k costs the stem and k blocks (plus exit k's skips and head). τ = 0 stops
every image at exit 0 (a softmax maximum is at least 1/C > 0); τ = 1 never stops early (no
confidence exceeds 1), so it is the full network. The comparison is strict for that reason.

In eval mode every BatchNorm uses its running statistics, so an image's result does not depend
on which others share its batch: the images that stop leave the batch and the rest go on.
"""
from __future__ import annotations

import time
from collections.abc import Iterable, Iterator

import numpy as np
import torch

from .._checks import boolean, fail, image_batch, integer, labels as class_labels, real
from ._protocol import ModuleSystem


def _checked_network(network):
    """A network with exits (:class:`ModuleSystem`: any ResidualNetwork, or one of the user's)."""
    if not isinstance(network, ModuleSystem):
        fail("network", "a ResidualNetwork (e.g. turnpike.preact_resnet(...)), or another network with exits (a "
                        "turnpike.systems.ModuleSystem: exits are what early exit needs)", network)
    return network


def _checked_threshold(name: str, threshold) -> float:
    return real(name, threshold, minimum=0.0, maximum=1.0)


def _checked_images(network: ModuleSystem, images) -> torch.Tensor:
    """At least one finite float image (B, in_channels, H, W), numpy or torch, on the network's device; as
    a tensor of the network's dtype. uint8 images are refused: the network wants them prepared as in
    training (scaled and normalised by the training set's statistics, which it does not know)."""
    tensor = network.check_inputs(image_batch("images", images, network.input_shape), "images")
    if tensor.shape[0] < 1:
        fail("images", "at least one image", tensor)
    parameter = next(network.parameters())
    if tensor.device != parameter.device:
        raise ValueError(f"images: expected images on the network's device {parameter.device}, "
                         f"got images on {tensor.device}")
    return tensor.to(parameter.dtype)


@torch.no_grad()
def early_exit_predict(network: ModuleSystem, images: torch.Tensor, threshold: float) -> tuple:
    """(predicted classes (B,), exit index per image (B,)): each image stops at the first exit whose
    softmax confidence exceeds ``threshold``, at exit N otherwise. Runs in eval mode (restored after).

    ``images``: float images (B, in_channels, H, W) prepared as in training, numpy or torch, on the
    network's device."""
    network = _checked_network(network)
    threshold = _checked_threshold("threshold", threshold)
    return _predict(network, _checked_images(network, images), threshold)


@torch.no_grad()
def _predict(network: ModuleSystem, images: torch.Tensor, threshold: float) -> tuple:
    """:func:`early_exit_predict` on checked arguments (the timed loop of :func:`early_exit_curve`)."""
    was_training = network.training
    network.eval()
    try:
        count, depth = images.shape[0], network.depth
        predictions = torch.empty(count, dtype=torch.long, device=images.device)
        exits = torch.full((count,), depth, dtype=torch.long, device=images.device)
        active = torch.arange(count, device=images.device)
        x = network.stem(images)
        for k in range(depth + 1):
            confidence, predicted = network.exit_logit(k, x).softmax(-1).max(-1)
            done = confidence > threshold if k < depth else torch.ones_like(confidence, dtype=torch.bool)
            predictions[active[done]] = predicted[done]
            exits[active[done]] = k
            active, x = active[~done], x[~done]
            if active.numel() == 0:
                break
            x = network.blocks[k](x)
        return predictions, exits
    finally:
        network.train(was_training)


def _checked_thresholds(thresholds) -> list:
    values = thresholds.tolist() if hasattr(thresholds, "tolist") else thresholds
    values = list(values) if isinstance(values, (list, tuple)) else [values]
    if not values:
        fail("thresholds", "at least one confidence threshold in [0, 1]", thresholds)
    return [_checked_threshold(f"thresholds[{i}]", t) for i, t in enumerate(values)]


@torch.no_grad()
def early_exit_curve(network: ModuleSystem, images, labels, thresholds, *, batch_size: int | None = None,
                     measure_speed: bool = False) -> dict:
    """Accuracy against the mean number of blocks executed, over ``thresholds``.

    ``images`` (B, C, H, W) prepared as in training, on the network's device, with their ``labels``; or,
    for a test set read batch by batch, ``images`` an iterable of (images, labels) batches so prepared
    and ``labels`` None (iterated once, and once more per threshold with ``measure_speed``: a DataLoader
    or another re-iterable, not a generator). ``batch_size`` (default 256) splits a tensor; batches come
    with their own size.

    The decisions come from all exits' logits, computed once per batch (eval mode); with
    ``measure_speed`` each threshold is also run through :func:`early_exit_predict` and timed
    :data:`SPEED_REPEATS` times (``images_per_s``: the median, ``images_per_s_range``: [slowest, fastest]; the
    network's time alone). Returns ``{"thresholds", "accuracy", "mean_blocks", "mean_compute", "images_per_s",
    "images_per_s_range"}`` (lists) and ``"exit_accuracy"``, each exit's own accuracy.
    ``mean_compute`` is the multiply-adds early exit spends per image over those of the plain network
    (:meth:`ModuleSystem.exit_costs`: the blocks run and every head evaluated on the way; above 1
    when few images stop early, since the plain network evaluates one head).
    """
    network = _checked_network(network)
    thresholds = _checked_thresholds(thresholds)
    measure_speed = boolean("measure_speed", measure_speed)
    batches = _batch_source(network, images, labels, batch_size, again=measure_speed)
    was_training = network.training
    network.eval()
    try:
        confidences, predictions, all_labels, size = [], [], [], None
        for batch, batch_labels in batches():
            probabilities = network.exit_logits(batch).softmax(-1)                     # (N+1, b, C)
            confidence, predicted = probabilities.max(-1)
            confidences.append(confidence)
            predictions.append(predicted)
            all_labels.append(batch_labels.to(predicted.device))
            size = batch.shape[2:]
    finally:
        network.train(was_training)
    if size is None:
        fail("images", "at least one batch of images", images)
    confidence, predicted = torch.cat(confidences, 1), torch.cat(predictions, 1)          # (N+1, D)
    correct = predicted == torch.cat(all_labels)[None]
    depth = network.depth
    result = {"thresholds": thresholds, "accuracy": [], "mean_blocks": [], "mean_compute": [], "images_per_s": [],
              "images_per_s_range": [], "exit_accuracy": correct.double().mean(1).tolist()}
    costs = network.exit_costs(*size)
    relative_cost = torch.tensor(costs["early_exit"], dtype=torch.float64, device=predicted.device) / costs["network"]
    for threshold in thresholds:
        stops = confidence > threshold
        stops[depth] = True                                               # the output answers the rest
        first = stops.double().argmax(0)                                  # first exit that stops, (D,)
        result["accuracy"].append(float(correct.gather(0, first[None]).double().mean()))
        result["mean_blocks"].append(float(first.double().mean()))
        result["mean_compute"].append(float(relative_cost[first].mean()))
        if measure_speed:
            speeds = sorted(_images_per_second(network, batches, threshold) for _ in range(SPEED_REPEATS))
            result["images_per_s"].append(speeds[len(speeds) // 2])
            result["images_per_s_range"].append([speeds[0], speeds[-1]])
    return result


#: timed passes over the images per threshold: their median is the reported speed, their extremes its range
SPEED_REPEATS = 3


def _batch_source(network, images, labels, batch_size, *, again: bool):
    """A function returning a fresh iterator of checked (images, labels) batches: slices of the tensor
    ``images`` with ``labels``, or the batches ``images`` holds (``labels`` None)."""
    if labels is not None:
        images = _checked_images(network, images)
        labels = torch.as_tensor(class_labels("labels", labels, count=images.shape[0],
                                              num_classes=network.num_classes))
        size = 256 if batch_size is None else integer("batch_size", batch_size, minimum=1)
        return lambda: ((images[begin:begin + size], labels[begin:begin + size])
                        for begin in range(0, images.shape[0], size))
    if isinstance(images, (torch.Tensor, np.ndarray)):
        fail("labels", "the labels of the images (None only with an iterable of (images, labels) batches)", None)
    if not isinstance(images, Iterable) or (again and isinstance(images, Iterator)):
        fail("images", "a tensor of images with their labels, or (labels=None) a re-iterable of (images, labels) "
                       "batches such as a DataLoader", images)
    if batch_size is not None:
        fail("batch_size", "None with batches (each has its own size)", batch_size)

    def checked():
        for index, pair in enumerate(images):
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                fail(f"images[{index}]", "an (images, labels) batch", pair)
            batch = _checked_images(network, pair[0])
            yield batch, torch.as_tensor(class_labels(f"images[{index}] labels", pair[1], count=batch.shape[0],
                                                      num_classes=network.num_classes))
    return checked


def _images_per_second(network, batches, threshold: float) -> float:
    """Images per second of early exit at ``threshold``, timing the network alone (not the reading)."""
    seconds, count = 0.0, 0
    for batch, _ in batches():
        start = time.perf_counter()
        _predict(network, batch, threshold)
        if batch.device.type == "cuda":
            torch.cuda.synchronize(batch.device)
        seconds += time.perf_counter() - start
        count += batch.shape[0]
    return count / seconds
