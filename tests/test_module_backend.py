"""The convolutional ResNet through OCP + solve_ocp (module backend), its solution and its run folder."""
import copy
import json

import numpy as np
import pytest
import torch

import turnpike as tp
from turnpike.backends._module import ModuleBackend
from turnpike.backends._schedules import learning_rate_factor
from turnpike.cli import main

CLASSES = 4


def tiny_data(count=48, seed=0):
    """Images whose class is a bright quadrant: learnable in a few steps by a tiny conv net."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, CLASSES, count)
    images = rng.integers(0, 60, (count, 1, 8, 8)).astype(np.uint8)
    for i, y in enumerate(labels):
        r, c = divmod(int(y), 2)
        images[i, 0, 4 * r:4 * r + 4, 4 * c:4 * c + 4] += 150
    return torch.as_tensor(images), labels


def tiny_net(exits="ws", seed=0):
    torch.manual_seed(seed)
    return tp.preact_resnet(widths=(4, 4), blocks_per_stage=(2, 2), in_channels=1, num_classes=CLASSES, exits=exits)


def tiny_ocp(net, gamma=0.1, decay=1e-4):
    images, labels = tiny_data()
    loss = tp.CrossEntropy(num_classes=CLASSES)
    stage = tp.InputPenalty(decay) if gamma == 0 else gamma * loss + tp.InputPenalty(decay)
    return tp.OCP(net, images, labels, stage_cost=stage, terminal_cost=loss)


SOLVE = dict(method="sgd", steps=24, batch_size=16, options={"lr": 0.05}, progress=False,
             normalise=((0.3,), (0.3,)))


@pytest.mark.parametrize("exits, gamma", [("ws", 0.1), ("full", 0.1), ("standard", 0.0)])
def test_tiny_conv_net_trains_through_solve_ocp(exits, gamma):
    net = tiny_net(exits)
    ocp = tiny_ocp(net, gamma)
    test = tiny_data(32, seed=1)
    solution = tp.solve_ocp(ocp, test_data=test, **SOLVE)
    assert isinstance(solution, tp.ModuleSolution) and solution.status == tp.Status.MAX_STEPS
    objective = solution.history["objective"]
    assert len(objective) == 24 and objective[-4:].mean() < 0.8 * objective[:4].mean()
    N = net.depth
    for split in ("train", "test"):
        assert solution.loss_per_layer(split).shape == (N + 1,)
        assert solution.accuracy_per_layer(split).shape == (N + 1,)
    assert solution.accuracy("train") > 0.4          # chance is 0.25
    assert solution.output_residual_norms.shape == (N,) and solution.branch_parameter_norms.shape == (N,)


def test_stage_cost_objective_is_the_ocp_formula():
    """J = γ Σ_{k<N} mean CE(ŷ_k) + mean CE(ŷ_N) + r‖w‖², from exits computed one by one."""
    net = tiny_net("ws").double()
    ocp = tiny_ocp(net, gamma=0.3, decay=0.01)
    backend = tp.backends.make_backend(ocp, seed=0, batch_size=None, device=torch.device("cpu"),
                                       settings={"normalise": ((0.3,), (0.3,))})
    images = backend.prepare(ocp.inputs).double()
    labels = torch.as_tensor(ocp.labels)
    net.eval()   # the same (running) statistics on both sides
    value = backend.objective(images, labels)
    states = net.states(images)
    ce = torch.nn.functional.cross_entropy
    expected = sum(0.3 * ce(net.exit_logit(k, states[k]), labels) for k in range(net.depth))
    expected = expected + ce(net.exit_logit(net.depth, states[-1]), labels)
    expected = expected + 0.01 * sum((p ** 2).sum() for p in net.parameters())
    assert float(value.detach()) == pytest.approx(float(expected.detach()), rel=1e-10)


@pytest.mark.parametrize("method, exits, gamma", [("sgd", "ws", 0.3), ("adam", "ws", 0.3), ("sgd", "full", 0.0),
                                                  ("adamw", "ws", 0.3)])
def test_a_step_descends_the_whole_objective(method, exits, gamma):
    """One training step is the optimiser's step on ∇J of the whole objective, input penalty included
    (taken as the optimiser's weight decay, not through autograd), and reports J before the step.
    With gamma = 0 the full exits get no gradient through the graph, and the decay still shrinks them.
    AdamW's decay is decoupled: w ← w(1 - lr·decay) before Adam's step on the loss gradient."""
    decay, lr = 0.05, 0.01
    net = tiny_net(exits)
    ocp = tiny_ocp(net, gamma=gamma, decay=decay / 2)            # InputPenalty(r): ∇ r‖w‖² = 2 r w = decay · w
    backend = tp.backends.make_backend(ocp, seed=0, batch_size=None, device=torch.device("cpu"),
                                       settings={"normalise": ((0.3,), (0.3,))})
    options = {**backend.methods[method].defaults, "lr": lr}
    if method == "sgd":
        options["momentum"] = 0.0
    backend.begin_phase(0, backend.methods[method], 10, options)
    reference = copy.deepcopy(net)
    images = backend.prepare(ocp.inputs)
    labels = torch.as_tensor(ocp.labels)
    params = dict(reference.named_parameters())
    loss = ModuleBackend._loss(_with_module(backend, reference), images, labels)   # the exits' and output's
    expected_value = loss + 0.5 * decay * sum((p ** 2).sum() for p in params.values())
    # AdamW: the loss's gradient only, the decay acts on the weights
    differentiated = loss if method == "adamw" else expected_value
    gradients = torch.autograd.grad(differentiated, list(params.values()), allow_unused=True)
    gradients = [torch.zeros_like(p) if g is None else g for p, g in zip(params.values(), gradients)]
    value = backend.evaluate(0, 0)
    backend.update(0)
    assert float(value) == pytest.approx(float(expected_value.detach()), rel=1e-6)
    after = dict(net.named_parameters())
    exit_ids = {id(p) for p in net.exit_parameters()}
    for (name, p), g in zip(params.items(), gradients):
        factor = backend.exit_lr_factor if id(after[name]) in exit_ids else 1.0
        step = lr * factor
        if method == "sgd":
            expected = p - step * g
        elif method == "adam":              # first Adam step: -lr·g/(|g| + eps), bias-corrected
            expected = p - step * g / (g.abs() + 1e-8)
        else:
            expected = p * (1 - step * decay) - step * g / (g.abs() + 1e-8)
        assert torch.allclose(after[name].detach(), expected.detach(), rtol=0, atol=1e-6), name
    if gamma == 0:                          # exit heads: no loss gradient, yet shrunk by the decay
        for p in net.exit_parameters():
            before = params[next(n for n, q in net.named_parameters() if q is p)]
            assert torch.allclose(p.detach(), before.detach() * (1 - lr * backend.exit_lr_factor * decay), atol=1e-7)


def _with_module(backend, module):
    """A copy of ``backend`` whose objective runs ``module`` (the same settings, another network)."""
    twin = copy.copy(backend)
    twin._forward = lambda images, all_exits=backend.stage_weight > 0: module(images, all_exits=all_exits)
    return twin


def test_full_exit_parameters_get_the_lr_factor():
    net = tiny_net("full")
    ocp = tiny_ocp(net, gamma=0.02)
    captured = []
    tp.solve_ocp(ocp, **{**SOLVE, "steps": 1},
                 callback=lambda step, value, module: captured.append(1))
    backend = tp.backends.make_backend(ocp, seed=0, batch_size=16, device=torch.device("cpu"))
    backend.begin_phase(0, backend.methods["sgd"], 10, {**backend.methods["sgd"].defaults, "lr": 0.1})
    factors = [g["lr_factor"] for g in backend.optimiser.param_groups]
    assert factors == [1.0, pytest.approx(1 / 0.02)]
    exit_ids = {id(p) for p in net.exit_parameters()}
    assert {id(p) for p in backend.optimiser.param_groups[1]["params"]} == exit_ids
    assert captured == [1]


def test_learning_rate_schedules():
    options = {"schedule": "multistep", "milestones": (3, 6), "decay": 0.1, "warmup_steps": 2,
               "final_lr_fraction": 0.0}
    factors = [learning_rate_factor(options, step, 10) for step in range(8)]
    assert factors == pytest.approx([0.5, 1.0, 1.0, 0.1, 0.1, 0.1, 0.01, 0.01])
    cosine = {**options, "schedule": "cosine", "warmup_steps": 0, "final_lr_fraction": 0.1}
    assert learning_rate_factor(cosine, 0, 10) == pytest.approx(1.0)
    assert learning_rate_factor(cosine, 10, 10) == pytest.approx(0.1)
    assert learning_rate_factor(cosine, 5, 10) == pytest.approx(0.55)


def test_killed_run_resumes_to_the_same_weights(tmp_path):
    """Parameters, BatchNorm buffers (per-exit statistics) and SGD momentum come back exactly."""
    flip = lambda images, generator: tp.data.augment(images, crop_padding=1, generator=generator)  # noqa: E731
    settings = dict(SOLVE, checkpoint_every=3, augment=flip)
    full = tp.solve_ocp(tiny_ocp(tiny_net()), **settings)
    path = tmp_path / "checkpoint.pt"
    interrupted = tp.solve_ocp(tiny_ocp(tiny_net()), checkpoint=path, callback=lambda s, v, m: s < 10, **settings)
    assert interrupted.status == "stopped" and path.exists()
    resumed = tp.solve_ocp(tiny_ocp(tiny_net()), checkpoint=path, resume=True, **settings)
    for (name, a), b in zip(full.network.state_dict().items(), resumed.network.state_dict().values()):
        assert torch.equal(a, b), name
    np.testing.assert_array_equal(resumed.history["objective"], full.history["objective"])


def test_resume_keeps_this_runs_weight_decay_and_implementation():
    """An optimiser state saved with another weight decay (checkpoints before the decay moved into the
    optimiser stored 0) or implementation (foreach, as this backend took on a CPU before) is loaded with this
    run's settings; the momentum comes back."""
    backend = tp.backends.make_backend(tiny_ocp(tiny_net(), decay=0.01), seed=0, batch_size=16,
                                       device=torch.device("cpu"))
    backend.begin_phase(0, backend.methods["sgd"], 10, {**backend.methods["sgd"].defaults, "lr": 0.1})
    backend.evaluate(0, 0)
    backend.update(0)
    state = copy.deepcopy(backend.optimiser.state_dict())
    for group in state["param_groups"]:
        group.update(weight_decay=0.0, foreach=True, fused=None)
    backend.load_optimiser_state(state)
    assert [g["weight_decay"] for g in backend.optimiser.param_groups] == [pytest.approx(0.02)]
    assert [(g["foreach"], g["fused"]) for g in backend.optimiser.param_groups] == [(None, True)]
    momentum = backend.optimiser.state[backend._decayed[0]]
    assert torch.equal(momentum["momentum_buffer"], state["state"][0]["momentum_buffer"])


def test_divergence_rolls_back_to_finite_weights():
    solution = tp.solve_ocp(tiny_ocp(tiny_net()), **{**SOLVE, "options": {"lr": 1e6}})
    assert solution.status == "diverged" and "learning rate" in solution.message
    assert all(torch.isfinite(p).all() for p in solution.network.parameters())


def test_pruned_subresnet_equals_its_exit():
    solution = tp.solve_ocp(tiny_ocp(tiny_net()), test_data=tiny_data(32, seed=1), **SOLVE)
    images = torch.as_tensor(tiny_data(16, seed=2)[0]).float() / 255
    net = solution.network.eval()
    sub = solution.prune(2).eval()
    torch.testing.assert_close(sub(images), net.exit_logits(images)[2])
    layer = solution.turnpike_layer(1e9)
    assert layer == 0


@pytest.mark.parametrize("kwargs, pattern", [
    (dict(method="lbfgs"), "method"),
    (dict(options={"lr": 0.1, "betas": 1}), "betas"),
    (dict(augment=3), "augment"),
    (dict(test_data=(np.zeros((3, 2, 8, 8), np.uint8), np.zeros(3, int))), "test_data"),
])
def test_bad_module_settings_are_clear_errors(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        tp.solve_ocp(tiny_ocp(tiny_net()), **{**SOLVE, **kwargs})


def test_ocp_refuses_a_cost_on_other_logits_and_bad_images():
    net = tiny_net()
    images, labels = tiny_data()
    with pytest.raises(ValueError, match="logits"):
        tp.OCP(net, images, labels, terminal_cost=tp.CrossEntropy(num_classes=3))
    with pytest.raises(ValueError, match="inputs"):
        tp.OCP(net, images[:, 0], labels, terminal_cost=tp.CrossEntropy(num_classes=CLASSES))


def test_flat_system_refuses_module_options():
    ocp = tp.OCP(tp.SingleLayerResNet(state_dim=2, depth=2), np.zeros((4, 2)), np.array([0, 1, 0, 1]),
                 terminal_cost=tp.CrossEntropy(num_classes=2))
    with pytest.raises(ValueError, match="backend options"):
        tp.solve_ocp(ocp, steps=1, progress=False, augment=None)


def test_resnet54_cli_writes_a_run_folder_and_resumes(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["resnet54", "--dataset", "mnist", "--arch", "homogeneous", "--width", "4", "--blocks-per-stage", "1",
            "--epochs", "2", "--milestones", "1", "--train-subset", "64", "--test-subset", "32", "--batch-size",
            "32", "--out", str(out), "--quiet", "--no-plots"]
    assert main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("exit_train_loss", "exit_test_loss", "exit_train_accuracy", "exit_test_accuracy"):
        assert len(metrics[key]) == 4          # N + 1 exits, N = 3 blocks
    for key in ("output_residual_norms", "branch_parameter_norms", "test_accuracy", "parameters",
                "turnpike_layer", "pruned", "epoch_time_s", "images_per_s"):
        assert key in metrics
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [line["epoch"] for line in log] == [1, 2]
    config = json.loads((out / "config.json").read_text())
    assert config["seed"] == 0 and "turnpike" in config["environment"]
    assert main(argv + ["--resume"]) == 0      # a finished run resumes to the same result
    again = json.loads((out / "metrics.json").read_text())
    assert again["exit_test_loss"] == metrics["exit_test_loss"]
    losses = metrics["exit_train_loss"]
    assert metrics["eps"] == pytest.approx(0.05 * (losses[0] - min(losses)))      # the default rule
    early = metrics["early_exit"]                     # τ = 1 never stops early: the full network
    assert early["thresholds"][-1] == 1.0 and early["mean_blocks"][-1] == 3
    assert early["accuracy"][-1] == pytest.approx(metrics["test_accuracy"])
    # the saved network is the evaluated one: its exits reproduce the metrics
    from turnpike.data import load_image_tensors, normalise
    network = tp.experiments.load_resnet54_network(out)
    data = load_image_tensors("mnist").subset(train=64, test=32, seed=0)
    with torch.no_grad():
        logits = network.exit_logits(normalise(data.test_images, data.mean, data.std))
    accuracy = (logits.argmax(-1) == data.test_labels[None]).double().mean(1)
    np.testing.assert_allclose(accuracy.numpy(), metrics["exit_test_accuracy"], atol=1e-12)
    with pytest.raises(ValueError, match="folder: expected a finished `turnpike resnet54` run folder"):
        tp.experiments.load_resnet54_network(tmp_path)
    assert main(["resnet54", "--dataset", "cifar10", "--out", str(tmp_path / "c")]) == 2
    assert "fashion-mnist" in capsys.readouterr().err
    assert main(argv[:-4] + ["--out", str(tmp_path / "e"), "--eps-fraction", "0", "--quiet"]) == 2
    assert "--eps-fraction: expected a number > 0" in capsys.readouterr().err


def test_resnet54_tensorboard_scalars_and_a_clear_error_without_the_package(tmp_path, monkeypatch, capsys):
    import sys
    import types

    written = []

    class RecordingWriter:                     # stands in for torch.utils.tensorboard.SummaryWriter
        def __init__(self, log_dir):
            written.append(("log_dir", log_dir))

        def add_scalar(self, tag, value, step):
            written.append((tag, value, step))

        def flush(self):
            pass

        def close(self):
            written.append(("closed",))

    fake = types.ModuleType("torch.utils.tensorboard")
    fake.SummaryWriter = RecordingWriter
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", fake)
    out = tmp_path / "run"
    argv = ["resnet54", "--dataset", "mnist", "--arch", "homogeneous", "--width", "4", "--blocks-per-stage", "1",
            "--epochs", "2", "--milestones", "1", "--train-subset", "64", "--test-subset", "32", "--batch-size",
            "32", "--out", str(out), "--quiet", "--no-plots", "--tensorboard"]
    assert main(argv) == 0
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [line["lr"] for line in log] == pytest.approx([0.1, 0.01])     # ÷ 10 after epoch 1
    assert written[0] == ("log_dir", str(out / "tensorboard")) and written[-1] == ("closed",)
    for line in log:                           # the same scalars as the JSON lines
        for key in ("objective", "lr", "images_per_s"):
            assert (f"train/{key}", line[key], line["epoch"]) in written
    metrics = json.loads((out / "metrics.json").read_text())
    exits = [(step, value) for tag, value, step in (w for w in written if w[0] == "exits/test_accuracy")]
    assert exits == list(enumerate(metrics["exit_test_accuracy"]))
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)       # not installed
    assert main(argv[:-5] + ["--out", str(tmp_path / "missing"), "--quiet", "--no-plots", "--tensorboard"]) == 2
    assert "pip install tensorboard" in capsys.readouterr().err
    assert not (tmp_path / "missing" / "checkpoint.pt").exists()


def test_reading_the_objective_every_few_steps_changes_nothing_but_when_it_is_read(tmp_path):
    """sync_every=5: J stays on the device between reads; weights and history equal every-step
    reads bit for bit, a killed run resumes to them, and divergence still rolls back to finite weights."""
    each = tp.solve_ocp(tiny_ocp(tiny_net()), **SOLVE)
    seen = []
    lazy = tp.solve_ocp(tiny_ocp(tiny_net()), sync_every=5, callback=lambda s, v, m: seen.append((s, v)), **SOLVE)
    np.testing.assert_array_equal(lazy.history["objective"], each.history["objective"])
    assert seen == list(enumerate(each.history["objective"]))          # every step reaches the callback once
    for (name, a), b in zip(each.network.state_dict().items(), lazy.network.state_dict().values()):
        assert torch.equal(a, b), name
    path = tmp_path / "checkpoint.pt"
    settings = dict(SOLVE, sync_every=5, checkpoint_every=3, checkpoint=path)
    stopped = tp.solve_ocp(tiny_ocp(tiny_net()), callback=lambda s, v, m: s < 10, **settings)
    assert stopped.status == "stopped"
    resumed = tp.solve_ocp(tiny_ocp(tiny_net()), resume=True, **settings)
    for (name, a), b in zip(each.network.state_dict().items(), resumed.network.state_dict().values()):
        assert torch.equal(a, b), name
    # lr 100 explodes at step 19 (J > 10⁶ J_0): read every 5 steps, the steps since the read at 14 are dropped
    exploding = {**SOLVE, "options": {"lr": 100.0}, "steps": 40}
    each = tp.solve_ocp(tiny_ocp(tiny_net()), **exploding)
    lazy = tp.solve_ocp(tiny_ocp(tiny_net()), sync_every=5, **exploding)
    assert each.status == lazy.status == "diverged" and len(each.history["objective"]) == 19
    np.testing.assert_array_equal(lazy.history["objective"], each.history["objective"][:15])
    assert all(torch.isfinite(p).all() for p in lazy.network.parameters())
    with pytest.raises(ValueError, match="sync_every"):
        tp.solve_ocp(tiny_ocp(tiny_net()), sync_every=0, **SOLVE)


def _compiled_like_eager(**extra):
    eager = tp.solve_ocp(tiny_ocp(tiny_net()), **SOLVE)
    compiled = tp.solve_ocp(tiny_ocp(tiny_net()), **SOLVE, **extra)
    np.testing.assert_allclose(compiled.history["objective"], eager.history["objective"], rtol=1e-4)
    for (name, a), b in zip(eager.network.state_dict().items(), compiled.network.state_dict().values()):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=name)


def test_compiled_forward_is_traced_and_trains_like_the_eager_one(monkeypatch):
    """torch.compile of the training forward: dynamo traces it (the eager backend here; inductor in
    the slow test below) and training is unchanged."""
    modes, real_compile = [], torch.compile

    def traced_eagerly(function, *, mode=None):
        modes.append(mode)
        return real_compile(function, backend="eager")
    monkeypatch.setattr(torch, "compile", traced_eagerly)
    torch._dynamo.reset()
    _compiled_like_eager(compile="max-autotune")
    assert modes == ["max-autotune"]
    with pytest.raises(ValueError, match="compile: expected one of"):
        tp.solve_ocp(tiny_ocp(tiny_net()), compile="fast", **SOLVE)


@pytest.mark.slow
def test_inductor_compiled_forward_trains_like_the_eager_one():
    torch._dynamo.reset()
    _compiled_like_eager(compile="default")


def test_throughput_benchmark_runs_its_gpu_paths_on_a_cpu(tmp_path):
    """benchmarks/resnet54_throughput.py with bf16 autocast and channels-last, tiny, on the CPU."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).parents[1] / "benchmarks" / "resnet54_throughput.py"
    done = subprocess.run([sys.executable, str(script), "--blocks", "1", "--width", "4", "--batch", "4,8",
                           "--rounds", "1", "--steps", "1", "--amp"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("device cpu") and "amp True" in lines[0] and "channels_last True" in lines[0]
    assert sum("median" in line for line in lines) == 2 and lines[-1].startswith("best batch size")


def test_time_limit_stops_just_after_a_checkpoint_and_resumes_to_the_same_weights(tmp_path, capsys):
    full = tp.solve_ocp(tiny_ocp(tiny_net()), **SOLVE)
    path = tmp_path / "checkpoint.pt"
    chunks = []
    while not chunks or chunks[-1].status == "time_limit":          # a job with a wall-clock limit, run again
        chunks.append(tp.solve_ocp(tiny_ocp(tiny_net()), checkpoint=path, resume=True, time_limit=0.0, **SOLVE))
        assert len(chunks) < 20
    # time limit 0: every chunk stops at the first checkpoint after the one it resumed from (every 3 steps)
    assert [c.status for c in chunks] == ["time_limit"] * 7 + ["max_steps"]
    assert "resume=True continues" in chunks[0].message and len(chunks[0].history["step"]) == 4
    for (name, a), b in zip(full.network.state_dict().items(), chunks[-1].network.state_dict().values()):
        assert torch.equal(a, b), name
    np.testing.assert_array_equal(chunks[-1].history["objective"], full.history["objective"])
    with pytest.raises(ValueError, match="checkpoint: expected a path with time_limit"):
        tp.solve_ocp(tiny_ocp(tiny_net()), time_limit=1.0, **SOLVE)
    # the CLI: the stopped run's metrics say how far it got, and --resume finishes it
    out = tmp_path / "run"
    argv = ["resnet54", "--dataset", "mnist", "--arch", "homogeneous", "--width", "4", "--blocks-per-stage", "1",
            "--epochs", "2", "--train-subset", "64", "--test-subset", "32", "--batch-size", "32", "--out", str(out),
            "--quiet", "--no-plots"]
    assert main(argv + ["--time-limit", "0"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "time_limit" and metrics["epochs_done"] == 1 and metrics["epochs"] == 2
    assert "--resume continues" in capsys.readouterr().err
    assert main(argv + ["--resume"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "max_steps" and metrics["epochs_done"] == 2
    assert [json.loads(line)["epoch"] for line in (out / "log.jsonl").read_text().splitlines()] == [1, 2]


def test_progress_bar_shows_objective_accuracy_and_samples_per_second(capsys):
    tp.solve_ocp(tiny_ocp(tiny_net()), **{**SOLVE, "steps": 3, "progress": True})
    bar = capsys.readouterr().err
    assert "J=" in bar and "acc=" in bar and "samples/s=" in bar


def _run_data(train, train_labels, test, test_labels):
    """Float images as a training run reads its data (ImageTensors' members; they hold uint8 images only)."""
    from types import SimpleNamespace

    data = SimpleNamespace(train_images=train, train_labels=torch.as_tensor(train_labels), test_images=test,
                           test_labels=torch.as_tensor(test_labels), num_classes=CLASSES, mean=(0.3,), std=(0.3,))
    data.split_size = lambda split: len(getattr(data, f"{split}_labels"))
    data.inputs = lambda split: (getattr(data, f"{split}_images"), getattr(data, f"{split}_labels").numpy())
    return data


def test_finetuning_the_pruned_subresnet_starts_from_its_weights_and_trains_it(tmp_path):
    from turnpike.data import normalise
    from turnpike.experiments._resnet54 import ResNet54Config
    from turnpike.experiments._summary import finetune_pruned

    def enlarged(images):     # 32 × 32: the run's 4-pixel crops keep the bright quadrant in view
        return images.repeat_interleave(4, dim=2).repeat_interleave(4, dim=3)

    (train, train_labels), (test, test_labels) = tiny_data(96), tiny_data(48, seed=1)
    train, test = enlarged(train), enlarged(test)
    data = _run_data(train, train_labels, test, test_labels)
    network = tiny_net("ws")

    def accuracy(net):
        with torch.no_grad():
            logits = net.eval()(normalise(data.test_images, data.mean, data.std))
        return float((logits.argmax(-1) == data.test_labels).double().mean())

    settings = dict(dataset="mnist", arch="homogeneous", width=4, epochs=1, batch_size=32)
    still, _ = finetune_pruned(network.subresnet(2), ResNet54Config(**settings, milestones=(), finetune_epochs=2,
                                                                    lr=1e-9), data)
    for (name, a), b in zip(network.subresnet(2).named_parameters(), still.parameters()):
        torch.testing.assert_close(b, a, atol=1e-7, rtol=0, msg=name)       # it starts from the pruned weights
    # the run's last lr: ÷ 10 after epoch 1 of 2 (a milestone at or past the last epoch would never apply)
    settings["epochs"] = 2
    trained, result = finetune_pruned(network.subresnet(2), ResNet54Config(**settings, milestones=(1,),
                                                                           finetune_epochs=8, lr=0.5), data,
                                      out=tmp_path)
    assert result["lr"] == pytest.approx(0.05) and result["epochs"] == 8
    assert (tmp_path / "finetune_checkpoint.pt").exists() and trained.depth == 2
    assert result["test_accuracy"] == pytest.approx(accuracy(trained))
    moved = max(float((a - b).detach().abs().max()) for a, b in zip(network.subresnet(2).parameters(),
                                                                   trained.parameters()))
    assert moved > 1e-2                                      # and it trains them (solve_ocp's own tests say how well)


def test_finetuning_stops_at_its_time_limit_and_resumes_to_the_same_weights(tmp_path):
    from turnpike.experiments._resnet54 import ResNet54Config
    from turnpike.experiments._summary import finetune_pruned

    (train, train_labels), (test, test_labels) = tiny_data(64), tiny_data(32, seed=1)
    data = _run_data(train, train_labels, test, test_labels)
    config = ResNet54Config(dataset="mnist", arch="homogeneous", width=4, epochs=1, batch_size=32, milestones=(),
                            finetune_epochs=3, lr=0.2)
    whole, whole_result = finetune_pruned(tiny_net("ws").subresnet(2), config, data, out=tmp_path / "whole")
    chunks = []                                   # a job with a wall-clock limit, run again until it finishes
    while not chunks or chunks[-1][1]["status"] == "time_limit":
        chunks.append(finetune_pruned(tiny_net("ws").subresnet(2), config, data, out=tmp_path / "cut",
                                      resume=bool(chunks), time_limit=0.0))
    assert [(r["status"], r["epochs_done"]) for _, r in chunks] == [("time_limit", 1), ("time_limit", 2),
                                                                    ("max_steps", 3)]
    for a, b in zip(whole.parameters(), chunks[-1][0].parameters()):
        torch.testing.assert_close(b, a, atol=0, rtol=0)
    assert chunks[-1][1]["test_accuracy"] == whole_result["test_accuracy"]


def test_run_hands_its_remaining_time_to_the_finetuning_and_reports_its_stop(tmp_path, monkeypatch, capsys):
    from turnpike.experiments import _training

    given = []

    def limited(network, config, data, *, out, resume, progress, time_limit):
        given.append(time_limit)
        return network, {"epochs": 3, "lr": 0.1, "test_accuracy": 0.5, "status": "time_limit", "epochs_done": 1}

    monkeypatch.setattr(_training, "finetune_pruned", limited)
    out = tmp_path / "run"
    assert main(["resnet54", "--dataset", "mnist", "--arch", "homogeneous", "--width", "4", "--blocks-per-stage", "1",
                 "--epochs", "2", "--milestones", "1", "--train-subset", "128", "--test-subset", "32", "--batch-size",
                 "16", "--lr", "0.05", "--eps-fraction", "0.5", "--finetune-epochs", "3", "--time-limit", "1000",
                 "--out", str(out),
                 "--quiet", "--no-plots"]) == 0
    assert len(given) == 1 and 0 < given[0] < 1000          # what the training left of the limit
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "time_limit" and metrics["epochs_done"] == 2      # the training itself finished
    assert "fine-tuning stopped at the time limit after 1 of 3 epochs" in capsys.readouterr().err


def test_resnet54_cli_finetunes_the_pruned_subresnet(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["resnet54", "--dataset", "mnist", "--arch", "homogeneous", "--width", "4", "--blocks-per-stage", "1",
                 "--epochs", "2", "--milestones", "1", "--train-subset", "128", "--test-subset", "32", "--batch-size",
                 "16", "--lr", "0.05", "--eps-fraction", "0.5", "--finetune-epochs", "1", "--out", str(out), "--quiet",
                 "--no-plots"]) == 0
    pruned = json.loads((out / "metrics.json").read_text())["pruned"]
    assert pruned["finetuned"]["epochs"] == 1 and pruned["finetuned"]["lr"] == pytest.approx(0.005)
    assert (out / "finetune_checkpoint.pt").exists() and "after 1 epoch of fine-tuning" in capsys.readouterr().out
    weight = tp.experiments.load_resnet54_network(out).blocks[0].branch[2].weight   # in the memory format it trained in
    assert weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()


def test_resnet54_cli_over_seeds_writes_one_folder_each_and_a_summary(tmp_path, capsys):
    common = ["resnet54", "--dataset", "mnist", "--arch", "homogeneous", "--width", "4", "--blocks-per-stage", "1",
              "--epochs", "2", "--milestones", "1", "--train-subset", "64", "--test-subset", "32", "--batch-size",
              "32", "--quiet", "--no-plots", "--seeds", "3-4"]
    assert main(common + ["--out", str(tmp_path / "all")]) == 0
    rows = json.loads((tmp_path / "all" / "seeds.json").read_text())["runs"]
    assert [r["seed"] for r in rows] == [3, 4]
    for r in rows:
        metrics = json.loads((tmp_path / "all" / f"seed-{r['seed']}" / "metrics.json").read_text())
        assert r["test_accuracy"] == metrics["test_accuracy"]
        assert json.loads((tmp_path / "all" / f"seed-{r['seed']}" / "config.json").read_text())["seed"] == r["seed"]
    assert "2 seeds: test accuracy" in capsys.readouterr().out
    # one time limit for all seeds: the first stops at its first checkpoint and the second never starts
    assert main(common + ["--out", str(tmp_path / "limited"), "--time-limit", "0"]) == 0
    assert (tmp_path / "limited" / "seed-3" / "checkpoint.pt").exists() and not (tmp_path / "limited" / "seed-4").exists()
    assert json.loads((tmp_path / "limited" / "seeds.json").read_text())["runs"][0]["status"] == "time_limit"


def test_a_checkpoints_history_is_read_through_the_backend(tmp_path):
    """ModuleBackend.read_history: the J of every step before the checkpoint; a foreign file is refused by name."""
    path = tmp_path / "checkpoint.pt"
    stopped = tp.solve_ocp(tiny_ocp(tiny_net()), checkpoint=path, callback=lambda s, v, m: s < 7,
                           **{**SOLVE, "checkpoint_every": 3})
    history = ModuleBackend.read_history(path)
    np.testing.assert_array_equal(history["objective"], stopped.history["objective"][:len(history["objective"])])
    assert len(history["objective"]) == 6                     # the checkpoint at step 6 holds steps 0-5
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="checkpoint: expected a turnpike checkpoint of a module system"):
        ModuleBackend.read_history(tmp_path / "other.pt")
