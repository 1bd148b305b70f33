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
    assert f"{finished}, which holds a resnet54 run (variant ws, dataset mnist, status max_steps)" in error
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


@pytest.mark.parametrize("stop_step", [3, 2])      # an epoch's last step (its log line is then written twice), a first
def test_sigterm_stops_at_a_step_then_resume_ends_where_an_uninterrupted_run_ends(tmp_path, monkeypatch, capsys,
                                                                                  stop_step):
    import os
    import signal

    import torch

    from turnpike.experiments import _epoch_log

    arguments = ["resnet54", *TINY, "--epochs", "3", "--variant", "ws", "--seed", "3"]
    assert main([*arguments, "--out", str(tmp_path / "whole")]) == 0
    log_call = _epoch_log.EpochLog.__call__

    def terminated_at(self, step, value, module):
        log_call(self, step, value, module)
        if step == stop_step and not getattr(self, "signalled", False):
            self.signalled = True
            os.kill(os.getpid(), signal.SIGTERM)
    monkeypatch.setattr(_epoch_log.EpochLog, "__call__", terminated_at)
    out = tmp_path / "stopped"
    capsys.readouterr()
    assert main([*arguments, "--out", str(out)]) == 128 + signal.SIGTERM
    error = capsys.readouterr().err
    assert f"SIGTERM received: stopped at step {stop_step} of phase 0" in error
    assert "resume with: turnpike" in error and error.rstrip().endswith("--resume")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "interrupted" and metrics["signal"] == "SIGTERM"
    monkeypatch.setattr(_epoch_log.EpochLog, "__call__", log_call)
    assert main([*arguments, "--out", str(out), "--resume"]) == 0
    whole = torch.load(tmp_path / "whole" / "network.pt", weights_only=True)["state_dict"]
    resumed = torch.load(out / "network.pt", weights_only=True)["state_dict"]
    assert whole.keys() == resumed.keys()
    for name in whole:
        assert torch.equal(whole[name], resumed[name]), name
    lines = [json.loads(text) for text in (out / "log.jsonl").read_text().splitlines()]
    reference = [json.loads(text) for text in (tmp_path / "whole" / "log.jsonl").read_text().splitlines()]
    assert [line["epoch"] for line in lines] == [1, 2, 3]
    assert [line["objective"] for line in lines] == pytest.approx([line["objective"] for line in reference], rel=1e-12)


def test_a_run_written_before_a_setting_existed_resumes_with_its_default_and_unknown_ones_are_named(tmp_path,
                                                                                                  capsys):
    # config.json of an older version: without the settings added since (train's subresnet and stream)
    from turnpike.experiments import load_run_network, run_config

    tiny = ["train", "--dataset", "mnist", "--model-option", "base=2", "--model-option", "small_stem=true",
            "--epochs", "2", "--milestones", "", "--train-subset", "64", "--test-subset", "32", "--batch-size", "32",
            "--quiet", "--no-plots"]
    old, new = tmp_path / "old", tmp_path / "new"
    assert main([*tiny, "--out", str(new)]) == 0
    assert main([*tiny, "--out", str(old), "--time-limit", "0"]) == 0             # stopped after epoch 1
    stored = json.loads((old / "config.json").read_text())
    del stored["config"]["subresnet"], stored["config"]["stream"]
    (old / "config.json").write_text(json.dumps(stored))
    assert run_config(old).stream is False and run_config(old).subresnet is None
    assert main([*tiny, "--out", str(old), "--resume"]) == 0
    assert json.loads((old / "metrics.json").read_text())["exit_test_loss"] == \
           json.loads((new / "metrics.json").read_text())["exit_test_loss"]
    assert main([*tiny, "--out", str(old), "--resume", "--variant", "standard", "--subresnet", "3"]) == 2
    assert "subresnet: None there, 3 now" in capsys.readouterr().err                    # a new value: refused
    stored["config"]["shiny"] = 1                                                        # a setting of no version
    (old / "config.json").write_text(json.dumps(stored))
    assert main([*tiny, "--out", str(old), "--resume"]) == 2
    assert "ones it does not have: shiny (a run of another turnpike version or program)" in capsys.readouterr().err
    with pytest.raises(ValueError, match="folder: .*config.json: expected the settings .* shiny"):
        load_run_network(old)
