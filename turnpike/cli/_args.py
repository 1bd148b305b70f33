"""Argument types shared by the commands."""
from __future__ import annotations


def int_list(text: str) -> list[int]:
    """Comma-separated integers with inclusive ranges: "0-9", "0,3,5", "1,4-6" (argparse type)."""
    values = []
    for part in (part.strip() for part in text.split(",")):
        if not part:
            continue
        if "-" in part[1:]:                   # a range; a leading minus is a sign
            low, high = part[0] + part[1:].split("-", 1)[0], part[1:].split("-", 1)[1]
            values.extend(range(int(low), int(high) + 1))
        else:
            values.append(int(part))
    return values


def float_list(text: str) -> list[float]:
    """Comma-separated numbers: "0,0.5,1" (argparse type)."""
    return [float(part) for part in text.split(",") if part.strip()]


def name_list(text: str) -> list[str]:
    """Comma-separated names: "standard,ws" (argparse type)."""
    return [name.strip() for name in text.split(",") if name.strip()]
