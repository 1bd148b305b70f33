"""Pretrained weights into a user's network: what ``turnpike train --weights FILE`` does.

A weights file is what ``torch.save(model.state_dict(), FILE)`` writes (torchvision's published ResNet files are
such), or a checkpoint holding one under ``"state_dict"`` or ``"model"`` (PyTorch Lightning, many training
scripts); a ``module.`` prefix (a DistributedDataParallel model's) is dropped. Every tensor of the network whose
name and shape the file has is loaded; the others keep their initial values and are reported: typically the
classifier (``fc``) of a network trained on 1,000 classes and fine-tuned here on another number.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .._checks import fail

__all__ = ["WeightsReport", "load_weights"]


@dataclass(frozen=True)
class WeightsReport:
    """What :func:`load_weights` did: the file, how many tensors it loaded, those it kept as initialised
    (``{name: reason}``) and the file's tensors the network has no place for."""
    source: str
    loaded: int
    kept: dict = field(default_factory=dict)
    unused: tuple = ()

    def as_dict(self) -> dict:
        return {"source": self.source, "loaded": self.loaded, "kept": dict(self.kept), "unused": list(self.unused)}


def _state_dict(weights, source: str) -> dict:
    """The {name: tensor} a weights file or dict holds."""
    if isinstance(weights, (str, Path)):
        path = Path(weights)
        if not path.is_file():
            raise ValueError(f"weights: expected a file of saved weights (torch.save(model.state_dict(), FILE)), "
                             f"got {path}, which {'is a folder' if path.is_dir() else 'does not exist'}")
        try:
            weights = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:                     # noqa: BLE001 (not a torch file, truncated, pickled code)
            raise ValueError(f"weights: expected a file torch.save wrote with tensors only, got {path} "
                             f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})") from None
    for key in ("state_dict", "model"):
        if isinstance(weights, dict) and isinstance(weights.get(key), dict):
            weights = weights[key]
    if not isinstance(weights, dict) or not weights or \
            not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in weights.items()):
        raise ValueError(f"weights: expected a state_dict (a dict of parameter names to tensors), got {source}, "
                         f"which holds {type(weights).__name__ if not isinstance(weights, dict) else 'other entries'}")
    return {name.removeprefix("module."): tensor for name, tensor in weights.items()}


@torch.no_grad()
def load_weights(model: nn.Module, weights) -> WeightsReport:
    """Load ``weights`` (a file path or a state_dict) into ``model`` where names and shapes match.

    Returns a :class:`WeightsReport`. A file that matches none of the model's tensors is refused with the
    names on both sides (another network's file, or a prefix to strip), as is a file that is not a state_dict.
    """
    if not isinstance(model, nn.Module):
        fail("model", "a torch.nn.Module", model)
    source = str(Path(weights).resolve()) if isinstance(weights, (str, Path)) else "a state_dict"
    given = _state_dict(weights, source)
    own = model.state_dict()
    matching, kept = {}, {}
    for name, tensor in own.items():
        if name not in given:
            kept[name] = "not in the file"
        elif given[name].shape != tensor.shape:
            kept[name] = f"shape {tuple(given[name].shape)} in the file, {tuple(tensor.shape)} here"
        else:
            matching[name] = given[name]
    if not matching:
        raise ValueError(f"weights: expected the weights of this network (names such as {', '.join(list(own)[:3])}), "
                         f"got {source} with names such as {', '.join(list(given)[:3])} (another network's, or "
                         "names under a prefix to strip)")
    model.load_state_dict(matching, strict=False)
    return WeightsReport(source, len(matching), kept, tuple(name for name in given if name not in own))
