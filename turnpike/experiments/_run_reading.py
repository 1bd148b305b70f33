"""Reading the run folders of the training commands: their configs (one explicit table of the commands) and the
networks they saved."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import torch

from .. import _checks
from .._runs import read_json, stored_settings
from ..systems._residual import ResidualNetwork
from ._recipe import TrainingRecipe
from ._resnet54 import ResNet54Config
from ._train import TrainConfig

#: the training commands whose run folders these functions read, and their config classes
TRAINING_COMMANDS = {"resnet54": ResNet54Config, "train": TrainConfig}


def _commands(command: str | None) -> str:
    """"`turnpike resnet54`", or every training command's name for None."""
    return " or ".join(f"`turnpike {name}`" for name in ([command] if command else TRAINING_COMMANDS))


def _run_file(folder, name: str, command: str | None = None) -> Path:
    path = Path(folder) / name
    if not path.is_file():
        _checks.fail("folder", f"a finished {_commands(command)} run folder with {name}", str(folder))
    return path


def run_config(folder, *, command: str | None = None, device: str | None = None,
               data_dir: str | None = None) -> TrainingRecipe:
    """The config a run folder of ``turnpike resnet54`` or ``turnpike train`` was trained with (its
    ``config.json``), as the command's config class; ``command`` requires that command's folder; ``device``
    replaces the stored one (a folder trained on a GPU is read on a CPU), ``data_dir`` the stored data folder
    (data moved since: :func:`load_run_data` checks it is the same)."""
    path = _run_file(folder, "config.json", command)
    stored = read_json(path, "the config.json of a training run")
    settings = stored.get("config") if isinstance(stored, dict) else None
    made_by = stored.get("command", "resnet54") if isinstance(stored, dict) else None
    kind = TRAINING_COMMANDS.get(made_by)
    if kind is None or not isinstance(settings, dict) or command not in (None, made_by):
        by = made_by if isinstance(made_by, str) else "another program"
        _checks.fail("folder", f"a {_commands(command)} run folder", f"{folder}, whose config.json was written by {by}")
    settings = stored_settings(settings, kind, f"folder: {path}")    # settings added since: their defaults
    settings["milestones"] = tuple(settings["milestones"])
    if device is not None:
        settings["device"] = device
    if data_dir is not None:
        settings["data_dir"] = data_dir
    return kind.from_stored(settings)


def load_run_data(folder, config: TrainingRecipe):
    """The run's data as ``config`` reads it, refused (naming --data) unless it is the data the run in ``folder``
    was trained on (its ``config.json``'s fingerprint; folders written before it have none: not checked)."""
    data = config.load_data()
    stored = read_json(_run_file(folder, "config.json"), "the config.json of a training run").get("data_fingerprint")
    if stored is not None and stored != data.fingerprint():
        raise ValueError(f"data_dir: expected the images and labels the run in {folder} was trained on "
                         f"(fingerprint {stored}), got other data in {config.data_dir}")
    return data


def load_run_network(folder, *, device="cpu", command: str | None = None):
    """The network a finished run folder holds (``network.pt``), in eval mode and the run's memory format, as
    evaluated for its metrics: e.g. for :func:`turnpike.early_exit_predict` or ``subresnet(M)``. A missing or
    unreadable ``config.json`` or ``network.pt``, or weights of another network, is a ValueError naming the
    file."""
    device = _checks.device("device", device)
    config = run_config(folder, command=command, device=str(device))
    path = _run_file(folder, "network.pt", command)
    saved = f"the network a finished `turnpike {config.command}` run saved"
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as error:                         # noqa: BLE001 (truncated, not a torch file, ...)
        raise ValueError(f"{path}: expected {saved}, got an unreadable file ({type(error).__name__}: "
                         f"{error})") from None
    if not isinstance(state, dict) or not {"state_dict", "channels", "num_classes"} <= set(state):
        raise ValueError(f"{path}: expected {saved} (a dict with state_dict, channels and num_classes), got "
                         f"{sorted(state) if isinstance(state, dict) else type(state).__name__}")
    shape = SimpleNamespace(channels=state["channels"], num_classes=state["num_classes"])
    network = config.build_network(shape, initial_weights=False).to(device)
    try:
        network.load_state_dict(state["state_dict"])
    except (RuntimeError, TypeError, AttributeError) as error:
        raise ValueError(f"{path}: expected the weights of the network its config.json describes, got others "
                         f"({str(error).splitlines()[0]})") from None
    if config.channels_last:         # as it was trained: channels-last inference is 1.6x NCHW's on a CPU
        network.to(memory_format=torch.channels_last)
    return network.eval()


def load_resnet54_network(folder, *, device="cpu") -> ResidualNetwork:
    """The network a ``turnpike resnet54`` run folder holds (``network.pt``), in eval mode and the run's
    memory format, as evaluated for its metrics: e.g. for :func:`turnpike.early_exit_predict` or
    :meth:`ResidualNetwork.subresnet`. A missing or unreadable ``config.json`` or ``network.pt``, or weights of
    another network, is a ValueError naming the file."""
    return load_run_network(folder, device=device, command="resnet54")


#: how an unfinished run stopped: its checkpoint continues with --resume
UNFINISHED = ("time_limit", "interrupted", "stopped")


def unfinished(metrics: dict) -> str | None:
    """What an unfinished run's metrics say of it ("stopped at the time limit after 2 of 30 epochs"), or None for
    a finished run."""
    status = metrics.get("status")
    if status not in UNFINISHED:
        return None
    done, total = metrics.get("epochs_done"), metrics.get("epochs")
    how = {"time_limit": "at the time limit", "interrupted": "by a signal", "stopped": "early"}[status]
    return f"stopped {how}" + (f" after {done} of {total} epochs" if done is not None and total is not None else "")


def check_finished(folder, metrics: dict, *, allow_unfinished: bool) -> str | None:
    """None for a finished run; for an unfinished one a ValueError naming the folder, or with ``allow_unfinished``
    the label that results computed from it carry."""
    state = unfinished(metrics)
    if state is not None and not allow_unfinished:
        raise ValueError(f"folder: expected a finished run (the same command with --resume continues this one; "
                         f"--allow-unfinished uses its network as it is), got {folder}, {state}")
    return None if state is None else f"unfinished run: {state}"
