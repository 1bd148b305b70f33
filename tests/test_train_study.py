"""`turnpike train-study` (issue 22): the 2025 paper's comparison for a user's residual network (a tiny
ResNet-18 layout on an MNIST subset): SubResNet-M of the model trained from scratch, Table 1, Tables 2-3."""
import json

import pytest
import torch

from turnpike.cli import main
from turnpike.data import normalise
from turnpike.experiments import TrainConfig, load_run_network, run_config, run_study

TINY = ["--dataset", "mnist", "--model-option", "base=2", "--model-option", "small_stem=true", "--epochs", "2",
        "--milestones", "", "--train-subset", "64", "--test-subset", "32", "--batch-size", "32", "--quiet",
        "--subresnets", "2,5"]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("train-study") / "s"
    assert main(["train-study", *TINY, "--out", str(out)]) == 0
    return out, json.loads((out / "study.json").read_text())


def _metrics(folder):
    return json.loads((folder / "metrics.json").read_text())


def test_every_run_trains_and_table_1_holds_their_metrics(study):
    out, result = study
    assert result["status"] == "finished" and result["depth"] == 8
    assert result["runs"] == ["standard", "ws", "full", "subresnet-2", "subresnet-5"]
    assert [_metrics(out / name)["depth"] for name in result["runs"]] == [8, 8, 8, 2, 5]
    rows = {(row["key"], row["sub_depth"]): row for row in result["table1"]}
    for key, sub_depth, run in (("standard", None, "standard"), ("subresnet", 2, "subresnet-2"),
                                ("subresnet", 5, "subresnet-5"), ("ws", None, "ws"), ("full", None, "full")):
        assert rows[key, sub_depth]["test_accuracy"] == _metrics(out / run)["test_accuracy"]
    assert all(row["paper"] is None for row in result["table1"])       # the paper trained its own network
    text = (out / "study.md").read_text()
    assert text.startswith("# resnet18 study: mnist, model resnet18, 2 epochs")
    assert "resnet18_ws stage cost" in text and "SubResNet-5 standard training" in text and "paper" not in text


def test_the_subresnet_trained_from_scratch_is_the_architecture_pruning_keeps(study):
    # Definition 1: SubResNet-M = the first M blocks, the remaining skip paths and the head. The network
    # pruned at M and the one trained from scratch hold the same parameters, name for name and shape for shape
    out, result = study
    for m in (2, 5):
        scratch = load_run_network(out / f"subresnet-{m}")
        assert run_config(out / f"subresnet-{m}").subresnet == m and scratch.depth == m
        for variant in ("ws", "full"):
            pruned = load_run_network(out / variant).subresnet(m, exits="standard")
            assert {n: p.shape for n, p in pruned.named_parameters()} == \
                   {n: p.shape for n, p in scratch.named_parameters()}
            row = next(r for r in result["table1"] if r["key"] == f"{variant}_pruned" and r["sub_depth"] == m)
            assert row["parameters"] == scratch.parameter_count() == _metrics(out / f"subresnet-{m}")["parameters"]


def test_pruned_rows_are_the_networks_cut_at_m_run_on_the_test_set(study):
    out, result = study
    config = run_config(out / "ws")
    data = config.load_data()
    images = normalise(data.test_images, data.mean, data.std).contiguous(memory_format=torch.channels_last)
    for variant in ("ws", "full"):
        sub = load_run_network(out / variant).subresnet(5).eval()
        with torch.no_grad():
            accuracy = float((sub(images).argmax(-1) == data.test_labels).double().mean())
        row = next(r for r in result["table1"] if r["key"] == f"{variant}_pruned" and r["sub_depth"] == 5)
        assert row["test_accuracy"] == pytest.approx(accuracy, abs=1e-12)


def test_depth_bounds_of_the_study_and_of_the_cli_agree(study, capsys):
    out, result = study
    assert set(result["depth_bounds"]) == {"ws", "full"}
    capsys.readouterr()
    assert main(["depth-bounds", str(out / "ws"), str(out / "subresnet-2"), str(out / "subresnet-5"),
                 "--out", str(out / "bounds.json")]) == 0
    assert "resnet18 (N = 8) with stage cost γ = 0.02" in capsys.readouterr().out
    saved = json.loads((out / "bounds.json").read_text())
    assert saved["rows"] == result["depth_bounds"]["ws"]["rows"]
    assert [row["sub_depth"] for row in saved["rows"]] == [2, 5]


def test_a_subresnet_deeper_than_the_model_is_refused_before_training(tmp_path):
    base = TrainConfig(dataset="mnist", model_options={"base": 2, "small_stem": True}, epochs=1)
    assert base.network_depth() == 8
    with pytest.raises(ValueError, match="subresnets: expected SubResNet depths below the network's N = 8, got 8"):
        run_study(base, tmp_path / "s", subresnets=(8,))
    assert not (tmp_path / "s").exists()
