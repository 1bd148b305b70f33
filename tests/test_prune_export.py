"""`turnpike prune` (issue 22): a run's network cut at exit M, exported with torch.export and loaded by torch
alone, gives exit M's logits for any batch size; its JSON says how to prepare images; the default depth is the
run's turnpike."""
import json
import subprocess
import sys

import pytest
import torch

from turnpike.cli._main import main
from turnpike.data import normalise
from turnpike.experiments import load_run_network, run_config

TINY = ["--dataset", "mnist", "--model-option", "base=2", "--model-option", "small_stem=true", "--epochs", "1",
        "--milestones", "", "--train-subset", "64", "--test-subset", "32", "--batch-size", "32", "--quiet",
        "--no-plots"]

LOAD = """
import sys, torch
module = torch.export.load(sys.argv[1]).module()
images = torch.load(sys.argv[2])
torch.save([module(images[:1]), module(images)], sys.argv[3])
print("turnpike" in sys.modules)
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("prune") / "run"
    assert main(["train", *TINY, "--out", str(out)]) == 0
    return out


def test_the_exported_network_is_exit_m_for_torch_alone(run, tmp_path, capsys):
    assert main(["prune", str(run), "--depth", "4"]) == 0
    assert "pruned at 4 of 8 blocks" in capsys.readouterr().out
    summary = json.loads((run / "pruned-4.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    assert summary["test_accuracy"] == metrics["exit_test_accuracy"][4] and summary["network_depth"] == 8
    data = run_config(run).load_data()
    assert summary["input"]["mean"] == list(data.mean) and summary["input"]["height"] == 32
    images = normalise(data.test_images[:5], data.mean, data.std)
    torch.save(images, tmp_path / "images.pt")
    done = subprocess.run([sys.executable, "-c", LOAD, str(run / "pruned-4.pt2"), str(tmp_path / "images.pt"),
                           str(tmp_path / "logits.pt")], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"                                  # torch alone loaded and ran it
    one, five = torch.load(tmp_path / "logits.pt")
    with torch.no_grad():
        expected = load_run_network(run).eval().exit_logits(images.contiguous(memory_format=torch.channels_last))[4]
    torch.testing.assert_close(five, expected, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(one, expected[:1], atol=1e-4, rtol=1e-4)
    assert summary["parameters"] == load_run_network(run).subresnet(4).parameter_count()


def test_the_default_depth_is_the_turnpike_and_a_run_without_one_is_told_to_give_it(run, capsys):
    metrics = json.loads((run / "metrics.json").read_text())
    for layer in (None, 6):
        (run / "metrics.json").write_text(json.dumps({**metrics, "turnpike_layer": layer}))
        if layer is None:
            assert main(["prune", str(run)]) == 2
            assert "no turnpike layer" in capsys.readouterr().err
        else:
            assert main(["prune", str(run)]) == 0 and (run / "pruned-6.pt2").is_file()
    (run / "metrics.json").write_text(json.dumps(metrics))


def test_the_papers_network_exports_too(tmp_path):
    out = tmp_path / "resnet54"
    assert main(["resnet54", "--dataset", "mnist", "--arch", "homogeneous", "--width", "4", "--blocks-per-stage",
                 "1", "--epochs", "1", "--train-subset", "64", "--test-subset", "32", "--batch-size", "32",
                 "--quiet", "--no-plots", "--variant", "full", "--out", str(out)]) == 0
    assert main(["prune", str(out), "--depth", "2", "--out", str(tmp_path / "cut.pt2")]) == 0
    images = torch.randn(3, 1, 32, 32)
    with torch.no_grad():
        expected = load_run_network(out).eval().exit_logits(images.contiguous(memory_format=torch.channels_last))[2]
        got = torch.export.load(tmp_path / "cut.pt2").module()(images)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    assert json.loads((tmp_path / "cut.json").read_text())["classes"] is None     # a built-in data set



def test_a_network_torch_export_refuses_is_a_one_line_error(run, monkeypatch, capsys):
    def refuse(*args, **kwargs):
        raise RuntimeError("data-dependent control flow\nmore lines")

    monkeypatch.setattr(torch.export, "export", refuse)
    assert main(["prune", str(run), "--depth", "3", "--out", str(run / "refused.pt2")]) == 2
    error = capsys.readouterr().err
    assert "expected a network torch.export can capture" in error and "data-dependent control flow" in error
    assert "Traceback" not in error and not (run / "refused.pt2").exists()


def test_a_turnpike_at_the_last_block_cuts_nothing_and_writes_nothing(run, capsys):
    metrics = json.loads((run / "metrics.json").read_text())
    (run / "metrics.json").write_text(json.dumps({**metrics, "turnpike_layer": 8}))
    try:
        assert main(["prune", str(run)]) == 2
        error = capsys.readouterr().err
        assert "no block can be cut and nothing was written" in error and not (run / "pruned-8.pt2").exists()
        assert main(["prune", str(run), "--depth", "8", "--out", str(run / "whole.pt2")]) == 0   # asked for: done
    finally:
        (run / "metrics.json").write_text(json.dumps(metrics))


def test_an_unfinished_run_is_refused_unless_allowed_and_then_labelled(run, capsys):
    metrics = json.loads((run / "metrics.json").read_text())
    (run / "metrics.json").write_text(json.dumps({**metrics, "status": "time_limit", "epochs_done": 0, "epochs": 3}))
    try:
        assert main(["prune", str(run), "--depth", "3", "--out", str(run / "early.pt2")]) == 2
        error = capsys.readouterr().err.strip().splitlines()[-1]
        assert error.startswith("turnpike prune: error: RUN: expected a finished run") and "--allow-unfinished" in error
        assert "stopped at the time limit after 0 of 3 epochs" in error and not (run / "early.pt2").exists()
        assert main(["prune", str(run), "--depth", "3", "--out", str(run / "early.pt2"), "--allow-unfinished"]) == 0
        assert "unfinished run: stopped at the time limit" in capsys.readouterr().out
        assert json.loads((run / "early.json").read_text())["unfinished"].startswith("unfinished run")
        assert main(["early-exit", str(run), "--no-plots"]) == 2
        assert "expected a finished run" in capsys.readouterr().err
        assert main(["early-exit", str(run), "--no-plots", "--allow-unfinished", "--thresholds", "0.5,1"]) == 0
        assert "unfinished run" in capsys.readouterr().out
    finally:
        (run / "metrics.json").write_text(json.dumps(metrics))
