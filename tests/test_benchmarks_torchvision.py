"""benchmarks/torchvision_check.py (the GPU session's check on torchvision's own ResNets) on a CPU, with
turnpike's built-in layout standing in for torchvision (which cannot be imported here): the script's rows and
verdict are right for a matching model and say FAILED for one whose output the adapter would not reproduce."""
import json
from types import SimpleNamespace

import torch

import turnpike as tp
from scripts import load_script


def _script():
    return load_script("benchmarks/torchvision_check.py")


def test_the_check_passes_on_the_torchvision_layout_and_writes_its_rows(tmp_path, capsys):
    stand_in = SimpleNamespace(resnet18=lambda weights=None: tp.models.resnet18())
    rows = _script().main(["--device", "cpu", "--models", "resnet18", "--batch", "2", "--out",
                           str(tmp_path / "rows.json")], models=stand_in)
    assert rows[0]["ok"] and rows[0]["parameters"] == 11_689_512 and rows[0]["depth"] == 8
    assert rows[0]["output_vs_module"] < 1e-5 and rows[0]["pruned_vs_exit"] < 1e-5 and rows[0]["pruned_at"] == 4
    assert json.loads((tmp_path / "rows.json").read_text())[0]["model"] == "resnet18"
    assert capsys.readouterr().out.strip().endswith("ok")


def test_a_model_that_differs_from_the_layout_fails_the_check(capsys):
    def altered(weights=None):                  # another classifier shape: not torchvision's state_dict
        model = tp.models.resnet18()
        model.fc = torch.nn.Linear(512, 999)
        return model

    rows = _script().main(["--device", "cpu", "--models", "resnet18", "--batch", "1"],
                          models=SimpleNamespace(resnet18=altered))
    assert not rows[0]["ok"] and not rows[0]["same_state_dict"]
    assert capsys.readouterr().out.strip().endswith("FAILED")
