"""Early-exit inference: τ = 0 is exit 0, τ = 1 the full network, and stopping images mid-batch
gives what the all-exits evaluation decides."""
import pytest
import torch

import turnpike as tp

from turnpike import early_exit_curve, early_exit_predict
from test_preact_resnet import images, make, randomise


@pytest.fixture(params=["ws", "full"])
def network(request):
    return randomise(make("homogeneous", request.param)).eval()


@torch.no_grad()
def test_threshold_zero_is_exit_zero_and_one_is_the_output(network):
    x = images(batch=12)
    logits = network.exit_logits(x)
    predictions, exits = early_exit_predict(network, x, 0.0)
    assert exits.tolist() == [0] * 12 and torch.equal(predictions, logits[0].argmax(-1))
    predictions, exits = early_exit_predict(network, x, 1.0)
    assert exits.tolist() == [network.depth] * 12 and torch.equal(predictions, network(x).argmax(-1))


def test_stopping_mid_batch_matches_the_all_exits_decision(network):
    x = images(batch=24, seed=3)
    labels = torch.arange(24) % 5
    with torch.no_grad():
        confidence = network.exit_logits(x).softmax(-1).amax(-1)             # (N+1, 24)
    # between the middle two of exit 0's confidences: half the images stop there, the others go on (a threshold
    # equal to an image's confidence would make its decision hang on the round-off of how its exit is computed)
    middle = confidence[0].sort().values[11:13]
    threshold = float(middle.mean())
    predictions, exits = early_exit_predict(network, x, threshold)
    assert 0 < int((exits == 0).sum()) < 24 and len(set(exits.tolist())) >= 2
    curve = early_exit_curve(network, x, labels, [0.0, threshold, 1.0], batch_size=7)
    assert curve["mean_blocks"][1] == pytest.approx(float(exits.double().mean()))
    assert curve["accuracy"][1] == pytest.approx(float((predictions == labels).double().mean()))
    assert curve["mean_blocks"][0] == 0 and curve["mean_blocks"][2] == network.depth
    assert 0 < curve["mean_blocks"][1] < network.depth
    assert curve["accuracy"][0] == pytest.approx(curve["exit_accuracy"][0])
    assert curve["accuracy"][2] == pytest.approx(curve["exit_accuracy"][-1])
    # each image's answer does not depend on its batch (eval-mode BatchNorm)
    alone = [early_exit_predict(network, x[i:i + 1], threshold) for i in range(24)]
    assert [int(p) for p, _ in alone] == predictions.tolist() and [int(e) for _, e in alone] == exits.tolist()


@pytest.mark.parametrize("scheme, exits", [("standard", "full"), ("standard", "ws"), ("homogeneous", "ws")])
def test_exit_costs_are_torchs_flop_count_of_the_same_computation(scheme, exits):
    """exit_costs against torch.utils.flop_counter on the plain forward pass and on early exit's own
    path (stem, blocks 0..k-1, heads 0..k), odd image sizes included (9 -> 5 -> 3)."""
    from torch.utils.flop_counter import FlopCounterMode

    net = make(scheme, exits).eval()
    x = images(batch=1, size=9)
    costs = net.exit_costs(9, 9)

    def multiply_adds(run):
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            run()
        return counter.get_total_flops() // 2

    assert costs["network"] == multiply_adds(lambda: net(x))

    def early_exit_path(k):
        state = net.stem(x)
        for j in range(k + 1):
            net.exit_logit(j, state)
            if j < k:
                state = net.blocks[j](state)
    assert costs["early_exit"] == [multiply_adds(lambda k=k: early_exit_path(k)) for k in range(net.depth + 1)]
    curve = early_exit_curve(net, images(batch=12), torch.zeros(12, dtype=torch.long), [0.0, 1.0])
    assert curve["mean_compute"] == pytest.approx([costs["early_exit"][0] / costs["network"],
                                                   costs["early_exit"][-1] / costs["network"]])
    assert curve["mean_compute"][1] > 1.0           # every head on the way: more than the plain network


def test_resnet110_costs_the_253_million_multiply_adds_the_pruning_literature_reports():
    # e.g. Li et al. 2017, "Pruning filters for efficient ConvNets", Table 1: 2.53e8 (multiply-adds)
    from turnpike import preact_resnet

    assert round(preact_resnet(blocks_per_stage=18).exit_costs(32, 32)["network"] / 1e6) == 253


def test_a_test_set_given_batch_by_batch_gives_the_curve_of_the_whole_tensor(network):
    x, labels = images(batch=24, seed=4), torch.arange(24) % 5
    thresholds = [0.0, 0.3, 0.6, 1.0]
    whole = early_exit_curve(network, x, labels, thresholds, batch_size=24)
    batches = [(x[i:i + 5], labels[i:i + 5]) for i in range(0, 24, 5)]          # a list: iterable again
    parts = early_exit_curve(network, batches, None, thresholds, measure_speed=True)
    for key in ("accuracy", "mean_blocks", "mean_compute", "exit_accuracy"):
        assert parts[key] == pytest.approx(whole[key], abs=1e-12), key
    assert len(parts["images_per_s"]) == 4 and all(rate > 0 for rate in parts["images_per_s"])
    # the median of the timed passes, inside their range
    assert all(low <= rate <= high for rate, (low, high) in zip(parts["images_per_s"], parts["images_per_s_range"]))
    with pytest.raises(ValueError, match="images: expected a tensor of images with their labels, or"):
        early_exit_curve(network, iter(batches), None, thresholds, measure_speed=True)     # read only once
    with pytest.raises(ValueError, match=r"images\[1\]: expected an \(images, labels\) batch"):
        early_exit_curve(network, [batches[0], x[:5]], None, thresholds)
    with pytest.raises(ValueError, match="images: expected at least one batch"):
        early_exit_curve(network, [], None, thresholds)
    with pytest.raises(ValueError, match="batch_size: expected None with batches"):
        early_exit_curve(network, batches, None, thresholds, batch_size=5)     # not silently ignored
    with pytest.raises(ValueError, match="labels: expected the labels of the images"):
        early_exit_curve(network, x, None, thresholds)


def test_training_mode_is_restored_and_bad_input_refused():
    net = make("standard", "ws").train()
    early_exit_predict(net, images(), 0.5)
    early_exit_curve(net, images(), torch.zeros(6, dtype=torch.long), [0.5], measure_speed=True)
    assert net.training
    with pytest.raises(ValueError, match="threshold: expected a number <= 1"):
        early_exit_predict(net, images(), 1.5)
    with pytest.raises(ValueError, match="network: expected a ResidualNetwork"):
        early_exit_predict(torch.nn.Linear(2, 2), images(), 0.5)


def test_cli_curve_figure_and_points(tmp_path, capsys):
    import json

    from turnpike.cli import main

    common = ["--dataset", "mnist", "--arch", "homogeneous", "--width", "4", "--blocks-per-stage", "1", "--epochs",
              "1", "--train-subset", "64", "--test-subset", "32", "--batch-size", "32", "--quiet", "--no-plots"]
    assert main(["resnet54", *common, "--variant", "ws", "--out", str(tmp_path / "net")]) == 0
    assert main(["resnet54", *common, "--variant", "standard", "--out", str(tmp_path / "std")]) == 0
    metrics = json.loads((tmp_path / "net" / "metrics.json").read_text())
    capsys.readouterr()
    assert main(["early-exit", str(tmp_path / "net"), "--compare", str(tmp_path / "std"),
                 "--thresholds", "0,0.5,1"]) == 0
    assert "32 test images" in capsys.readouterr().out
    curve = json.loads((tmp_path / "net" / "early_exit.json").read_text())
    assert curve["thresholds"] == [0.0, 0.5, 1.0] and len(curve["images_per_s"]) == 3
    assert curve["accuracy"][-1] == pytest.approx(metrics["test_accuracy"])     # τ = 1: the full network
    assert curve["accuracy"][0] == pytest.approx(metrics["exit_test_accuracy"][0])
    assert (tmp_path / "net" / "early_exit.png").stat().st_size > 0
    # compute: τ = 1 evaluates every head on the way, the pruned SubResNet is cheaper than the network
    network = tp.experiments.load_resnet54_network(tmp_path / "net")
    costs = network.exit_costs(32, 32)
    assert metrics["multiply_adds"] == costs["network"]
    assert curve["mean_compute"][-1] == pytest.approx(costs["early_exit"][-1] / costs["network"])
    if metrics["pruned"]:
        assert metrics["pruned"]["multiply_adds"] == network.subresnet(metrics["pruned"]["depth"]).exit_costs(32, 32)["network"]
    assert main(["early-exit", str(tmp_path / "net"), "--thresholds", "2", "--no-plots"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("turnpike early-exit: error: --thresholds") and "expected a number <= 1" in error


def test_threshold_labels_merge_points_that_would_print_over_each_other():
    from turnpike.experiments._conv_plots import threshold_labels

    xs, ys = [0.0, 1.0, 1.01, 1.02, 3.0], [0.5, 0.8, 0.801, 0.8, 0.9]
    labels = threshold_labels(xs, ys, [0.0, 0.5, 0.8, 0.9, 1.0])
    assert [label for *_, label in labels] == ["τ=0", "τ=0.5–0.9", "τ=1"]
    assert [(x, y) for x, y, _ in labels] == [(0.0, 0.5), (1.0, 0.8), (3.0, 0.9)]
