"""Tables 2-3 from run folders: ``depth_bounds_from_runs`` and ``turnpike depth-bounds``."""
import json

import numpy as np
import pytest

from turnpike.cli import main
from turnpike.experiments import depth_bounds_from_runs
from turnpike.theory import ExitLosses, depth_bound_table

BASE = {"dataset": "mnist", "arch": "homogeneous", "width": 16, "blocks_per_stage": 2, "weight_decay": 1e-4,
        "train_subset": None, "gamma": 0.02}


def fake_run(folder, *, variant, subresnet, losses, norms, command="resnet54", **changes):
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(
        {"command": command, "config": {**BASE, "variant": variant, "subresnet": subresnet, **changes}, "seed": 0}))
    (folder / "metrics.json").write_text(json.dumps(
        {"depth": len(norms), "exit_train_loss": losses, "branch_parameter_norms": norms}))
    return folder


def test_rows_are_the_theory_table_of_the_runs_losses_and_branch_norms(tmp_path):
    network = fake_run(tmp_path / "net", variant="ws", subresnet=None, losses=[2.0, 1.0, 0.5, 0.3, 0.2, 0.15, 0.1],
                       norms=[3.0, 2.0, 1.0, 1.0, 0.5, 0.5])
    subs = [fake_run(tmp_path / "m0", variant="standard", subresnet=0, losses=[1.2], norms=[]),
            fake_run(tmp_path / "m2", variant="standard", subresnet=2, losses=[2.1, 0.9, 0.4], norms=[2.0, 1.5])]
    result = depth_bounds_from_runs(network, subs)
    expected = depth_bound_table(ExitLosses([2.0, 1.0, 0.5, 0.3, 0.2, 0.15, 0.1], np.square([3, 2, 1, 1, .5, .5])),
                                 [ExitLosses([2.1, 0.9, 0.4], [4.0, 2.25]), ExitLosses([1.2], [])],
                                 gamma=0.02, decay=1e-4)
    assert [row["sub_depth"] for row in result["rows"]] == [0, 2]
    for row, reference in zip(result["rows"], expected):
        assert row["objective_bound"] == pytest.approx(reference.objective_bound, rel=1e-14)
        assert row["average_loss_bound"] == pytest.approx(reference.average_loss_bound, rel=1e-14)
        assert row["holds"] == reference.holds
    # Theorem 1 by hand for M = 2, N = 6: γ(2.1 + 0.9) + λ/2 (4 + 2.25) + (1 + γ·4)·0.4
    assert result["rows"][1]["objective_bound"] == pytest.approx(0.02 * 3.0 + 0.5e-4 * 6.25 + 1.08 * 0.4)
    assert result["table"].count("\n") == 3 and result["depth"] == 6


def test_refuses_runs_that_theorem_1_does_not_compare(tmp_path):
    network = fake_run(tmp_path / "net", variant="ws", subresnet=None, losses=[1.0, 0.5, 0.4], norms=[1.0, 1.0])
    other_decay = fake_run(tmp_path / "decay", variant="standard", subresnet=1, losses=[1.0, 0.6], norms=[1.0],
                           weight_decay=5e-4)
    with pytest.raises(ValueError, match="subresnets: expected runs with the network's weight_decay"):
        depth_bounds_from_runs(network, [other_decay])
    not_sub = fake_run(tmp_path / "std", variant="standard", subresnet=None, losses=[1.0, 0.6, 0.5], norms=[1.0, 1.0])
    with pytest.raises(ValueError, match="subresnets: expected runs of --variant standard --subresnet M"):
        depth_bounds_from_runs(network, [not_sub])
    with pytest.raises(ValueError, match="network: expected a run trained with the stage cost"):
        depth_bounds_from_runs(not_sub, [other_decay])
    with pytest.raises(ValueError, match="network: expected a finished `turnpike resnet54` or `turnpike train` run folder with config.json"):
        depth_bounds_from_runs(tmp_path / "missing", [not_sub])


def test_train_runs_compare_with_train_runs_of_the_same_model_alone(tmp_path):
    train = {"command": "train", "model": "resnet18", "model_options": {"base": 8}, "image_size": 32,
             "image_channels": 3, "test_fraction": None}
    network = fake_run(tmp_path / "net", variant="ws", subresnet=None, losses=[1.0, 0.5, 0.4], norms=[1.0, 1.0],
                       **train)
    same = fake_run(tmp_path / "m1", variant="standard", subresnet=1, losses=[1.0, 0.6], norms=[1.0], **train)
    result = depth_bounds_from_runs(network, [same])
    assert result["command"] == "train" and result["model"] == "resnet18" and len(result["rows"]) == 1
    wider = fake_run(tmp_path / "wide", variant="standard", subresnet=1, losses=[1.0, 0.6], norms=[1.0],
                     **{**train, "model_options": {"base": 16}})
    with pytest.raises(ValueError, match="subresnets: expected runs with the network's model_options"):
        depth_bounds_from_runs(network, [wider])
    other_command = fake_run(tmp_path / "r54", variant="standard", subresnet=1, losses=[1.0, 0.6], norms=[1.0])
    with pytest.raises(ValueError, match="subresnets: expected runs of `turnpike train`, the network's command"):
        depth_bounds_from_runs(network, [other_command])
    foreign = fake_run(tmp_path / "mnist", variant="standard", subresnet=1, losses=[1.0], norms=[], command="mnist")
    with pytest.raises(ValueError, match="subresnets: expected a finished `turnpike resnet54` or `turnpike train` run folder, got "):
        depth_bounds_from_runs(network, [foreign])


def test_cli_from_real_runs(tmp_path, capsys):
    common = ["--dataset", "mnist", "--arch", "homogeneous", "--width", "4", "--blocks-per-stage", "1", "--epochs",
              "1", "--train-subset", "64", "--test-subset", "32", "--batch-size", "32", "--quiet", "--no-plots"]
    assert main(["resnet54", *common, "--variant", "ws", "--out", str(tmp_path / "net")]) == 0
    assert main(["resnet54", *common, "--variant", "standard", "--subresnet", "1", "--out", str(tmp_path / "m1")]) == 0
    capsys.readouterr()
    assert main(["depth-bounds", str(tmp_path / "net"), str(tmp_path / "m1")]) == 0
    printed = capsys.readouterr().out
    assert "| SubResNet depth M |" in printed and "ResNet-3 with stage cost γ = 0.02" in printed
    saved = json.loads((tmp_path / "net" / "depth_bounds.json").read_text())
    assert [row["sub_depth"] for row in saved["rows"]] == [1]
    assert main(["depth-bounds", str(tmp_path / "m1"), str(tmp_path / "net")]) == 2      # swapped: a clear error
    assert "NETWORK: expected a run trained with the stage cost" in capsys.readouterr().err
