r"""Tables 2–3 of the 2025 paper from ``turnpike resnet54`` or ``turnpike train`` run folders: Theorems 1–2
measured.

The network run is a ResNet-N trained with the stage cost (variant ``ws`` or ``full``); each
SubResNet run is the SubResNet-M architecture trained from scratch without it
(``--variant standard --subresnet M``, Definition 1), by the same command on the same data,
architecture and weight decay (the command config's ``architecture_fields``). From their ``metrics.json`` (training exit losses, residual-branch norms) and
``config.json`` (γ, λ) the rows of :func:`turnpike.theory.depth_bound_table` follow.

The weight-decay term is λ/2 Σ_k ‖w_{F,k}‖² over the residual branches, as in Theorem 1, for the
network and the SubResNets alike; the runs themselves decay every parameter (λ/2‖w‖²), so this
J_N is the theorem's objective evaluated at the trained weights, not the training objective.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import _checks
from .._runs import read_json
from ..theory import ExitLosses, depth_bound_table, format_depth_bound_table
from ._run_reading import TRAINING_COMMANDS

_COMMANDS = "`turnpike resnet54` or `turnpike train`"


def _read_run(folder, name: str) -> tuple[str, dict, dict]:
    """(command, config, metrics) of the finished training run in ``folder``; errors name the argument ``name``."""
    folder = Path(folder)
    paths = [folder / "config.json", folder / "metrics.json"]
    for path in paths:
        if not path.is_file():
            _checks.fail(name, f"a finished {_COMMANDS} run folder with {path.name}", str(folder))
    config = read_json(paths[0], f"the config.json of a {_COMMANDS} run")
    metrics = read_json(paths[1], f"the metrics.json of a finished {_COMMANDS} run")
    command = config.get("command", "resnet54") if isinstance(config, dict) else None
    if command not in TRAINING_COMMANDS or not isinstance(config.get("config"), dict) or "exit_train_loss" not in metrics:
        _checks.fail(name, f"a finished {_COMMANDS} run folder", f"{folder}, a run of another command")
    return command, config["config"], metrics


def run_exit_losses(metrics: dict) -> ExitLosses:
    """The training exit losses (exits 0..N) and ‖w_{F,k}‖² (blocks 0..N-1) of one run's metrics."""
    norms = np.asarray(metrics["branch_parameter_norms"], dtype=np.float64)
    return ExitLosses(np.asarray(metrics["exit_train_loss"], dtype=np.float64), norms ** 2)


def depth_bounds_from_runs(network, subresnets) -> dict:
    """Rows of Tables 2–3 for the run folder ``network`` against the SubResNet run folders ``subresnets``.

    Returns ``{"command", "model", "depth", "gamma", "weight_decay", "rows": [...], "table": Markdown}``
    (``model``: a train run's, None for resnet54); each row has
    M, L̄, J_N(w^N), J̄_N, L_avg, L̄_avg, C and the two gaps (see :class:`turnpike.theory.DepthBoundRow`).
    """
    command, config, metrics = _read_run(network, "network")
    if config["variant"] == "standard" or config["subresnet"] is not None:
        _checks.fail("network", "a run trained with the stage cost (--variant ws or full, no --subresnet)",
                     f"{network} (variant {config['variant']}, subresnet {config['subresnet']})")
    folders = [subresnets] if isinstance(subresnets, (str, Path)) else list(subresnets)
    if not folders:
        _checks.fail("subresnets", "one or more SubResNet run folders", folders)
    subs = []
    for folder in folders:
        sub_command, sub_config, sub_metrics = _read_run(folder, "subresnets")
        if sub_command != command:
            _checks.fail("subresnets", f"runs of `turnpike {command}`, the network's command",
                         f"{folder}, a `turnpike {sub_command}` run")
        if sub_config["variant"] != "standard" or sub_config["subresnet"] is None:
            _checks.fail("subresnets", "runs of --variant standard --subresnet M (trained from scratch)",
                         f"{folder} (variant {sub_config['variant']}, subresnet {sub_config['subresnet']})")
        different = [key for key in TRAINING_COMMANDS[command].architecture_fields if sub_config.get(key) != config.get(key)]
        if different:
            _checks.fail("subresnets", f"runs with the network's {', '.join(different)} (Theorem 1 compares "
                                       f"the same data, architecture and weight decay)", str(folder))
        subs.append(run_exit_losses(sub_metrics))
    gamma, decay = float(config["gamma"]), float(config["weight_decay"])
    rows = depth_bound_table(run_exit_losses(metrics), subs, gamma=gamma, decay=decay)
    return {"command": command, "model": config.get("model"), "depth": int(metrics["depth"]), "gamma": gamma, "weight_decay": decay,
            "rows": [row.as_dict() for row in rows],
            "table": format_depth_bound_table(rows)}
