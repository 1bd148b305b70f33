"""The main job end to end: the experiment, its run folder, its claims and the CLI."""
import json

import numpy as np
import pytest

import turnpike as tp
from turnpike.cli import main


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("spirals")
    metrics = tp.experiments.run_spirals(tp.experiments.SpiralsConfig(seed=0), out, plots=False)
    return out, metrics


def test_default_run_shows_the_turnpike(default_run):
    """The issue's acceptance criteria on the default configuration."""
    _, m = default_run
    assert m["train_accuracy"] == 1.0
    assert m["test_accuracy"] >= 0.97
    assert m["turnpike_layer"] is not None and m["turnpike_layer"] <= 12
    # every layer from the turnpike layer on is in Q_eps
    assert list(m["layers_in_Q_eps"]) == list(range(m["turnpike_layer"], 31))
    assert m["control_norm_ratio"] < 0.1                   # an order of magnitude below the first layers
    assert m["pruned"]["depth"] == m["turnpike_layer"]
    assert m["pruned"]["train_accuracy"] == 1.0
    assert m["pruned"]["test_accuracy"] >= m["test_accuracy"] - 0.01
    # the baseline without stage cost only reaches X*_y (if at all) at its last layer
    assert m["baseline"]["turnpike_layer"] is None or m["baseline"]["turnpike_layer"] > 25


def test_run_folder_holds_config_and_metrics(default_run):
    out, m = default_run
    config = json.loads((out / "config.json").read_text())
    assert config["seed"] == 0 and config["config"]["depth"] == 30
    assert config["environment"]["turnpike"] == tp.__version__
    saved = json.loads((out / "metrics.json").read_text())
    for key in ("train_accuracy", "test_accuracy", "eps", "turnpike_layer", "layers_in_Q_eps", "pruned",
                "wall_time_s"):
        assert key in saved and key in saved["baseline"]
    assert len(saved["stage_cost_per_layer"]) == 31
    assert len(saved["control_norm_per_layer"]) == 30
    np.testing.assert_allclose(saved["stage_cost_per_layer"], m["stage_cost_per_layer"])
    # eps is the documented fraction of the inputs' RMS distance to X*_y
    assert saved["eps"] == pytest.approx(0.1 * saved["distance_per_layer"][0])


def test_pruned_metrics_match_a_truncated_rollout(default_run):
    _, m = default_run
    solution = m["solutions"]["stage_cost"]
    layer = m["turnpike_layer"]
    test_inputs, test_labels = solution.test_states[0], solution.test_labels
    predicted = solution.prune(layer)(test_inputs)[:, :2].argmax(1)
    assert np.mean(predicted == test_labels) == m["pruned"]["test_accuracy"]
    np.testing.assert_array_equal(solution.prune(layer).states(test_inputs), solution.test_states[: layer + 1])


def test_cli_small_run_writes_figures(tmp_path, capsys):
    code = main(["spirals", "--out", str(tmp_path), "--depth", "6", "--steps", "30,20", "--quiet"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "with stage cost" in printed and "baseline" in printed
    for name in ("config.json", "metrics.json", "fig2_dataset.png", "fig3_trajectories.png",
                 "fig4_final_states.png", "layer_profiles.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert json.loads((tmp_path / "config.json").read_text())["config"]["steps"] == [30, 20]


def test_cli_several_seeds(tmp_path, capsys):
    code = main(["spirals", "--out", str(tmp_path), "--seeds", "0-1", "--depth", "4", "--method", "lbfgs",
                 "--steps", "10", "--no-plots", "--no-baseline", "--quiet"])
    assert code == 0
    assert (tmp_path / "seed-0" / "metrics.json").exists() and (tmp_path / "seed-1" / "metrics.json").exists()
    assert "2 seeds" in capsys.readouterr().out


@pytest.mark.parametrize("argv, argument", [
    (["spirals", "--depth", "0", "--no-plots"], "depth"),
    (["spirals", "--method", "newton", "--no-plots"], "method"),
    (["spirals", "--turns", "-1", "--no-plots"], "turns"),
])
def test_cli_bad_input_is_a_clear_error(tmp_path, capsys, argv, argument):
    code = main(argv + ["--out", str(tmp_path), "--quiet"])
    assert code == 2
    assert argument in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_other_seeds_behave_the_same(seed):
    m = tp.experiments.run_spirals(tp.experiments.SpiralsConfig(seed=seed, baseline=False), plots=False)
    assert m["train_accuracy"] == 1.0 and m["test_accuracy"] >= 0.97
    assert m["turnpike_layer"] is not None and m["turnpike_layer"] <= 12


# --- method schedules of the experiment configs ----------------------------------------------------

@pytest.mark.parametrize("make, default_steps", [(tp.experiments.SpiralsConfig, 200), (tp.experiments.NodeSpiralsConfig, 100)])
def test_config_schedule_defaults_follow_the_methods(make, default_steps):
    assert make().method == ("adam", "lbfgs")
    assert make().steps == (default_steps, default_steps)
    assert make().options == ({"lr": 0.02}, {})
    single = make(method="lbfgs")
    assert (single.method, single.steps, single.options) == (("lbfgs",), (default_steps,), ({},))
    three = make(method=("adam", "lbfgs", "sgd"), steps=50)
    assert three.steps == (50, 50, 50)
    assert three.options == ({"lr": 0.02}, {}, {"lr": 0.02})


@pytest.mark.parametrize("fields, argument", [
    (dict(method=("adam", "lbfgs"), options=({"lr": 0.1},)), "options"),
    (dict(method=("adam", "lbfgs", "adam"), steps=(10, 10)), "steps"),
])
def test_config_schedule_of_the_wrong_length_is_refused(fields, argument):
    with pytest.raises(ValueError, match=rf"{argument}: expected one entry per method \(\d"):
        tp.experiments.SpiralsConfig(**fields)


def test_cli_lr_reaches_the_first_order_methods_only():
    import argparse

    from turnpike.cli import _node, _spirals

    for module, argv in ((_spirals, ["spirals", "--method", "sgd,lbfgs,adam", "--lr", "0.3"]),
                         (_node, ["node-spirals", "--lr", "0.3"])):
        parser = argparse.ArgumentParser()
        module.add_parser(parser.add_subparsers())
        args = parser.parse_args(argv)
        config = module._config(args, 0) if module is _spirals else module._config(args)
        for method, options in zip(config.method, config.options):
            assert (options.get("lr") == 0.3) == (method != "lbfgs"), (method, options)
