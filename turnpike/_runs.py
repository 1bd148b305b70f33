"""Run folders: config, seed, version and metrics, written atomically.

A run folder is a contract (:func:`claim_run_folder`): ``config.json`` is written once, when a run
starts; a folder that holds a run is refused unless the run is resumed with the same settings or
explicitly overwritten; ``metrics.json`` lists every file of the run (:func:`write_metrics`), so
that a reader can tell a current file from a stale one; every file is written atomically, with
the permissions the umask gives (a temporary file's 0600 would make results private by accident).
"""
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


def _file_mode() -> int:
    """What ``open()`` gives a new file under the process's umask (read without changing it for good)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def write_atomically(path, write, mode: str) -> Path:
    """Write through a temporary file in the same folder, then rename: a killed run never
    leaves a half-written file, only the old one or the new one."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as error:
        raise OSError(error.errno, error.strerror, str(path)) from None
    try:
        with os.fdopen(handle, mode) as stream:
            write(stream)
        os.chmod(temporary, _file_mode())          # mkstemp's 0600 -> what a plain open() gives
        os.replace(temporary, path)
    except BaseException as error:
        if os.path.exists(temporary):
            os.unlink(temporary)
        if isinstance(error, OSError) and error.filename in (None, temporary):   # name the file the user knows
            raise OSError(error.errno, error.strerror, str(path)) from None
        raise
    return path


def write_json(path, data) -> Path:
    """Write ``data`` as JSON atomically."""
    def write(stream):
        json.dump(_jsonable(data), stream, indent=2)
        stream.write("\n")
    return write_atomically(path, write, "w")


def write_text(path, text: str) -> Path:
    """A text file (a table, a report) atomically."""
    return write_atomically(path, lambda stream: stream.write(text), "w")


def read_json(path, what: str) -> dict:
    """A JSON file of a run folder; a missing or corrupt one is a ValueError naming the path and
    ``what`` the file should be (e.g. "the run's metrics, written when it finished")."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"{path}: expected {what}, not found") from None
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ValueError(f"{path}: expected {what}, got an unreadable file ({error})") from None


def write_run_config(out, config, *, command: str, **extra) -> Path:
    """``out/config.json``: the command that made the run, its config dataclass, its seed, package
    versions and extras. Written once, when the run starts (see :func:`claim_run_folder`)."""
    return write_json(Path(out) / "config.json", {"command": command, "config": dataclasses.asdict(config),
                                                  "seed": config.seed, **extra, "environment": environment()})


def run_files_present(out, run_files) -> list[str]:
    """The files and folders of ``out`` that match the run's patterns, as sorted relative paths."""
    out = Path(out)
    return sorted({str(path.relative_to(out)) for pattern in run_files for path in out.glob(pattern)})


def write_metrics(out, metrics: dict, run_files) -> Path:
    """``out/metrics.json`` with ``"files"``: every file of the run in the folder (itself included),
    so that a reader can tell the run's files from anything else there."""
    out = Path(out)
    files = sorted({*run_files_present(out, run_files), "metrics.json"})
    return write_json(out / "metrics.json", {**metrics, "files": files})


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


def holds_run(out) -> bool:
    """Whether the folder ``out`` holds a run (its ``config.json``)."""
    return (Path(out) / "config.json").is_file()


def check_writable_folder(name: str, out) -> Path:
    """``out`` as a folder this process can write in (created if missing), before any work is done:
    an output that is a file or a read-only folder fails now, not after hours of training."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{name}: expected a folder, got {out}, which is a file")
    try:
        out.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(dir=out, prefix=".write-test.")
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        raise ValueError(f"{name}: expected a folder this process can write in, got {out} "
                         f"({error.strerror or error})") from None
    return out


def check_writable_file(name: str, path) -> Path:
    """``path`` as a file this process can write (its folder created if missing), before any work."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{name}: expected a file name, got {path}, which is a folder")
    check_writable_folder(name, path.parent)
    return path


def claim_run_folder(out, config, *, command: str, resume: bool, overwrite: bool, resumable: tuple,
                     run_files: tuple, can_resume: bool = True, writes: bool = True) -> None:
    """Check the folder ``out`` before a run of ``config`` (made by ``command``) trains or writes
    anything there: a run folder is a contract, and one run's results are never silently replaced
    or mixed with another's.

    - ``out`` must be a folder this process can write in (created if missing), if it ``writes``
      there (only rank 0 of a process group does);
    - no run there (no ``config.json``): nothing more to check (``resume`` starts a new run: the
      command line says so);
    - ``overwrite``: the run's files (``run_files``: names and glob patterns) are removed first, and
      nothing else in the folder;
    - ``resume``: the folder must hold a run of the same command, and every setting of the stored
      config must equal ``config``'s, except those in ``resumable`` (they do not change the result);
      refused with ``setting: stored there, given now``;
    - neither: refused, naming the folder and the run it holds.
    """
    if resume and overwrite:
        raise ValueError("overwrite: expected it without resume (continue the run or replace it, not both), "
                         "got both")
    out = check_writable_folder("out", out) if writes else Path(out)
    if not holds_run(out):
        return
    if overwrite:
        for path in (out / name for name in run_files_present(out, run_files)):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        return
    stored_file = read_json(out / "config.json", "a run's config.json (--overwrite replaces the run)")
    stored = stored_file.get("config") if isinstance(stored_file, dict) else None
    if not isinstance(stored, dict):
        raise ValueError(f"{out / 'config.json'}: expected a run's config with a 'config' entry, got another "
                         f"JSON file; --overwrite replaces it")
    hint = "--resume continues it, --overwrite replaces it" if can_resume else "--overwrite replaces it"
    if not resume:
        raise ValueError(f"out: expected an empty folder, got {out}, which holds "
                         f"{_describe_run(out, stored_file)}; {hint} (or choose another --out)")
    given = json.loads(json.dumps(_jsonable(config)))          # as config.json stores it (tuples as lists)
    stored_command = stored_file.get("command")
    if stored_command not in (None, command):
        raise ValueError(f"resume: expected a run of `turnpike {command}` in {out}, got "
                         f"{_describe_run(out, stored_file)}; choose another --out")
    stored = stored_settings(stored, config, f"resume: the run in {out}")
    changed = [name for name in given if name not in resumable and stored.get(name) != given[name]]
    if changed:
        raise ValueError("resume: expected the settings of the run in " + str(out) + ", got other ones: "
                         + "; ".join(f"{name}: {stored.get(name)!r} there, {given[name]!r} now" for name in changed)
                         + f" (only {', '.join(resumable) or 'nothing'} may change on resume)")


def stored_settings(stored: dict, config, where: str) -> dict:
    """The settings a config.json stores, completed for the config class of ``config`` (a dataclass or its
    class): a setting this version added since the run was written takes its default, which is what the
    run did before the setting existed. A stored setting the class does not have is refused (a run of
    another version or program), as is a missing one without a default; ``where`` starts the message."""
    fields = {field.name: field for field in dataclasses.fields(config)}
    unknown = sorted(set(stored) - set(fields))
    if unknown:
        raise ValueError(f"{where}: expected the settings of this version's config, got ones it does not have: "
                         f"{', '.join(unknown)} (a run of another turnpike version or program)")
    completed = dict(stored)
    for name, field in fields.items():
        if name in stored:
            continue
        if field.default is not dataclasses.MISSING:
            completed[name] = json.loads(json.dumps(_jsonable(field.default)))
        elif field.default_factory is not dataclasses.MISSING:
            completed[name] = json.loads(json.dumps(_jsonable(field.default_factory())))
        else:
            raise ValueError(f"{where}: expected a stored value of the setting {name}, got none")
    return completed


def _describe_run(out: Path, stored_file: dict) -> str:
    """'a resnet54 run (variant ws, status time_limit)' from a folder's config and metrics."""
    stored = stored_file.get("config", {})
    details = [f"{key} {stored[key]}" for key in ("variant", "dataset") if key in stored]
    try:
        details.append(f"status {json.loads((out / 'metrics.json').read_text())['status']}")
    except (OSError, ValueError, KeyError, TypeError):
        details.append("not finished")
    command = stored_file.get("command")
    return f"a {command + ' ' if command else ''}run ({', '.join(details)})"
