"""Reading a module checkpoint: the file, and an optimiser state saved in another parameter order or shape (a
network that reads another layout's states, e.g. the former PreActResNet class's)."""
from __future__ import annotations

import torch


def reordered(optimiser: dict, saved: list, current: list) -> dict:
    """An optimiser state whose parameter i is the parameter named ``saved[i]``, renumbered for the parameters
    named ``current`` (the same names and groups, listed in another order)."""
    position = {name: i for i, name in enumerate(current)}
    new = [position[name] for name in saved]
    groups = [{**group, "params": sorted(new[i] for i in group["params"])} for group in optimiser["param_groups"]]
    return {"state": {new[i]: values for i, values in optimiser["state"].items()}, "param_groups": groups}


def read_checkpoint_file(path, device) -> dict:
    """The contents of a module checkpoint (module state, optimiser state, the solve's fields)."""
    try:
        saved = torch.load(path, map_location=device, weights_only=True)
    except Exception as error:                                  # noqa: BLE001 (any unreadable file)
        raise ValueError(f"checkpoint: expected a turnpike checkpoint, could not read {path}: {error}") from None
    if not isinstance(saved, dict) or not {"module", "optimiser", "history"} <= set(saved):
        raise ValueError(f"checkpoint: expected a turnpike checkpoint of a module system, got {path}, which holds "
                         f"{sorted(saved) if isinstance(saved, dict) else type(saved).__name__}")
    return saved


def shaped_like_parameters(optimiser: torch.optim.Optimizer) -> None:
    """Give every state tensor saved in another shape of its parameter's size (e.g. a copy stored as (rows, C_out,
    C_in), now (rows, numel)) the parameter's shape."""
    for parameter, values in optimiser.state.items():
        for name, value in values.items():
            if torch.is_tensor(value) and value.shape != parameter.shape and value.numel() == parameter.numel():
                values[name] = value.reshape(parameter.shape)
