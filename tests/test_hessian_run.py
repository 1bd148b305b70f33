"""``turnpike hessian``: the run folder, its metrics, resuming a killed run, the command line."""
import json
import shutil

import numpy as np
import pytest

from turnpike.cli import main
from turnpike.experiments import _hessian
from turnpike.experiments._hessian import HessianConfig, run_hessian

SMALL = dict(depths=(2, 4), runs=2, train_runs=1, steps=30, learning_rates=(0.01, 0.1), path_depth=4, path_points=4)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("hessian")
    return out, run_hessian(HessianConfig(**SMALL), out)


def test_metrics_hold_the_three_experiments(small_run):
    out, metrics = small_run
    saved = json.loads((out / "metrics.json").read_text())
    assert json.loads((out / "config.json").read_text())["config"]["depths"] == [2, 4]
    for family in ("xavier", "orthogonal", "shortcut2"):
        rows = saved["initial_condition_number"][family]
        assert [row["depth"] for row in rows] == [2, 4] and all(row["mean"] >= 1 for row in rows)
        path = saved["training_paths"][family]["runs"][0]
        assert [point["step"] for point in path] == [0, 1, 5, 29]
        assert path[-1]["excess_loss"] < path[0]["excess_loss"]
        assert {"max_abs", "abs_p10", "index", "gradient_norm", "robust_condition_number"} <= set(path[0])
    shortcut = [row["mean"] for row in saved["initial_condition_number"]["shortcut2"]]
    assert shortcut[1] == pytest.approx(shortcut[0], rel=0.02)
    assert saved["initial_condition_number"]["xavier"][1]["mean"] > 10 * shortcut[1]
    # the 2-shortcut network starts at the identity map: excess loss ½·mean‖x − y‖² − L*
    assert saved["training_paths"]["shortcut2"]["runs"][0][0]["excess_loss"] > 1.0
    assert all((out / name).is_file() for name in ("fig4_initial_condition.png", "fig5_spectrum_path.png",
                                                   "fig6_index.png", "fig7_final_loss.png"))


def test_resume_reuses_finished_work_and_only_for_the_same_config(small_run, monkeypatch, tmp_path):
    out, metrics = small_run
    def refuse(*args, **kwargs):
        raise AssertionError("recomputed a finished Hessian")
    monkeypatch.setattr(_hessian, "hessian", refuse)
    again = run_hessian(HessianConfig(**SMALL), out, plots=False, resume=True)
    for key in ("initial_condition_number", "final_excess_loss", "training_paths"):
        assert json.dumps(again[key]) == json.dumps(metrics[key])
    before = {path.name: path.read_bytes() for path in out.iterdir()}
    with pytest.raises(ValueError, match=r"seed: 0 there, 1 now"):     # another seed: refused, nothing mixed
        run_hessian(HessianConfig(**{**SMALL, "seed": 1}), out, plots=False, resume=True)
    assert {path.name: path.read_bytes() for path in out.iterdir()} == before
    with pytest.raises(ValueError, match="--resume continues it, --overwrite replaces it"):
        run_hessian(HessianConfig(**SMALL), out, plots=False)
    copy = shutil.copytree(out, tmp_path / "copy")                 # (the fixture's run stays for other tests)
    with pytest.raises(AssertionError, match="recomputed"):       # overwritten: nothing reused
        run_hessian(HessianConfig(**{**SMALL, "seed": 1}), copy, plots=False, overwrite=True)
    assert not (copy / "metrics.json").exists()


def test_command_line(tmp_path, capsys):
    code = main(["hessian", "--depths", "2", "--runs", "1", "--train-runs", "1", "--steps", "5",
                 "--learning-rates", "0.1", "--path-depth", "2", "--no-plots", "--out", str(tmp_path)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "Theorem 2 condition number at zero" in printed and "shortcut2" in printed
    assert not list(tmp_path.glob("*.png"))
    assert main(["hessian", "--depths", "3", "--out", str(tmp_path)]) == 2
    assert "depths: expected multiples of 2 for family 'xavier', got 3" in capsys.readouterr().err


def test_diverged_rates_are_not_chosen(tmp_path):
    metrics = run_hessian(HessianConfig(**{**SMALL, "learning_rates": (0.1, 50.0), "families": ("xavier",),
                                           "depths": (4,)}), tmp_path, plots=False)
    row = metrics["final_excess_loss"]["xavier"][0]
    assert row["best_lr"] == 0.1 and np.isinf(row["excess_loss_by_lr"][1])
