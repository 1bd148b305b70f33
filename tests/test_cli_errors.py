"""One error path for the command line: every expected failure is one line
``turnpike CMD: error: ARGUMENT-OR-PATH: expected ..., got ...`` and exit status 2, names the
argument or path the user typed, prints no traceback and changes no file of an existing run folder."""
import errno
import json
import os
import stat

import pytest
import torch

from turnpike.cli import main

RESNET = ["--dataset", "mnist", "--arch", "homogeneous", "--width", "4", "--blocks-per-stage", "1", "--epochs", "1",
          "--batch-size", "32", "--train-subset", "64", "--test-subset", "32", "--milestones", "", "--no-plots",
          "--quiet"]
SPIRALS = ["--depth", "4", "--method", "lbfgs", "--steps", "5", "--no-baseline", "--quiet"]
NODE = ["--horizons", "1", "--steps", "2,2", "--check-method", "none", "--no-plots", "--quiet"]
MNIST = ["--subset", "64", "--epochs", "1", "--depth", "2", "--baselines", "", "--no-plots", "--quiet"]
HESSIAN = ["--depths", "2", "--runs", "1", "--train-runs", "1", "--steps", "5", "--learning-rates", "0.1",
           "--path-depth", "2", "--families", "xavier", "--no-plots"]


def _files(folder):
    """{relative path: bytes} of every file under ``folder``: its whole state."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Finished run folders of several commands, a plain file and a folder, shared by the table."""
    root = tmp_path_factory.mktemp("runs")
    assert main(["resnet54", *RESNET, "--variant", "ws", "--out", str(root / "resnet")]) == 0
    assert main(["spirals", *SPIRALS, "--no-plots", "--out", str(root / "spirals")]) == 0
    assert main(["hessian", *HESSIAN, "--out", str(root / "hessian")]) == 0
    (root / "file.txt").write_text("not a folder\n")
    (root / "models.py").write_text(MODELS)
    (root / "folder").mkdir()
    return root


MODELS = """
import torch
from torch import nn


class Pair(nn.Module):
    def __init__(self, num_classes):
        super().__init__()
        self.fc = nn.Linear(28 * 28, num_classes)

    def forward(self, x):
        logits = self.fc(x.flatten(1))
        return logits, x


def pair(num_classes=10):
    return Pair(num_classes)


def broken(num_classes=10):
    raise RuntimeError("out of coffee")


class PairHead(nn.Module):
    def __init__(self, num_classes):
        super().__init__()
        self.fc = nn.Linear(4, num_classes)

    def forward(self, x):
        return self.fc(x.mean((2, 3))), x


def residual_pair(num_classes=10, in_channels=1):
    import turnpike
    blocks = [turnpike.ResidualBlock(nn.Sequential(nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1)))]
    return turnpike.residual_network(stem=nn.Conv2d(in_channels, 4, 3, padding=1), blocks=blocks,
                                     head=PairHead(num_classes))


def sized(width: int = 4, num_classes=10):
    return nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, width * 2), nn.Linear(width * 2, num_classes))
"""

# (id, argv with {resnet}, {spirals}, {hessian}, {file}, {folder}, {new} for a fresh folder, text the error names)
CASES = [
    # spirals
    ("spirals-depth-0", ["spirals", *SPIRALS, "--depth", "0", "--out", "{new}"], "--depth"),
    ("spirals-depth-text", ["spirals", "--depth", "x", "--out", "{new}"], "--depth"),
    ("spirals-method-unknown", ["spirals", *SPIRALS, "--method", "newton", "--out", "{new}"], "--method"),
    ("spirals-method-empty", ["spirals", "--method", "", "--out", "{new}"], "--method"),
    ("spirals-turns-negative", ["spirals", "--turns", "-1", "--out", "{new}"], "--turns"),
    ("spirals-seeds-reversed", ["spirals", "--seeds", "5-1", "--out", "{new}"], "--seeds"),
    ("spirals-seeds-empty", ["spirals", "--seeds", "", "--out", "{new}"], "--seeds"),
    ("spirals-seeds-text", ["spirals", "--seeds", "a", "--out", "{new}"], "--seeds"),
    ("spirals-seeds-gap", ["spirals", "--seeds", "1,,2", "--out", "{new}"], "--seeds"),
    ("spirals-steps-0", ["spirals", *SPIRALS, "--steps", "0", "--out", "{new}"], "--steps"),
    ("spirals-lr-negative", ["spirals", *SPIRALS, "--method", "adam", "--lr", "-1", "--out", "{new}"], "lr"),
    ("spirals-out-file", ["spirals", *SPIRALS, "--out", "{file}"], "--out"),
    ("spirals-out-holds-run", ["spirals", *SPIRALS, "--out", "{spirals}"], "--overwrite"),
    ("spirals-out-unwritable", ["spirals", *SPIRALS, "--out", "/proc/turnpike-test"], "--out"),
    ("spirals-out-holds-other-run", ["spirals", *SPIRALS, "--out", "{resnet}"], "resnet54 run"),
    # node-spirals
    ("node-horizons-empty", ["node-spirals", "--horizons", "", "--out", "{new}"], "--horizons"),
    ("node-horizons-0", ["node-spirals", *NODE, "--horizons", "0", "--out", "{new}"], "--horizons"),
    ("node-interval-0", ["node-spirals", "--interval", "0", "--out", "{new}"], "--interval"),
    ("node-ode-method", ["node-spirals", *NODE, "--ode-method", "rk99", "--out", "{new}"], "--ode-method"),
    ("node-substeps-0", ["node-spirals", *NODE, "--substeps", "0", "--out", "{new}"], "--substeps"),
    ("node-rtol-negative", ["node-spirals", "--rtol", "-1", "--out", "{new}"], "--rtol"),
    ("node-starts-0", ["node-spirals", *NODE, "--starts", "0", "--out", "{new}"], "--starts"),
    ("node-parametrisation", ["node-spirals", *NODE, "--parametrisation", "cubic", "--out", "{new}"],
     "--parametrisation"),
    ("node-check-method", ["node-spirals", *NODE, "--check-method", "rk99", "--out", "{new}"], "--check-method"),
    ("node-warm-method", ["node-spirals", *NODE, "--warm-method", "newton", "--out", "{new}"], "--warm-method"),
    ("node-out-file", ["node-spirals", *NODE, "--out", "{file}"], "--out"),
    ("node-out-holds-run", ["node-spirals", *NODE, "--out", "{spirals}"], "--out"),
    # mnist
    ("mnist-depth-0", ["mnist", *MNIST, "--depth", "0", "--out", "{new}"], "--depth"),
    ("mnist-epochs-0", ["mnist", *MNIST, "--epochs", "0", "--out", "{new}"], "--epochs"),
    ("mnist-batch-0", ["mnist", *MNIST, "--batch-size", "0", "--out", "{new}"], "--batch-size"),
    ("mnist-baselines-text", ["mnist", *MNIST, "--baselines", "a", "--out", "{new}"], "--baselines"),
    ("mnist-baselines-0", ["mnist", *MNIST, "--baselines", "0", "--out", "{new}"], "--baselines"),
    ("mnist-subset-5", ["mnist", *MNIST, "--subset", "5", "--out", "{new}"], "--subset"),
    ("mnist-dataset", ["mnist", "--dataset", "cifar", "--out", "{new}"], "--dataset"),
    ("mnist-lr-0", ["mnist", *MNIST, "--lr", "0", "--out", "{new}"], "lr"),
    ("mnist-device", ["mnist", *MNIST, "--device", "tpu", "--out", "{new}"], "--device"),
    ("mnist-data-missing", ["mnist", *MNIST, "--data", "{new}/nothing", "--out", "{new}"], "nothing"),
    ("mnist-resume-foreign", ["mnist", *MNIST, "--resume", "--out", "{resnet}"], "resnet54"),
    ("mnist-out-holds-run", ["mnist", *MNIST, "--out", "{hessian}"], "--out"),
    ("mnist-resume-overwrite", ["mnist", *MNIST, "--resume", "--overwrite", "--out", "{new}"], "--overwrite"),
    # certify
    ("certify-missing", ["certify", "{new}/nothing"], "RUN_DIR"),
    ("certify-foreign", ["certify", "{resnet}"], "RUN_DIR"),
    ("certify-eps-negative", ["certify", "{spirals}", "--eps", "-1"], "--eps"),
    ("certify-eps-text", ["certify", "{spirals}", "--eps", "a"], "--eps"),
    ("certify-json-folder", ["certify", "{spirals}", "--json", "{folder}"], "--json"),
    ("certify-json-unwritable", ["certify", "{spirals}", "--json", "/proc/turnpike-test/c.json"], "--json"),
    # resnet54
    ("resnet-variant", ["resnet54", *RESNET, "--variant", "deep", "--out", "{new}"], "--variant"),
    ("resnet-subresnet-deep", ["resnet54", *RESNET, "--variant", "standard", "--subresnet", "99", "--out", "{new}"],
     "--subresnet"),
    ("resnet-subresnet-ws", ["resnet54", *RESNET, "--variant", "ws", "--subresnet", "1", "--out", "{new}"],
     "--variant"),
    ("resnet-width-0", ["resnet54", *RESNET, "--width", "0", "--out", "{new}"], "--width"),
    ("resnet-blocks-0", ["resnet54", *RESNET, "--blocks-per-stage", "0", "--out", "{new}"], "--blocks-per-stage"),
    ("resnet-epochs-0", ["resnet54", *RESNET, "--epochs", "0", "--out", "{new}"], "--epochs"),
    ("resnet-milestones-text", ["resnet54", *RESNET, "--milestones", "a", "--out", "{new}"], "--milestones"),
    ("resnet-milestones-reversed", ["resnet54", *RESNET, "--milestones", "3-1", "--out", "{new}"], "--milestones"),
    ("resnet-milestones-decreasing", ["resnet54", *RESNET, "--epochs", "4", "--milestones", "3,1", "--out", "{new}"],
     "milestones"),
    ("resnet-lr-0", ["resnet54", *RESNET, "--lr", "0", "--out", "{new}"], "--lr"),
    ("resnet-weight-decay", ["resnet54", *RESNET, "--weight-decay", "-1", "--out", "{new}"], "--weight-decay"),
    ("resnet-train-subset-0", ["resnet54", *RESNET, "--train-subset", "0", "--out", "{new}"], "--train-subset"),
    ("resnet-batch-0", ["resnet54", *RESNET, "--batch-size", "0", "--out", "{new}"], "--batch-size"),
    ("resnet-gamma-0", ["resnet54", *RESNET, "--variant", "ws", "--gamma", "0", "--out", "{new}"], "--gamma"),
    ("resnet-eps-fraction", ["resnet54", *RESNET, "--eps-fraction", "0", "--out", "{new}"], "--eps-fraction"),
    ("resnet-finetune", ["resnet54", *RESNET, "--finetune-epochs", "-1", "--out", "{new}"], "--finetune-epochs"),
    ("resnet-compile", ["resnet54", *RESNET, "--compile", "fast", "--out", "{new}"], "--compile"),
    ("resnet-device", ["resnet54", *RESNET, "--device", "tpu", "--out", "{new}"], "--device"),
    ("resnet-time-limit", ["resnet54", *RESNET, "--time-limit", "-5", "--out", "{new}"], "--time-limit"),
    ("resnet-pg-timeout", ["resnet54", *RESNET, "--process-group-timeout", "0", "--out", "{new}"],
     "--process-group-timeout"),
    ("resnet-sync-bn-alone", ["resnet54", *RESNET, "--sync-batchnorm", "--out", "{new}"], "--sync-batchnorm"),
    ("resnet-seeds-reversed", ["resnet54", *RESNET, "--seeds", "5-1", "--out", "{new}"], "--seeds"),
    ("resnet-out-file", ["resnet54", *RESNET, "--out", "{file}"], "--out"),
    ("resnet-out-unwritable", ["resnet54", *RESNET, "--out", "/proc/turnpike-test"], "--out"),
    ("resnet-out-holds-run", ["resnet54", *RESNET, "--variant", "standard", "--out", "{resnet}"], "--out"),
    ("resnet-resume-lr", ["resnet54", *RESNET, "--variant", "ws", "--lr", "0.05", "--resume", "--out", "{resnet}"],
     "lr: 0.1 there, 0.05 now"),
    ("resnet-resume-gamma", ["resnet54", *RESNET, "--variant", "ws", "--gamma", "0.5", "--resume", "--out",
                             "{resnet}"], "gamma: 0.02 there, 0.5 now"),
    ("resnet-resume-variant", ["resnet54", *RESNET, "--variant", "full", "--resume", "--out", "{resnet}"],
     "variant: 'ws' there, 'full' now"),
    ("resnet-resume-overwrite", ["resnet54", *RESNET, "--resume", "--overwrite", "--out", "{resnet}"], "--overwrite"),
    ("resnet-resume-foreign", ["resnet54", *RESNET, "--resume", "--out", "{spirals}"], "spirals"),
    ("resnet-data-missing", ["resnet54", *RESNET, "--dataset", "cifar10", "--data", "{new}/cifar", "--out", "{new}"],
     "--dataset mnist (the embedded"),
    ("resnet-arch", ["resnet54", *RESNET, "--arch", "wide", "--out", "{new}"], "--arch"),
    # resnet54-study
    ("study-variants-empty", ["resnet54-study", *RESNET, "--variants", "", "--out", "{new}"], "--variants"),
    ("study-variants-unknown", ["resnet54-study", *RESNET, "--variants", "deep", "--out", "{new}"], "variants"),
    ("study-subresnets-empty", ["resnet54-study", *RESNET, "--subresnets", "", "--out", "{new}"], "--subresnets"),
    ("study-subresnets-deep", ["resnet54-study", *RESNET, "--subresnets", "99", "--out", "{new}"], "subresnet"),
    ("study-seeds-text", ["resnet54-study", *RESNET, "--seeds", "x", "--out", "{new}"], "--seeds"),
    ("study-out-file", ["resnet54-study", *RESNET, "--subresnets", "1", "--out", "{file}/sub"], "file.txt"),
    # hessian
    ("hessian-depths-odd", ["hessian", *HESSIAN, "--depths", "3", "--out", "{new}"], "--depths"),
    ("hessian-path-depth-odd", ["hessian", *HESSIAN, "--path-depth", "3", "--out", "{new}"], "--path-depth"),
    ("hessian-depths-empty", ["hessian", *HESSIAN, "--depths", "", "--out", "{new}"], "--depths"),
    ("hessian-depths-text", ["hessian", *HESSIAN, "--depths", "a", "--out", "{new}"], "--depths"),
    ("hessian-families", ["hessian", *HESSIAN, "--families", "resnet", "--out", "{new}"], "--families"),
    ("hessian-lr-negative", ["hessian", *HESSIAN, "--learning-rates", "-1", "--out", "{new}"], "--learning-rates"),
    ("hessian-lr-empty", ["hessian", *HESSIAN, "--learning-rates", "", "--out", "{new}"], "--learning-rates"),
    ("hessian-runs-0", ["hessian", *HESSIAN, "--runs", "0", "--out", "{new}"], "--runs"),
    ("hessian-threads-0", ["hessian", *HESSIAN, "--threads", "0", "--out", "{new}"], "--threads"),
    ("hessian-steps-0", ["hessian", *HESSIAN, "--steps", "0", "--out", "{new}"], "--steps"),
    ("hessian-dataset", ["hessian", *HESSIAN, "--dataset", "cifar10", "--out", "{new}"], "--dataset"),
    ("hessian-out-holds-run", ["hessian", *HESSIAN, "--out", "{hessian}"], "--out"),
    ("hessian-resume-seed", ["hessian", *HESSIAN, "--seed", "1", "--resume", "--out", "{hessian}"],
     "seed: 0 there, 1 now"),
    ("hessian-resume-foreign", ["hessian", *HESSIAN, "--resume", "--out", "{spirals}"], "spirals"),
    ("hessian-out-file", ["hessian", *HESSIAN, "--out", "{file}"], "--out"),
    # train (the run command of any residual network; its own cases are in test_train_command.py)
    ("train-model-unknown", ["train", "--dataset", "mnist", "--model", "resnet", "--out", "{new}"], "--model"),
    ("train-model-empty", ["train", "--dataset", "mnist", "--model", "", "--out", "{new}"], "--model"),
    ("train-model-no-factory", ["train", "--dataset", "mnist", "--model", "turnpike.models:", "--out", "{new}"],
     "--model"),
    ("train-model-not-callable", ["train", "--dataset", "mnist", "--model", "turnpike.models:BUILT_IN_MODELS",
                                  "--out", "{new}"], "--model"),
    ("train-model-option-unknown", ["train", "--dataset", "mnist", "--model-option", "blocks=2", "--out", "{new}"],
     "--model-option"),
    ("train-model-returns-a-tuple", ["train", "--dataset", "mnist", "--model", "{models}:pair", "--out", "{new}"],
     "--model"),
    ("train-residual-model-returns-a-tuple", ["train", "--dataset", "mnist", "--model", "{models}:residual_pair",
                                              "--out", "{new}"], "'tuple' object"),
    ("train-model-factory-raises", ["train", "--dataset", "mnist", "--model", "{models}:broken", "--out", "{new}"],
     "out of coffee"),
    ("train-model-option-not-json", ["train", "--dataset", "mnist", "--model", "{models}:sized", "--model-option",
                                     "width=wide", "--out", "{new}"], "width='wide'"),
    ("train-weights-new-without-weights", ["train", "--dataset", "mnist", "--weights-new", "fc", "--out", "{new}"],
     "--weights-new"),
    ("train-option-typo", ["train", "--dataset", "mnist", "--gama", "0.1", "--out", "{new}"], "did you mean --gamma"),
    ("train-option-abbreviated", ["train", "--dataset", "mnist", "--epoch", "2", "--out", "{new}"],
     "did you mean --epochs"),
    ("train-milestone-beyond-epochs", ["train", "--dataset", "mnist", "--epochs", "2", "--milestones", "5",
                                       "--out", "{new}"], "--milestones"),
    ("train-milestones-decreasing", ["train", "--dataset", "mnist", "--milestones", "2,1", "--out", "{new}"],
     "--milestones"),
    ("resnet54-option-typo", ["resnet54", *RESNET, "--gama", "0.1", "--out", "{new}"], "did you mean --gamma"),
    ("train-no-folder", ["train", "--out", "{new}"], "--data"),
    ("train-folder-missing", ["train", "--data", "{new}/pets", "--out", "{new}"], "pets"),
    ("train-epochs-0", ["train", "--dataset", "mnist", "--epochs", "0", "--out", "{new}"], "--epochs"),
    ("train-image-size-0", ["train", "--dataset", "mnist", "--image-size", "0", "--out", "{new}"], "--image-size"),
    ("train-out-holds-other-run", ["train", "--dataset", "mnist", "--out", "{resnet}"], "resnet54 run"),
    ("train-study-subresnets-deep", ["train-study", "--dataset", "mnist", "--subresnets", "8", "--model-option",
                                     "base=2", "--out", "{new}"], "N = 8"),
    ("train-study-no-folder", ["train-study", "--out", "{new}"], "--data"),
    ("train-study-model-unknown", ["train-study", "--dataset", "mnist", "--model", "resnet", "--out", "{new}"],
     "--model"),
    ("train-resume-other-run", ["train", "--dataset", "mnist", "--resume", "--out", "{resnet}"], "resnet54"),
    ("train-out-file", ["train", "--dataset", "mnist", "--out", "{file}"], "--out"),
    # depth-bounds
    ("bounds-missing", ["depth-bounds", "{new}/nothing", "{resnet}"], "NETWORK"),
    ("bounds-foreign-network", ["depth-bounds", "{spirals}", "{resnet}"], "NETWORK"),
    ("bounds-foreign-sub", ["depth-bounds", "{resnet}", "{hessian}"], "hessian"),
    ("bounds-out-folder", ["depth-bounds", "{resnet}", "{resnet}", "--out", "{folder}"], "SUBRESNETS"),
    # early-exit
    ("prune-missing", ["prune", "{new}/nothing"], "RUN: expected a finished"),
    ("prune-foreign", ["prune", "{spirals}"], "RUN"),
    ("prune-depth-deep", ["prune", "{resnet}", "--depth", "4"], "--depth: expected an integer <= 3"),
    ("prune-depth-negative", ["prune", "{resnet}", "--depth", "-1"], "--depth"),
    ("prune-out-folder", ["prune", "{resnet}", "--depth", "1", "--out", "{folder}"], "folder"),
    ("exit-missing", ["early-exit", "{new}/nothing", "--no-plots"], "nothing/metrics.json"),
    ("exit-foreign", ["early-exit", "{spirals}", "--no-plots"], "RUN"),
    ("exit-thresholds-empty", ["early-exit", "{resnet}", "--thresholds", "", "--no-plots"], "--thresholds"),
    ("exit-thresholds-2", ["early-exit", "{resnet}", "--thresholds", "2", "--no-plots"], "--thresholds"),
    ("exit-thresholds-text", ["early-exit", "{resnet}", "--thresholds", "high", "--no-plots"], "--thresholds"),
    ("exit-batch-0", ["early-exit", "{resnet}", "--batch-size", "0", "--no-plots"], "--batch-size"),
    ("exit-device", ["early-exit", "{resnet}", "--device", "tpu", "--no-plots"], "--device"),
    ("exit-compare-missing", ["early-exit", "{resnet}", "--compare", "{new}/other", "--no-plots"], "other"),
    # the command itself
    ("no-such-command", ["deepen"], "deepen"),
]


def _argv(argv, runs, new):
    places = {"resnet": runs / "resnet", "spirals": runs / "spirals", "hessian": runs / "hessian",
              "models": runs / "models.py",
              "file": runs / "file.txt", "folder": runs / "folder", "new": new}
    return [part.format(**places) for part in argv]


@pytest.mark.parametrize("argv, names", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_bad_input_is_one_line_naming_the_argument(runs, tmp_path, capsys, argv, names):
    before = _files(runs)
    code = main(_argv(argv, runs, tmp_path / "new"))
    error = capsys.readouterr().err
    assert code == 2, error
    assert "Traceback" not in error
    last = error.strip().splitlines()[-1]
    assert last.startswith(f"turnpike {argv[0]}: error: " if argv[0] != "deepen" else "turnpike: error: "), error
    assert "expected" in last or "invalid choice" in last, last
    assert names.format(new=tmp_path / "new") in last, last
    assert _files(runs) == before                  # no file of an existing run folder changed
    new = tmp_path / "new"
    assert not new.exists() or not any(new.glob("config.json"))   # nothing written before every check


def test_the_table_is_large_and_covers_every_command():
    from turnpike.cli._main import COMMANDS

    assert len(CASES) >= 100
    assert {case[1][0] for case in CASES} >= set(COMMANDS)


def test_a_foreign_or_corrupt_run_folder_is_named(runs, tmp_path, capsys):
    """A truncated network.pt, a corrupt config.json, a missing metrics.json: the file is named."""
    import shutil

    for name, damage in (("network.pt", lambda p: p.write_bytes(p.read_bytes()[:100])),
                         ("config.json", lambda p: p.write_text("{not json")),
                         ("metrics.json", lambda p: p.unlink())):
        folder = shutil.copytree(runs / "resnet", tmp_path / name)
        damage(folder / name)
        assert main(["early-exit", str(folder), "--no-plots"]) == 2
        error = capsys.readouterr().err
        assert error.count("\n") == 1 and name in error, error


def test_full_disk_fails_cleanly_and_keeps_the_old_file(runs, tmp_path, capsys, monkeypatch):
    """ENOSPC while writing: exit 2 naming the file, the previous file intact, no temporary file left."""
    import shutil

    from turnpike import _runs

    folder = shutil.copytree(runs / "spirals", tmp_path / "spirals")
    assert main(["certify", str(folder)]) == 0
    before = (folder / "certificate.json").read_bytes()
    capsys.readouterr()

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(_runs.json, "dump", full)
    assert main(["certify", str(folder)]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("turnpike certify: error: ") and "certificate.json" in error and "space" in error
    assert (folder / "certificate.json").read_bytes() == before
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]


def test_resume_without_a_run_says_it_starts_one(tmp_path, capsys):
    assert main(["hessian", *HESSIAN, "--resume", "--out", str(tmp_path / "h")]) == 0
    assert f"--resume: no run in {tmp_path / 'h'} yet; starting a new one" in capsys.readouterr().err


def test_overwrite_removes_the_old_run_files_and_the_manifest_lists_the_new_ones(tmp_path):
    out = tmp_path / "run"
    assert main(["spirals", *SPIRALS, "--out", str(out)]) == 0                  # with figures
    (out / "notes.txt").write_text("mine\n")                                       # not a run file
    first = json.loads((out / "metrics.json").read_text())["files"]
    assert "fig2_dataset.png" in first and set(first) == {p.name for p in out.iterdir()} - {"notes.txt"}
    assert main(["spirals", *SPIRALS, "--no-plots", "--overwrite", "--out", str(out)]) == 0
    files = json.loads((out / "metrics.json").read_text())["files"]
    assert files == ["config.json", "controls.npz", "metrics.json"]
    assert {p.name for p in out.iterdir()} == {*files, "notes.txt"}             # stale figures gone, notes kept


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_every_file_of_a_run_folder_has_the_umask_permissions(tmp_path, umask):
    old = os.umask(umask)
    try:
        assert main(["spirals", *SPIRALS, "--out", str(tmp_path / "run")]) == 0
        assert main(["certify", str(tmp_path / "run")]) == 0
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "run").iterdir()}
    assert len(modes) >= 6 and set(modes.values()) == {0o666 & ~umask}, modes


def test_help_shows_every_default(capsys):
    assert main(["resnet54", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for shown in ("--epochs EPOCHS (default: 165)", "--lr LR (default: 0.1)", "--batch-size BATCH_SIZE (default: 128)",
                  "--dataset {cifar10,cifar100,mnist,fashion-mnist} (default: cifar10)",
                  "--process-group-timeout SECONDS", "(default 600)"):
        assert shown in text, shown
    assert main(["hessian", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: 500)" in text and "(default: runs/hessian)" in text


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without a GPU")
def test_amp_on_a_cpu_says_so(tmp_path, capsys):
    assert main(["resnet54", *RESNET, "--amp", "--out", str(tmp_path / "r")]) == 0
    assert "--amp on a CPU" in capsys.readouterr().err
