"""Argument types shared by the commands.

Each raises ``argparse.ArgumentTypeError`` with what was expected, so that argparse reports
``turnpike CMD: error: argument --flag: expected ..., got ...`` and exits with status 2 (a plain
``ValueError`` would print ``invalid int_list value``, argparse's internals)."""
from __future__ import annotations

import argparse
import math


def _fail(expected: str, text: str):
    raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")


def _parts(text: str, expected: str) -> list[str]:
    parts = [part.strip() for part in text.split(",")]
    if not any(parts):
        _fail(expected, text)
    if not all(parts):
        _fail(f"{expected} (an empty item between commas)", text)
    return parts


def int_list(text: str) -> list[int]:
    """Comma-separated integers with inclusive ranges: "0-9", "0,3,5", "1,4-6" (argparse type)."""
    expected = "comma-separated integers or ranges low-high with low <= high, e.g. 0-9 or 1,4-6"
    values = []
    for part in _parts(text, expected):
        try:
            if "-" in part[1:]:                   # a range; a leading minus is a sign
                low, high = part[0] + part[1:].split("-", 1)[0], part[1:].split("-", 1)[1]
                low, high = int(low), int(high)
                if high < low:
                    _fail(expected, text)
                values.extend(range(low, high + 1))
            else:
                values.append(int(part))
        except ValueError:
            _fail(expected, text)
    return values


def int_list_or_none(text: str) -> list[int]:
    """:func:`int_list`, or '' for none (argparse type): e.g. no learning-rate milestones."""
    return [] if not text.strip() else int_list(text)


def float_list(text: str) -> list[float]:
    """Comma-separated finite numbers: "0,0.5,1" (argparse type)."""
    expected = "comma-separated numbers, e.g. 0,0.5,1"
    try:
        values = [float(part) for part in _parts(text, expected)]
    except ValueError:
        _fail(expected, text)
    if not all(math.isfinite(value) for value in values):
        _fail(f"{expected} (finite)", text)
    return values


def name_list(text: str) -> list[str]:
    """Comma-separated names: "standard,ws" (argparse type)."""
    return _parts(text, "comma-separated names, e.g. standard,ws")


def integer(text: str) -> int:
    """An integer (argparse type, instead of ``int``)."""
    try:
        return int(text)
    except ValueError:
        _fail("an integer", text)


def number(text: str) -> float:
    """A number (argparse type, instead of ``float``); ranges are checked where the value is used."""
    try:
        return float(text)
    except ValueError:
        _fail("a number", text)


def positive_float(text: str) -> float:
    """A finite number > 0 (argparse type): seconds, tolerances."""
    try:
        value = float(text)
    except ValueError:
        _fail("a number > 0", text)
    if not (math.isfinite(value) and value > 0):
        _fail("a number > 0", text)
    return value


def non_negative_float(text: str) -> float:
    """A finite number >= 0 (argparse type): a time limit (0: stop at the first checkpoint)."""
    try:
        value = float(text)
    except ValueError:
        _fail("a number >= 0", text)
    if not (math.isfinite(value) and value >= 0):
        _fail("a number >= 0", text)
    return value


def add_run_folder_arguments(p, *, out: str, resume: str | None) -> None:
    """--out, --overwrite and (if the command resumes: ``resume`` says how) --resume."""
    p.add_argument("--out", default=out, help="run folder")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run in --out (its run files are removed first; other files stay); without "
                        "it" + (" or --resume" if resume else "") + ", a folder that holds a run is refused")
    if resume:
        p.add_argument("--resume", action="store_true",
                       help=resume + "; with no run in --out, a new one starts (and the command says so)")


def resume_notice(command: str, args) -> None:
    """One line on stderr when --resume finds no run to continue: a new one starts (so that a job
    script can pass --resume from its first start on)."""
    import sys

    from .._runs import holds_run

    if getattr(args, "resume", False) and not holds_run(args.out):
        print(f"turnpike {command}: --resume: no run in {args.out} yet; starting a new one", file=sys.stderr)
