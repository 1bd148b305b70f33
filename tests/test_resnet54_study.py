"""`turnpike resnet54-study`: the paper's comparison as one resumable study (tiny networks, MNIST subset)."""
import json
from pathlib import Path

import pytest
import torch

from turnpike.cli import main
from turnpike.experiments import ResNet54Config, load_resnet54_network, run_config
from turnpike.experiments._resnet54 import load_data
from turnpike.experiments._study import PAPER_TABLE1, _paper_column, study_markdown, study_runs

TINY = ["--dataset", "mnist", "--arch", "homogeneous", "--width", "4", "--blocks-per-stage", "1", "--epochs", "2",
        "--milestones", "1", "--train-subset", "96", "--test-subset", "48", "--batch-size", "32", "--lr", "0.05",
        "--eps-fraction", "0.5", "--quiet", "--subresnets", "2"]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("study") / "s"
    assert main(["resnet54-study", *TINY, "--out", str(out)]) == 0
    return out, json.loads((out / "study.json").read_text())


def test_study_trains_every_run_and_writes_table_1(study):
    out, result = study
    assert result["status"] == "finished" and result["runs"] == ["standard", "ws", "full", "subresnet-2"]
    metrics = {name: json.loads((out / name / "metrics.json").read_text()) for name in result["runs"]}
    assert [metrics[n]["depth"] for n in result["runs"]] == [3, 3, 3, 2]
    rows = {row["key"]: row for row in result["table1"]}
    for key, run in (("standard", "standard"), ("subresnet", "subresnet-2"), ("ws", "ws"), ("full", "full")):
        assert rows[key]["test_accuracy"] == metrics[run]["test_accuracy"]
        assert rows[key]["parameters"] == metrics[run]["parameters"]
    assert all(row["paper"] is None for row in result["table1"])          # N = 3: no column of the paper matches
    text = (out / "study.md").read_text()
    assert "Table 1" in text and "SubResNet-2 standard training" in text and "paper" not in text


def test_pruned_rows_are_the_subresnets_cut_from_the_trained_networks(study):
    # independent of the exit metrics: cut the saved network at M and run the test set through it
    out, result = study
    data = load_data(run_config(out / "ws"))
    from turnpike.data import normalise
    images = normalise(data.test_images, data.mean, data.std).contiguous(memory_format=torch.channels_last)
    for variant in ("ws", "full"):
        sub = load_resnet54_network(out / variant).subresnet(2).eval()
        with torch.no_grad():
            accuracy = float((sub(images).argmax(-1) == data.test_labels).double().mean())
        row = next(r for r in result["table1"] if r["key"] == f"{variant}_pruned")
        assert row["test_accuracy"] == pytest.approx(accuracy, abs=1e-12)
        whole = json.loads((out / variant / "metrics.json").read_text())["parameters"]
        assert row["parameters"] == sub.parameter_count() < whole


def test_study_writes_depth_bounds_and_figures(study):
    out, result = study
    assert set(result["depth_bounds"]) == {"ws", "full"}
    for bounds in result["depth_bounds"].values():
        assert [row["sub_depth"] for row in bounds["rows"]] == [2]
    assert "Tables 2–3" in (out / "study.md").read_text()
    names = {Path(f).name for f in result["figures"]}
    assert {"study_exits.png", "study_residuals.png", "study_early_exit_ws.png", "study_early_exit_full.png"} <= names
    assert all(Path(f).stat().st_size > 0 for f in result["figures"])


def test_time_limit_stops_the_study_and_resume_keeps_finished_runs(tmp_path, capsys):
    out = tmp_path / "s"
    common = ["resnet54-study", *TINY, "--variants", "standard,ws", "--no-plots", "--out", str(out)]
    assert main(common + ["--time-limit", "0"]) == 0
    stopped = json.loads((out / "study.json").read_text())
    assert stopped["status"] == "time_limit" and stopped["stopped_in"] == "standard" and stopped["runs"] == []
    assert "--resume continues" in capsys.readouterr().err and not (out / "ws").exists()
    assert main(common + ["--resume"]) == 0
    result = json.loads((out / "study.json").read_text())
    assert result["status"] == "finished" and result["runs"] == ["standard", "ws", "subresnet-2"]
    assert json.loads((out / "standard" / "metrics.json").read_text())["epochs_done"] == 2
    logs = {name: (out / name / "log.jsonl").read_text() for name in result["runs"]}
    stamps = {name: (out / name / "metrics.json").stat().st_mtime_ns for name in result["runs"]}
    assert main(common + ["--resume"]) == 0                  # all finished: nothing trains again
    assert {name: (out / name / "log.jsonl").read_text() for name in result["runs"]} == logs
    assert {name: (out / name / "metrics.json").stat().st_mtime_ns for name in result["runs"]} == stamps
    # a finished run with other settings is not silently reused
    assert main([*common, "--resume", "--lr", "0.1"]) == 2
    assert "lr: 0.05 there, 0.1 now" in capsys.readouterr().err


def test_paper_column_matches_data_set_architecture_and_depths():
    base = ResNet54Config(dataset="fashion-mnist", arch="homogeneous")
    name, column = _paper_column(base, 54, 12)
    assert name == "paper, mnist (a different data set)" and column["standard"] == (99.64, 1.0)
    assert _paper_column(ResNet54Config(dataset="cifar10"), 54, None)[1]["ws_pruned"] == (78.74, 0.06)
    assert _paper_column(ResNet54Config(dataset="cifar100", arch="homogeneous"), 54, 12)[1]["full"] == (69.18, 4.4)
    assert _paper_column(base, 30, 12) is None and _paper_column(base, 54, 6) is None
    assert _paper_column(ResNet54Config(dataset="mnist", arch="homogeneous", width=16), 54, 12) is None
    assert _paper_column(ResNet54Config(dataset="cifar100"), 54, 12) is None     # standard CIFAR-100: not in Table 1
    assert set(PAPER_TABLE1) == {("homogeneous", "mnist"), ("homogeneous", "cifar10"), ("homogeneous", "cifar100"),
                                 ("standard", "cifar10")}


def test_markdown_puts_the_papers_numbers_beside():
    base = ResNet54Config(dataset="mnist", arch="homogeneous")
    rows = [{"model": "ResNet-54 standard training", "key": "standard", "test_accuracy": 0.9951, "parameters": 1.0e6,
             "paper": (99.64, 1.0), "paper_column": "paper, mnist"},
            {"model": "  SubResNet-9 pruned at the turnpike (ws)", "key": "turnpike", "test_accuracy": 0.99,
             "parameters": 2e5, "paper": None, "paper_column": "paper, mnist"}]
    text = study_markdown(base, {"depth": 54, "table1": rows, "depth_bounds": {}})
    assert "| model | this study | paper, mnist |" in text
    assert "| ResNet-54 standard training | 99.51 (1 M) | 99.64 (1 M) |" in text
    assert "| SubResNet-9 pruned at the turnpike (ws) | 99.00 (0.2 M) | – |" in text


def test_study_runs_name_their_folders_and_refuse_unknown_variants():
    runs = study_runs(ResNet54Config(), ("ws",), (6, 12))
    assert list(runs) == ["ws", "subresnet-6", "subresnet-12"]
    assert runs["subresnet-6"].variant == "standard" and runs["subresnet-6"].subresnet == 6
    with pytest.raises(ValueError, match="variants: expected one of"):
        study_runs(ResNet54Config(), ("ws", "wide"))
    with pytest.raises(ValueError, match="subresnets: expected SubResNet depths below the network's N = 6, got 6"):
        study_runs(ResNet54Config(blocks_per_stage=2), ("ws",), (2, 6))


def _row(model, key, accuracy, variant=None, sub_depth=None):
    return {"model": model, "key": key, "variant": variant, "sub_depth": sub_depth, "test_accuracy": accuracy,
            "parameters": 1, "paper": None, "paper_column": None}


def test_seeds_summary_pools_table_1_and_compares_pruned_with_scratch():
    from turnpike.experiments._study import seeds_summary

    def study(ws, scratch, pruned, turnpike_depth, turnpike_accuracy):
        return {"table1": [_row("ResNet-12_ws stage cost", "ws", ws, "ws"),
                           _row("SubResNet-6 standard training", "subresnet", scratch, None, 6),
                           _row("  SubResNet-6 pruned (ws)", "ws_pruned", pruned, "ws", 6),
                           _row(f"  SubResNet-{turnpike_depth} pruned at the turnpike (ws)", "turnpike",
                                turnpike_accuracy, "ws", turnpike_depth)]}

    summary = seeds_summary({2: study(0.90, 0.85, 0.86, 9, 0.88), 1: study(0.80, 0.84, 0.82, 10, 0.79)})
    rows = {r["model"]: r for r in summary["rows"]}
    assert rows["ResNet-12_ws stage cost"]["mean"] == pytest.approx(0.85)
    assert (rows["ResNet-12_ws stage cost"]["min"], rows["ResNet-12_ws stage cost"]["max"]) == (0.80, 0.90)
    pooled = rows["SubResNet pruned at the turnpike (ws)"]
    assert pooled["seeds"] == 2 and pooled["depths"] == [10, 9] and pooled["mean"] == pytest.approx(0.835)
    (comparison,) = summary["pruned_vs_scratch"]                        # seed by seed, in seed order
    assert comparison["variant"] == "ws" and comparison["sub_depth"] == 6
    assert comparison["points"] == pytest.approx([-2.0, 1.0]) and comparison["within_one_point"] == 1
    assert summary["seeds"] == [1, 2] and "| ws | 6 | -0.50 | -2.00–+1.00 | 1 of 2 |" in summary["markdown"]


def test_study_over_seeds_writes_one_study_each_and_the_summary(tmp_path):
    out = tmp_path / "s"
    assert main(["resnet54-study", *TINY, "--variants", "ws", "--no-plots", "--seeds", "3-4", "--out", str(out)]) == 0
    summary = json.loads((out / "seeds.json").read_text())
    assert summary["seeds"] == [3, 4] and (out / "seeds.md").is_file()
    studies = [json.loads((out / f"seed-{s}" / "study.json").read_text()) for s in (3, 4)]
    assert [json.loads((out / f"seed-{s}" / "ws" / "config.json").read_text())["seed"] for s in (3, 4)] == [3, 4]
    ws = [next(r for r in s["table1"] if r["key"] == "ws")["test_accuracy"] for s in studies]
    row = next(r for r in summary["rows"] if r["model"] == "ResNet-3_ws stage cost")
    assert row["mean"] == pytest.approx(sum(ws) / 2) and row["seeds"] == 2
    (comparison,) = summary["pruned_vs_scratch"]
    pruned = [next(r for r in s["table1"] if r["key"] == "ws_pruned")["test_accuracy"] for s in studies]
    scratch = [next(r for r in s["table1"] if r["key"] == "subresnet")["test_accuracy"] for s in studies]
    assert comparison["points"] == pytest.approx([100 * (p - q) for p, q in zip(pruned, scratch)])
