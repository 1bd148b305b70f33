"""A run folder is a contract: a finished run is never silently replaced or mixed with another's."""
import json

import pytest

from turnpike.cli import main

TINY = ["--dataset", "mnist", "--arch", "homogeneous", "--width", "4", "--blocks-per-stage", "1", "--epochs", "1",
        "--batch-size", "32", "--train-subset", "64", "--test-subset", "32", "--milestones", "", "--no-plots",
        "--quiet"]


def _files(folder):
    """{name: bytes} of every file in the folder (its whole state, to compare byte for byte)."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture()
def finished(tmp_path):
    out = tmp_path / "run"
    assert main(["resnet54", *TINY, "--variant", "ws", "--out", str(out)]) == 0
    return out


def test_a_finished_run_is_refused_without_resume_or_overwrite(finished, capsys):
    before = _files(finished)
    capsys.readouterr()
    assert main(["resnet54", *TINY, "--variant", "standard", "--out", str(finished)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "Traceback" not in error
    assert f"{finished}, which holds a run (variant ws, dataset mnist, status max_steps)" in error
    assert "--resume continues it, --overwrite replaces it" in error
    assert _files(finished) == before


@pytest.mark.parametrize("option, value, stored", [("--gamma", "0.05", "0.02"), ("--weight-decay", "0.001", "0.0001"),
                                                   ("--width", "8", "4")])
def test_resume_with_a_result_changing_setting_is_refused_before_anything_is_written(finished, capsys, option,
                                                                                     value, stored):
    before = _files(finished)
    arguments = [*TINY, "--variant", "ws", "--out", str(finished), "--resume", option, value]   # the last one counts
    capsys.readouterr()
    assert main(["resnet54", *arguments]) == 2
    error = capsys.readouterr().err
    name = option[2:].replace("-", "_")
    assert f"resume: expected the settings of the run in {finished}" in error
    assert f"{name}: {float(stored) if '.' in stored else int(stored)!r} there" in error
    assert _files(finished) == before


def test_resume_may_change_the_time_limit(finished):
    assert main(["resnet54", *TINY, "--variant", "ws", "--out", str(finished), "--resume", "--time-limit", "600"]) == 0


def test_overwrite_replaces_the_run_files_and_keeps_the_users(finished):
    (finished / "early_exit.json").write_text("{}")        # a stale file of the old run
    (finished / "my_notes.txt").write_text("mine")          # not a run file
    assert main(["resnet54", *TINY, "--variant", "standard", "--out", str(finished), "--overwrite"]) == 0
    assert json.loads((finished / "config.json").read_text())["config"]["variant"] == "standard"
    assert not (finished / "early_exit.json").exists()
    assert (finished / "my_notes.txt").read_text() == "mine"


def test_resume_and_overwrite_together_are_refused(finished, capsys):
    before = _files(finished)
    assert main(["resnet54", *TINY, "--variant", "ws", "--out", str(finished), "--resume", "--overwrite"]) == 2
    assert "overwrite: expected False with resume=True" in capsys.readouterr().err
    assert _files(finished) == before
