r"""Learning-rate schedules and the checks of a method's options, one implementation for every backend.

The learning rate at step t of a phase of T steps, after ``warmup_steps`` = W steps of linear warm-up
(:math:`η_t = η (t+1)/W` for t < W), is

- ``constant``: :math:`η`;
- ``multistep``: :math:`η\,d^{\,m(t)}`, m(t) the number of ``milestones`` (steps) at or before t and
  d = ``decay`` (He et al.'s ÷10 at epochs 82 and 123 of 165 is d = 0.1 at those epochs' first steps);
- ``cosine``: :math:`η_{min} + \tfrac12(η - η_{min})(1 + \cos(π\,(t - W)/(T - W)))`, with
  :math:`η_{min}` = ``final_lr_fraction`` · η.

Each backend's registry lists the schedules its methods accept through their default options
(a multistep schedule needs the ``milestones`` and ``decay`` keys).
"""
from __future__ import annotations

import math

from .. import _checks

SCHEDULES = ("constant", "multistep", "cosine")


def learning_rate(options: dict, step: int, steps: int) -> float:
    """η_t of the schedule in ``options`` at ``step`` of ``steps`` (see the module docstring)."""
    return _scheduled(options, step, steps, options["lr"])


def learning_rate_factor(options: dict, step: int, steps: int) -> float:
    """η_t / η: the schedule's multiplier of the base learning rate (``options`` needs no ``lr``)."""
    return _scheduled(options, step, steps, 1.0)


def _scheduled(options: dict, step: int, steps: int, lr: float) -> float:
    warmup = options["warmup_steps"]
    if step < warmup:
        return lr * (step + 1) / warmup
    schedule = options["schedule"]
    if schedule == "multistep":
        return lr * options["decay"] ** sum(step >= m for m in options["milestones"])
    if schedule == "cosine":
        progress = (step - warmup) / max(1, steps - warmup)
        low = lr * options["final_lr_fraction"]
        return low + 0.5 * (lr - low) * (1.0 + math.cos(math.pi * progress))
    return lr


def check_options(name: str, options: dict, steps: int) -> None:
    """Range checks of a method's options (their keys were checked against its defaults) for a phase
    of ``steps`` steps: each failure names the option, what it must be and what came."""
    where = f"options for {name!r}"
    if "lr" in options:
        _checks.real(f"{where}['lr']", options["lr"], minimum=0.0, strict_min=True)
    if "schedule" in options:
        _check_schedule(where, options, steps)
    if "momentum" in options:
        _checks.real(f"{where}['momentum']", options["momentum"], minimum=0.0, maximum=1.0, strict_max=True)
        _checks.boolean(f"{where}['nesterov']", options["nesterov"])
        if options["nesterov"] and options["momentum"] == 0:
            _checks.fail(f"{where}['nesterov']", "False when momentum is 0 (Nesterov needs momentum)", True)
    for beta in ("beta1", "beta2"):
        if beta in options:
            _checks.real(f"{where}[{beta!r}]", options[beta], minimum=0.0, maximum=1.0, strict_max=True)
    for positive in ("eps", "gtol", "ftol"):
        if positive in options:
            _checks.real(f"{where}[{positive!r}]", options[positive], minimum=0.0, strict_min=True)
    for count in ("memory", "max_line_search"):
        if count in options:
            _checks.integer(f"{where}[{count!r}]", options[count], minimum=1)


def _check_schedule(where: str, options: dict, steps: int) -> None:
    accepted = tuple(s for s in SCHEDULES if s != "multistep" or "milestones" in options)
    schedule = _checks.choice(f"{where}['schedule']", options["schedule"], accepted)
    warmup = _checks.integer(f"{where}['warmup_steps']", options["warmup_steps"], minimum=0)
    if warmup >= steps > 1:
        _checks.fail(f"{where}['warmup_steps']", f"fewer than the phase's {steps} steps", warmup)
    if "final_lr_fraction" in options:
        _checks.real(f"{where}['final_lr_fraction']", options["final_lr_fraction"], minimum=0.0, maximum=1.0)
    if "milestones" not in options:
        return
    _checks.real(f"{where}['decay']", options["decay"], minimum=0.0, maximum=1.0, strict_min=True)
    if not isinstance(options["milestones"], (list, tuple)):
        _checks.fail(f"{where}['milestones']", "a list of steps", options["milestones"])
    milestones = [_checks.integer(f"{where}['milestones']", m, minimum=0) for m in options["milestones"]]
    if schedule == "multistep" and not milestones:
        _checks.fail(f"{where}['milestones']", "at least one step for the multistep schedule (or schedule="
                                               "'constant')", options["milestones"])
    if milestones != sorted(set(milestones)):   # (one past the phase's end never applies: a shortened run)
        _checks.fail(f"{where}['milestones']", "increasing steps", options["milestones"])
