"""Pretrained weights into a user's network (issue 22): turnpike.models.load_weights and `turnpike train
--weights`, with files this test writes in the formats people have (a state_dict, a training checkpoint of a
DistributedDataParallel model, a classifier for another number of classes)."""
import json

import pytest
import torch

from turnpike.cli._main import main
from turnpike.experiments import load_run_network, run_config
from turnpike.models import load_weights, resnet18


def _pretrained(num_classes=1000):
    torch.manual_seed(7)
    return resnet18(num_classes=num_classes, in_channels=1, base=2, small_stem=True)


def test_matching_tensors_load_and_the_rest_is_reported(tmp_path):
    source = _pretrained()
    torch.save(source.state_dict(), tmp_path / "plain.pth")
    torch.save({"epoch": 9, "state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}},
               tmp_path / "checkpoint.ckpt")
    for name in ("plain.pth", "checkpoint.ckpt"):
        torch.manual_seed(0)
        model = resnet18(num_classes=10, in_channels=1, base=2, small_stem=True)
        fresh_fc = model.fc.weight.clone()
        report = load_weights(model, tmp_path / name)
        assert report.loaded == len(source.state_dict()) - 2 and report.unused == ()
        assert report.kept == {"fc.weight": "shape (1000, 16) in the file, (10, 16) here",
                               "fc.bias": "shape (1000,) in the file, (10,) here"}
        for key, value in source.state_dict().items():
            if not key.startswith("fc."):
                assert torch.equal(model.state_dict()[key], value), key
        assert torch.equal(model.fc.weight, fresh_fc)                  # the classifier stays as initialised
    # a backbone-only file: the missing head is kept and said so; a file's extra tensors are listed
    backbone = {k: v for k, v in source.state_dict().items() if not k.startswith("fc.")}
    report = load_weights(_pretrained(10), {**backbone, "projector.weight": torch.zeros(3)})
    assert report.kept == {"fc.weight": "not in the file", "fc.bias": "not in the file"}
    assert report.unused == ("projector.weight",) and report.source == "a state_dict"


def test_files_that_are_not_this_networks_weights_are_refused(tmp_path):
    model = _pretrained(10)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch.save({"encoder.0.weight": torch.zeros(3)}, tmp_path / "other.pth")
    (tmp_path / "text.pth").write_text("not a torch file")
    torch.save({"step": 3}, tmp_path / "no_tensors.pth")
    for name, message in (("other.pth", "weights: expected the weights of this network .*encoder.0.weight"),
                          ("text.pth", "weights: expected a file torch.save wrote with tensors only"),
                          ("no_tensors.pth", "weights: expected a state_dict"),
                          ("missing.pth", "weights: expected a file of saved weights")):
        with pytest.raises(ValueError, match=message):
            load_weights(model, tmp_path / name)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())        # nothing loaded


def test_train_starts_from_the_weights_and_its_folder_does_not_need_them_later(tmp_path, capsys):
    torch.save(_pretrained().state_dict(), tmp_path / "pretrained.pth")
    out = tmp_path / "run"
    assert main(["train", "--dataset", "mnist", "--model-option", "base=2", "--model-option", "small_stem=true",
                 "--epochs", "1", "--milestones", "", "--train-subset", "64", "--test-subset", "32", "--batch-size",
                 "32", "--quiet", "--no-plots", "--weights", str(tmp_path / "pretrained.pth"), "--weights-new", "fc",
                 "--out", str(out)]) == 0
    assert "started from" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["weights"]["loaded"] == len(_pretrained().state_dict()) - 2
    assert sorted(metrics["weights"]["kept"]) == ["fc.bias", "fc.weight"]
    # the network the run started from is the file's, seen through the run's own config
    from types import SimpleNamespace
    start = run_config(out).build_network(SimpleNamespace(num_classes=10, channels=1))
    mine, theirs = dict(start.named_parameters()), _pretrained()
    assert torch.equal(mine["stem.conv1.weight"], theirs.conv1.weight)
    assert torch.equal(mine["blocks.7.branch.conv2.weight"], theirs.layer4[1].conv2.weight)
    (tmp_path / "pretrained.pth").unlink()                    # a finished run loads without the file
    assert load_run_network(out).depth == 8


def test_a_stopped_run_resumes_with_its_weights_file_moved(tmp_path):
    torch.save(_pretrained().state_dict(), tmp_path / "pretrained.pth")
    out = tmp_path / "run"
    common = ["train", "--dataset", "mnist", "--model-option", "base=2", "--model-option", "small_stem=true",
              "--epochs", "2", "--milestones", "", "--train-subset", "64", "--test-subset", "32", "--batch-size",
              "32", "--quiet", "--no-plots", "--out", str(out)]
    assert main([*common, "--weights", str(tmp_path / "pretrained.pth"), "--weights-new", "fc", "--time-limit",
                 "0"]) == 0
    (tmp_path / "pretrained.pth").rename(tmp_path / "moved.pth")
    assert main([*common, "--weights", str(tmp_path / "moved.pth"), "--weights-new", "fc", "--resume"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())       # the checkpoint wins; the report is kept
    assert metrics["epochs_done"] == 2 and sorted(metrics["weights"]["kept"]) == ["fc.bias", "fc.weight"]


def test_train_refuses_a_file_that_leaves_tensors_new_unless_told_which(tmp_path, capsys):
    """--weights loads every tensor of the model or names what may stay new: a 1000-class file into a 10-class
    model needs --weights-new fc; another network's file that matches a few tensors is refused, nothing written."""
    torch.save(_pretrained().state_dict(), tmp_path / "pretrained.pth")
    common = ["train", "--dataset", "mnist", "--model-option", "base=2", "--model-option", "small_stem=true",
              "--epochs", "1", "--milestones", "", "--train-subset", "64", "--test-subset", "32", "--batch-size",
              "32", "--quiet", "--no-plots", "--weights", str(tmp_path / "pretrained.pth")]
    assert main([*common, "--out", str(tmp_path / "run")]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("turnpike train: error: --weights: expected a file with every tensor of the model")
    assert "loads 120 of 122 and not fc.weight (shape (1000, 16) in the file, (10, 16) here)" in error
    assert "--weights-new fc" in error and not (tmp_path / "run").exists()
    partial = {k: v for k, v in _pretrained().state_dict().items() if k.startswith("conv1") or k.startswith("fc")}
    torch.save(partial, tmp_path / "partial.pth")                  # a few tensors match: still refused with fc new
    assert main([*common[:-1], str(tmp_path / "partial.pth"), "--weights-new", "fc", "--out", str(tmp_path / "p")]) == 2
    assert "loads 1 of 122" in capsys.readouterr().err and not (tmp_path / "p").exists()
    assert main([*common, "--weights-new", "fc", "--weights-new", "layer4.1", "--out", str(tmp_path / "ok")]) == 0
