"""Run folders: config, seed, version and metrics, written atomically."""
from __future__ import annotations

import dataclasses
import json
import os
import platform
import shutil
import tempfile
from pathlib import Path

import numpy as np

from ._version import __version__


def _jsonable(value):
    if dataclasses.is_dataclass(value):
        return _jsonable(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return value if np.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    return value


def write_atomically(path, write, mode: str) -> Path:
    """Write through a temporary file in the same folder, then rename: a killed run never
    leaves a half-written file, only the old one or the new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, mode) as stream:
            write(stream)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    return path


def write_json(path, data) -> Path:
    """Write ``data`` as JSON atomically."""
    def write(stream):
        json.dump(_jsonable(data), stream, indent=2)
        stream.write("\n")
    return write_atomically(path, write, "w")


def write_run_config(out, config, **extra) -> Path:
    """``out/config.json``: an experiment's config dataclass, its seed, package versions and extras."""
    return write_json(Path(out) / "config.json", {"config": dataclasses.asdict(config), "seed": config.seed,
                                                  **extra, "environment": environment()})


def environment() -> dict:
    """Versions that make a run reproducible or explain a difference."""
    import scipy   # (torch and scipy only for their versions, when a run folder is written)
    import torch

    return {"turnpike": __version__, "python": platform.python_version(), "numpy": np.__version__,
            "scipy": scipy.__version__, "torch": torch.__version__, "machine": platform.machine(),
            "cpu_count": os.cpu_count()}


def write_npz(path, **arrays) -> Path:
    """``np.savez`` atomically."""
    return write_atomically(path, lambda stream: np.savez(stream, **arrays), "wb")


def read_npz(path) -> dict:
    """All arrays of an .npz file, with a clear error for a missing or corrupt file."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except FileNotFoundError:
        raise ValueError(f"{path}: expected a checkpoint file, not found") from None
    except (OSError, ValueError, EOFError) as error:
        raise ValueError(f"{path}: expected a readable .npz checkpoint, got a corrupt file ({error})") from None


def claim_run_folder(out, config, *, resume: bool, overwrite: bool, resumable: tuple, run_files: tuple) -> None:
    """Check the folder ``out`` before a run of ``config`` trains or writes anything there: a run
    folder is a contract, and one run's results are never silently replaced or mixed with another's.

    - no run there (no ``config.json``): nothing to check;
    - ``overwrite``: the run's files (``run_files``: names and glob patterns) are removed first, and
      nothing else in the folder;
    - ``resume``: every setting of the stored config must equal ``config``'s, except those in
      ``resumable`` (they do not change the result); refused with ``setting: stored there, given now``;
    - neither: refused, naming the folder and the run it holds.
    """
    out = Path(out)
    stored_path = out / "config.json"
    if not stored_path.is_file():
        return
    if overwrite:
        for pattern in run_files:
            for path in out.glob(pattern):
                shutil.rmtree(path) if path.is_dir() else path.unlink()
        return
    try:
        stored = json.loads(stored_path.read_text())["config"]
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"out: expected a run folder with a readable config.json, got {stored_path} "
                         f"({error}); --overwrite replaces it") from None
    if not resume:
        raise ValueError(f"out: expected an empty folder or resume/overwrite, got {out}, which holds "
                         f"{_describe_run(out, stored)}; --resume continues it, --overwrite replaces it")
    given = json.loads(json.dumps(_jsonable(config)))          # as config.json stores it (tuples as lists)
    changed = [name for name in given if name not in resumable and stored.get(name) != given[name]]
    if changed:
        raise ValueError("resume: expected the settings of the run in " + str(out) + ", got other ones: "
                         + "; ".join(f"{name}: {stored.get(name)!r} there, {given[name]!r} now" for name in changed)
                         + f" (only {', '.join(resumable)} may change on resume)")


def _describe_run(out: Path, stored: dict) -> str:
    """'a run (variant ws, status time_limit)' from a folder's config and metrics."""
    details = [f"{key} {stored[key]}" for key in ("variant", "dataset") if key in stored]
    try:
        details.append(f"status {json.loads((out / 'metrics.json').read_text())['status']}")
    except (OSError, ValueError, KeyError, TypeError):
        details.append("not finished")
    return f"a run ({', '.join(details)})"
