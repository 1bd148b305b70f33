"""``turnpike train`` (issue 22): the user's residual network (built-in, MODULE:FACTORY, FILE.py:FACTORY, generic
form) trained with stage costs through its skip-path exits on a built-in data set or an image folder, with the
run folder, resume, early exit and errors of every training command."""
import json
import textwrap

import numpy as np
import pytest
import torch

import turnpike as tp
from turnpike.cli._main import main
from turnpike.data import load_image_tensors, normalise
from turnpike.experiments import TrainConfig, load_run_network, run_config

TINY = ["--dataset", "mnist", "--model-option", "base=2", "--model-option", "small_stem=true", "--epochs", "2",
        "--milestones", "", "--train-subset", "64", "--test-subset", "32", "--batch-size", "32", "--quiet"]

FACTORY = '''
import torch
from torch import nn
import turnpike as tp


def branch(width):
    return nn.Sequential(nn.BatchNorm2d(width), nn.ReLU(), nn.Conv2d(width, width, 3, padding=1, bias=False))


def build(num_classes, in_channels, width=3, blocks=3, exits="ws"):
    """A pre-activation net given by its parts (not torchvision's layout)."""
    stem = nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
    head = nn.Sequential(nn.BatchNorm2d(width), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(width, num_classes))
    return tp.residual_network(stem=stem, blocks=[(branch(width), None, None) for _ in range(blocks)], head=head,
                               exits=exits)


def no_classes():
    return tp.models.resnet18(num_classes=7, in_channels=1, base=2, small_stem=True)


def not_a_module(num_classes):
    return "a network"
'''


@pytest.fixture()
def factory_file(tmp_path):
    path = tmp_path / "my_nets.py"
    path.write_text(textwrap.dedent(FACTORY))
    return path


def _metrics(out):
    return json.loads((out / "metrics.json").read_text())


def test_a_built_in_model_trains_and_its_folder_serves_early_exit(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *TINY, "--out", str(out), "--no-plots"]) == 0
    metrics = _metrics(out)
    assert metrics["model"] == "resnet18" and metrics["variant"] == "ws" and metrics["depth"] == 8
    assert len(metrics["exit_test_loss"]) == 9 and metrics["status"] == "max_steps"
    config = run_config(out)
    assert isinstance(config, TrainConfig) and config.model_options == {"base": 2, "small_stem": True}
    # the saved network is the evaluated one: its exits reproduce the metrics
    network = load_run_network(out)
    assert isinstance(network, tp.ResidualNetwork) and not network.training
    data = load_image_tensors("mnist").subset(train=64, test=32, seed=0)
    with torch.no_grad():
        logits = network.exit_logits(normalise(data.test_images, data.mean, data.std))
    accuracy = (logits.argmax(-1) == data.test_labels[None]).double().mean(1)
    np.testing.assert_allclose(accuracy.numpy(), metrics["exit_test_accuracy"], atol=1e-12)
    assert main(["early-exit", str(out), "--no-plots", "--thresholds", "0,1"]) == 0
    curve = json.loads((out / "early_exit.json").read_text())
    assert curve["accuracy"][-1] == pytest.approx(metrics["test_accuracy"]) and curve["mean_blocks"][-1] == 8
    assert "mnist resnet18 ws: N = 8" in capsys.readouterr().out


def test_resume_refuses_a_changed_model_option_and_resumes_the_same_settings(tmp_path, capsys):
    split = tmp_path / "split"
    first = [*TINY[:TINY.index("--epochs")], "--epochs", "1", *TINY[TINY.index("--epochs") + 2:]]
    assert main(["train", *first, "--out", str(split), "--no-plots"]) == 0
    before = {p.name: p.read_bytes() for p in split.iterdir()}
    changed = [a if a != "base=2" else "base=3" for a in TINY]
    assert main(["train", *changed, "--out", str(split), "--no-plots", "--resume"]) == 2
    error = capsys.readouterr().err
    assert "model_options" in error and "base" in error and "Traceback" not in error
    assert {p.name: p.read_bytes() for p in split.iterdir()} == before          # nothing touched
    finished = _metrics(split)
    assert main(["train", *first, "--out", str(split), "--no-plots", "--resume"]) == 0   # the same settings: resumed
    assert _metrics(split)["exit_test_loss"] == finished["exit_test_loss"]
    assert main(["train", *first, "--out", str(split), "--no-plots"]) == 2               # neither: refused
    assert "--resume" in capsys.readouterr().err


def test_a_factory_from_a_file_and_from_a_module_gives_the_same_run(tmp_path, factory_file, monkeypatch):
    by_file, by_module = tmp_path / "file", tmp_path / "module"
    common = ["--dataset", "mnist", "--epochs", "1", "--milestones", "", "--train-subset", "64", "--test-subset",
              "32", "--batch-size", "32", "--quiet", "--no-plots", "--model-option", "blocks=2"]
    assert main(["train", "--model", f"{factory_file}:build", *common, "--out", str(by_file)]) == 0
    monkeypatch.chdir(factory_file.parent)          # MODULE:FACTORY is found in the current folder, as python -m
    assert main(["train", "--model", "my_nets:build", *common, "--out", str(by_module)]) == 0
    a, b = _metrics(by_file), _metrics(by_module)
    assert a["depth"] == b["depth"] == 2 and a["exit_test_loss"] == b["exit_test_loss"]
    assert run_config(by_file).model == f"{factory_file.resolve()}:build"      # absolute: rebuilt from anywhere
    monkeypatch.chdir(tmp_path.parent)
    assert load_run_network(by_file).depth == 2


def _pets(folder):
    """Two separable classes of 10 PNG images each, written into ``folder``."""
    Image = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(0)
    for label, name in enumerate(("cats", "dogs")):
        (folder / name).mkdir(parents=True)
        for i in range(10):
            pixels = rng.integers(0, 128, (12, 10, 3), dtype=np.uint8) + 100 * label
            Image.fromarray(pixels.astype(np.uint8)).save(folder / name / f"{i}.png")
    return folder


PETS = ["--test-fraction", "0.2", "--image-size", "8", "--model-option", "base=2", "--model-option",
        "small_stem=true", "--epochs", "3", "--milestones", "", "--batch-size", "8", "--lr", "0.05", "--quiet",
        "--no-plots"]


def test_a_residual_network_factory_serves_every_variant(tmp_path, factory_file):
    # a factory returning a ResidualNetwork with ws exits: a full run re-wraps its parts with full exits, the
    # same run as the factory building full exits itself
    common = ["--model", f"{factory_file}:build", "--dataset", "mnist", "--epochs", "1", "--train-subset", "64",
              "--test-subset", "32", "--batch-size", "32", "--quiet", "--no-plots", "--variant", "full"]
    assert main(["train", *common, "--out", str(tmp_path / "rewrapped")]) == 0
    assert main(["train", *common, "--model-option", "exits=full", "--out", str(tmp_path / "built")]) == 0
    timing = ("train_time_s", "epoch_time_s", "images_per_s", "model_options")
    rewrapped, built = _metrics(tmp_path / "rewrapped"), _metrics(tmp_path / "built")
    assert {k: v for k, v in rewrapped.items() if k not in timing} == {k: v for k, v in built.items() if k not in timing}
    assert load_run_network(tmp_path / "rewrapped").exits == "full"


def test_an_image_folder_trains_with_a_held_out_fraction(tmp_path):
    _pets(tmp_path / "pets")
    out = tmp_path / "run"
    assert main(["train", "--data", str(tmp_path / "pets"), *PETS, "--out", str(out)]) == 0
    metrics = _metrics(out)
    assert metrics["dataset"] == "pets" and len(metrics["exit_test_accuracy"]) == 9
    # an image folder is not flipped unless --flip (a flipped digit, letter or sign is another one)
    assert not run_config(out).flips and not metrics["flips"] and metrics["channels"] == 3


def test_resume_reads_the_same_images_from_a_moved_folder_and_refuses_other_ones(tmp_path, capsys):
    import shutil

    pets = _pets(tmp_path / "pets")
    out = tmp_path / "run"
    assert main(["train", "--data", str(pets), *PETS, "--out", str(out), "--time-limit", "0"]) == 0
    assert _metrics(out)["status"] == "time_limit"                      # stopped after epoch 1 of 3
    moved = shutil.copytree(pets, tmp_path / "elsewhere" / "pets")
    other = shutil.copytree(pets, tmp_path / "other" / "pets")
    (other / "dogs" / "3.png").write_bytes((other / "dogs" / "4.png").read_bytes())   # one image differs
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert main(["train", "--data", str(other), *PETS, "--out", str(out), "--resume"]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("turnpike train: error: --data: expected the images and labels the run in")
    assert "got other data" in error
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before    # nothing touched
    assert main(["train", "--data", str(moved), *PETS, "--out", str(out), "--resume"]) == 0
    assert _metrics(out)["status"] != "time_limit" and _metrics(out)["epochs_done"] == 3


def test_a_streamed_folder_trains_the_same_network_as_one_in_memory_and_resumes(tmp_path, capsys):
    # --stream reads the files batch by batch: the same batches, augmentation and statistics, so the same run
    pets = _pets(tmp_path / "pets")
    memory, streamed = tmp_path / "memory", tmp_path / "streamed"
    crops = ["--crop", "resized"]                        # random-resized crops of the batches, either way
    assert main(["train", "--data", str(pets), *PETS, *crops, "--out", str(memory)]) == 0
    assert main(["train", "--data", str(pets), *PETS, *crops, "--stream", "--out", str(streamed),
                 "--time-limit", "0"]) == 0
    assert _metrics(streamed)["status"] == "time_limit"                 # stopped after epoch 1 of 3
    assert main(["train", "--data", str(pets), *PETS, *crops, "--stream", "--out", str(streamed), "--resume"]) == 0
    timing = ("train_time_s", "epoch_time_s", "images_per_s", "files")
    a, b = _metrics(memory), _metrics(streamed)
    assert {k: v for k, v in a.items() if k not in timing} == {k: v for k, v in b.items() if k not in timing}
    assert run_config(streamed).stream and not run_config(memory).stream and run_config(memory).crop == "resized"
    for name, value in load_run_network(memory).state_dict().items():
        assert torch.equal(value, load_run_network(streamed).state_dict()[name]), name
    capsys.readouterr()
    for run in (memory, streamed):            # early exit reads the streamed run's test files batch by batch
        assert main(["early-exit", str(run), "--thresholds", "0.5,1", "--batch-size", "3", "--no-plots"]) == 0
    curves = [json.loads((run / "early_exit.json").read_text()) for run in (memory, streamed)]
    assert curves[0]["accuracy"] == curves[1]["accuracy"] and curves[0]["mean_blocks"] == curves[1]["mean_blocks"]
    assert curves[0]["accuracy"][-1] == a["test_accuracy"]


def test_training_crops_are_the_configured_batch_operations():
    from turnpike.data import augment, epoch_generator, random_flip, random_resized_crop

    images = torch.randint(0, 256, (16, 3, 12, 12), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    padded = TrainConfig(dataset="cifar10", crop="padded").augment_batch(images, epoch_generator(1, 0))
    assert torch.equal(padded, augment(images, generator=epoch_generator(1, 0)))
    generator = epoch_generator(1, 0)                # one generator draws the boxes, then the flips
    expected = random_flip(random_resized_crop(images, generator=generator), generator)
    resized = TrainConfig(dataset="cifar10", crop="resized").augment_batch(images, epoch_generator(1, 0))
    assert torch.equal(resized, expected) and not torch.equal(resized, padded)
    assert torch.equal(TrainConfig(dataset="mnist", crop="none").augment_batch(images, epoch_generator(1, 0)), images)
    flipped = TrainConfig(dataset="cifar10", crop="none").augment_batch(images, epoch_generator(1, 0))
    assert torch.equal(flipped, random_flip(images, epoch_generator(1, 0)))


@pytest.mark.parametrize("arguments, names", [
    (["--model", "resnet19"], ["--model", "resnet18, resnet34"]),
    (["--model", "no_such_package.nets:build"], ["--model", "no module named 'no_such_package'"]),
    (["--model", "FILE:missing"], ["--model", "FACTORY defined in"]),
    (["--model", "FILE:not_a_module"], ["--model", "returned a str"]),
    (["--model", "FILE:no_classes"], ["--model", "10 outputs"]),
    (["--model-option", "depth=3"], ["--model-option", "depth", "small_stem"]),
    (["--model-option", "3d=1"], ["--model-option", "KEY=VALUE"]),
    (["--dataset", "folder"], ["--data", "available here: --dataset mnist"]),
    (["--data", "DIR/none", "--dataset", "folder"], ["none"]),
    (["--test-fraction", "1"], ["--test-fraction", "< 1"]),
    (["--image-channels", "2"], ["--image-channels"]),
    (["--subresnet", "2"], ["--variant", "'standard' with subresnet"]),
    (["--stream"], ["--stream", "built-in data set 'mnist'"]),
    (["--crop", "big"], ["--crop", "invalid choice"]),
    (["--weights", "DIR/none.pth"], ["--weights", "a file of saved weights", "none.pth"]),
    (["--subresnet", "9", "--variant", "standard", "--model-option", "base=2"], ["--subresnet", "at most 8 blocks"]),
])
def test_bad_train_arguments_are_one_line_errors_naming_the_flag(arguments, names, tmp_path, factory_file, capsys):
    arguments = [a.replace("FILE", str(factory_file)).replace("DIR", str(tmp_path)) for a in arguments]
    base = ["--dataset", "mnist", "--epochs", "1", "--train-subset", "32", "--test-subset", "16", "--quiet",
            "--no-plots"] if "--dataset" not in arguments else ["--epochs", "1", "--quiet", "--no-plots"]
    out = tmp_path / "run"
    assert main(["train", *base, *arguments, "--out", str(out)]) == 2
    error = capsys.readouterr().err
    last = error.strip().splitlines()[-1]           # argparse's own errors come after its usage lines
    assert last.startswith("turnpike train: error: ") and "Traceback" not in error
    for name in names:
        assert name in last
    assert not out.exists()                         # refused before training: no empty run folder left behind


def test_train_help_shows_every_default(capsys):
    assert main(["train", "--help"]) == 0
    text = capsys.readouterr().out
    for default in ("default: resnet18", "default: ws", "default: folder", "default: 165", "default: 0.02"):
        assert default in " ".join(text.split())


def test_the_demonstration_script_runs_end_to_end_at_a_tiny_size(tmp_path, monkeypatch, capsys):
    """experiments/your_network.py (docs/your-network.md's table) on 64 MNIST images: both variants per seed, the
    table, the summary and the figure; a second γ with --resume reuses the standard runs."""
    import runpy
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "experiments" / "your_network.py"
    out = tmp_path / "demo"
    tiny = ["--dataset", "mnist", "--base", "2", "--epochs", "1", "--milestones", "", "--train-subset", "64",
            "--test-subset", "32", "--seeds", "1,2", "--out", str(out)]
    monkeypatch.setattr(sys, "argv", [str(script), *tiny])
    runpy.run_path(str(script), run_name="__main__")
    summary = json.loads((out / "summary-gamma0.02.json").read_text())
    assert [row["seed"] for row in summary["rows"]] == [1, 2] and (out / "your_network-gamma0.02.png").is_file()
    assert "standard training: test accuracy" in capsys.readouterr().out
    standard = (out / "standard" / "seed-1" / "metrics.json").read_bytes()
    monkeypatch.setattr(sys, "argv", [str(script), *tiny, "--gamma", "0.3", "--resume"])
    runpy.run_path(str(script), run_name="__main__")
    assert (out / "ws-gamma0.3" / "seed-2" / "metrics.json").is_file()
    assert (out / "standard" / "seed-1" / "metrics.json").read_bytes() == standard      # reused, not retrained
    assert run_config(out / "ws-gamma0.3" / "seed-1").gamma == 0.3


def test_a_run_folder_serves_prune_and_early_exit_from_elsewhere_and_with_moved_data(tmp_path, monkeypatch, capsys):
    import shutil

    monkeypatch.chdir(tmp_path)
    _pets(tmp_path / "pets")
    assert main(["train", "--data", "pets", *PETS, "--out", "run"]) == 0            # paths as typed: relative
    assert json.loads((tmp_path / "run" / "config.json").read_text())["config"]["data_dir"] == str(tmp_path / "pets")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)                                                  # another working directory
    assert main(["prune", "../run", "--depth", "2"]) == 0
    summary = json.loads((tmp_path / "run" / "pruned-2.json").read_text())
    assert summary["file"] == str((tmp_path / "run" / "pruned-2.pt2").resolve())
    assert summary["run"] == str((tmp_path / "run").resolve())
    moved = shutil.move(tmp_path / "pets", tmp_path / "archive")
    assert main(["early-exit", "../run", "--no-plots", "--thresholds", "0.5"]) == 2
    assert "pets" in capsys.readouterr().err.strip().splitlines()[-1]             # the stored folder is gone
    assert main(["early-exit", "../run", "--no-plots", "--thresholds", "0.5", "--data", str(moved)]) == 0
    other = shutil.copytree(moved, tmp_path / "other")
    (other / "dogs" / "3.png").write_bytes((other / "dogs" / "4.png").read_bytes())   # one image differs
    capsys.readouterr()
    assert main(["prune", "../run", "--depth", "2", "--data", str(other)]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("turnpike prune: error: --data: expected the images and labels the run in")


def test_a_grey_folder_trains_on_one_channel_and_flip_is_asked_for(tmp_path, capsys):
    Image = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(1)
    for label, name in enumerate(("zeros", "ones")):
        (tmp_path / "digits" / name).mkdir(parents=True)
        for i in range(10):
            pixels = rng.integers(0, 128, (12, 10), dtype=np.uint8) + 100 * label
            Image.fromarray(pixels, mode="L").save(tmp_path / "digits" / name / f"{i}.png")
    assert main(["train", "--data", str(tmp_path / "digits"), *PETS, "--epochs", "1", "--flip",
                 "--out", str(tmp_path / "run")]) == 0
    metrics = _metrics(tmp_path / "run")
    assert metrics["channels"] == 1 and metrics["flips"]
    assert "images: 1 channel (grey), random flips in training" in capsys.readouterr().out
    assert load_run_network(tmp_path / "run").input_shape[0] == 1
    _pets(tmp_path / "pets")                                  # colour images, read as grey when asked for
    assert main(["train", "--data", str(tmp_path / "pets"), *PETS, "--epochs", "1", "--image-channels", "1",
                 "--out", str(tmp_path / "grey-pets")]) == 0
    assert _metrics(tmp_path / "grey-pets")["channels"] == 1


def test_cosine_and_warm_up_schedules_from_the_command_line(tmp_path, capsys):
    """--lr-schedule cosine --warmup-epochs 1: epoch 1 ends at the top of the warm-up, then the lr follows the
    cosine to the last epoch (the log's lr is each epoch's last step's); milestones with cosine are refused."""
    import math

    _pets(tmp_path / "pets")                       # 16 training images, batch 8: 2 steps an epoch
    argv = ["train", "--data", str(tmp_path / "pets"), *PETS, "--epochs", "4", "--lr-schedule", "cosine",
            "--warmup-epochs", "1"]
    assert main([*argv, "--out", str(tmp_path / "run")]) == 0
    lrs = [json.loads(line)["lr"] for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    steps, warmup = 8, 2
    expected = [0.05 * 2 / warmup] + [0.05 * 0.5 * (1 + math.cos(math.pi * (2 * e - 1 - warmup) / (steps - warmup)))
                                      for e in (2, 3, 4)]
    assert lrs == pytest.approx(expected)
    assert run_config(tmp_path / "run").lr_schedule == "cosine"
    capsys.readouterr()
    assert main([*argv[:-4], "--lr-schedule", "cosine", "--milestones", "2", "--out", str(tmp_path / "bad")]) == 2
    assert "--milestones: expected none with --lr-schedule cosine" in capsys.readouterr().err
    assert main([*argv[:-2], "--warmup-epochs", "3", "--epochs", "3", "--out", str(tmp_path / "bad")]) == 2
    assert "--warmup-epochs: expected an integer <= 2" in capsys.readouterr().err


def test_every_epoch_logs_and_prints_the_outputs_test_loss_and_accuracy(tmp_path, capsys):
    from turnpike.experiments._epoch_log import output_test_metrics

    _pets(tmp_path / "pets")
    argv = ["train", "--data", str(tmp_path / "pets"), *PETS, "--out", str(tmp_path / "run")]
    assert main([a for a in argv if a != "--quiet"]) == 0
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch ")]
    lines = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert len(printed) == len(lines) == 3 and printed[2].startswith("epoch 3/3: J ")
    assert f"test accuracy {lines[2]['test_accuracy']:.4f}" in printed[2]
    assert all(0 <= line["test_accuracy"] <= 1 and line["test_loss"] > 0 for line in lines)
    # the measure against a direct computation; the module's mode, parameters and statistics stay as they were
    net = load_run_network(tmp_path / "run").train()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    images = torch.randn(5, 3, 8, 8).contiguous(memory_format=torch.channels_last)
    labels = torch.tensor([0, 1, 1, 0, 1])
    got = output_test_metrics([(images[:3], labels[:3]), (images[3:], labels[3:])], tp.CrossEntropy(num_classes=2),
                              limit=4)(net)
    assert net.training and all(torch.equal(v, net.state_dict()[k]) for k, v in state.items())
    with torch.no_grad():
        logits = net.eval()(images[:4])
    assert got["test_loss"] == pytest.approx(float(torch.nn.functional.cross_entropy(logits, labels[:4])), rel=1e-6)
    assert got["test_accuracy"] == float((logits.argmax(-1) == labels[:4]).float().mean())
