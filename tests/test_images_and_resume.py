"""Issue 5: IDX data, the embedded MNIST subset, checkpoints and exact resume, `turnpike mnist`."""
import gzip
import json

import numpy as np
import pytest
import torch

import turnpike as tp
from turnpike.cli import main
from turnpike.data import load_idx_split, load_images, read_idx, write_idx
from turnpike.data._images import FASHION_MNIST_DIR


def _write_split(folder, split, images, labels, gz=True):
    stems = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}[split]
    suffix = ".gz" if gz else ""
    write_idx(folder / (stems[0] + suffix), images)
    write_idx(folder / (stems[1] + suffix), labels)


@pytest.fixture
def tiny_idx_dir(tmp_path):
    rng = np.random.default_rng(0)
    for split, count, gz in (("train", 60, True), ("test", 20, False)):
        images = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
        labels = (np.arange(count) % 10).astype(np.uint8)
        _write_split(tmp_path, split, images, labels, gz=gz)
    return tmp_path


@pytest.mark.parametrize("name", ["a-idx3-ubyte", "a-idx3-ubyte.gz"])
def test_idx_round_trip(tmp_path, name):
    array = np.random.default_rng(1).integers(0, 256, (7, 5, 3), dtype=np.uint8)
    write_idx(tmp_path / name, array)
    back = read_idx(tmp_path / name)
    assert back.dtype == np.uint8 and back.shape == (7, 5, 3)
    np.testing.assert_array_equal(back, array)
    raw = (gzip.open if name.endswith(".gz") else open)(tmp_path / name, "rb").read()
    assert raw[:4] == bytes([0, 0, 8, 3]) and int.from_bytes(raw[4:8], "big") == 7


def test_idx_split_loads_raw_and_gz(tiny_idx_dir):
    images, labels = load_idx_split(tiny_idx_dir, "train")
    assert images.shape == (60, 28, 28) and labels.dtype == np.int64
    np.testing.assert_array_equal(labels, np.arange(60) % 10)
    assert load_idx_split(tiny_idx_dir, "test")[0].shape == (20, 28, 28)


def test_load_images_normalises_with_training_statistics(tiny_idx_dir):
    data = load_images("mnist", tiny_idx_dir)
    assert data.train_inputs.shape == (60, 784) and data.train_inputs.dtype == np.float32
    assert abs(float(data.train_inputs.mean())) < 1e-5 and abs(float(data.train_inputs.std()) - 1) < 1e-4
    raw = read_idx(tiny_idx_dir / "t10k-images-idx3-ubyte").reshape(20, -1) / 255.0
    np.testing.assert_allclose(data.test_inputs, (raw - data.pixel_mean) / data.pixel_std, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("damage, message", [
    (lambda raw: b"\x01\x02" + raw[2:], "magic"),
    (lambda raw: raw[:-5], "truncated"),
    (lambda raw: raw + b"\x00\x00", "trailing"),
    (lambda raw: raw[:6], "header"),
])
def test_corrupt_idx_files_are_rejected(tmp_path, damage, message):
    path = tmp_path / "x-idx3-ubyte"
    write_idx(path, np.zeros((4, 3, 3), dtype=np.uint8))
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(ValueError, match=message) as error:
        read_idx(path)
    assert "x-idx3-ubyte" in str(error.value)


def test_corrupt_gzip_and_missing_files(tmp_path, tiny_idx_dir):
    bad = tmp_path / "y-idx1-ubyte.gz"
    bad.write_bytes(b"not gzip at all")
    with pytest.raises(ValueError, match="y-idx1-ubyte.gz"):
        read_idx(bad)
    with pytest.raises(ValueError, match="not found"):
        read_idx(tmp_path / "missing-idx3-ubyte")
    (tiny_idx_dir / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte"):
        load_idx_split(tiny_idx_dir, "test")


def test_image_and_label_counts_must_match(tmp_path):
    _write_split(tmp_path, "train", np.zeros((5, 2, 2), np.uint8), np.zeros(4, np.uint8))
    with pytest.raises(ValueError, match="labels"):
        load_idx_split(tmp_path, "train")


def test_unknown_dataset_and_missing_directory(tmp_path):
    with pytest.raises(ValueError, match="dataset"):
        load_images("cifar")
    with pytest.raises(ValueError, match="directory"):
        load_images("mnist", tmp_path / "nope")


def test_embedded_mnist_subset():
    data = load_images("mnist")
    assert data.train_inputs.shape == (4000, 784) and data.test_inputs.shape == (1000, 784)
    assert np.bincount(data.train_labels).tolist() == [400] * 10
    assert np.bincount(data.test_labels).tolist() == [100] * 10
    assert len(set(data.train_labels[:100].tolist())) == 10        # shuffled: a prefix holds every digit


@pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_fashion_mnist_from_debian():
    data = load_images("fashion-mnist")
    assert data.train_inputs.shape == (60000, 784) and data.test_inputs.shape == (10000, 784)
    assert np.bincount(data.train_labels).tolist() == [6000] * 10


# --- checkpoints and resume ---------------------------------------------------------------

def _ocp(count=48, depth=4):
    rng = np.random.default_rng(3)
    inputs = rng.normal(size=(count, 12))
    labels = rng.integers(0, 3, count)
    soft = tp.SoftCrossEntropy(num_classes=3, p_d=0.8)
    system = tp.TwoLayerResNet(state_dim=12, hidden_dim=6, depth=depth, activations=("relu", "identity"))
    return tp.OCP(system, inputs, labels, stage_cost=soft + tp.InputPenalty(1e-3), terminal_cost=soft)


SOLVE = dict(method=("adam", "lbfgs"), steps=(24, 5), options=({"lr": 0.05}, {}), batch_size=None, seed=4,
             progress=False)


@pytest.mark.parametrize("sweep", ["numpy", "buffered", "resident"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("kill_at", [9, 26])      # inside the Adam phase, inside the L-BFGS phase
def test_resume_after_interruption_gives_the_same_controls(monkeypatch, tmp_path, dtype, kill_at, sweep):
    """Also on the buffered sweep, and on the GPU code path run on the CPU ("resident"), where the
    controls must come back from the checkpoint as tensors on the device."""
    import turnpike.backends._optimizers as optimizers
    import turnpike.backends._flat as solve_module
    if sweep != "numpy":
        monkeypatch.setattr(solve_module, "_BUFFERED_PRODUCT_WORK", 0)
    kinds = set()
    if sweep == "resident":
        monkeypatch.setattr(solve_module, "_resident", lambda device: True)
        update = optimizers.AdamStepper.update
        monkeypatch.setattr(optimizers.AdamStepper, "update",
                            lambda self, theta, *rest: kinds.add(type(theta)) or update(self, theta, *rest))
    ocp = _ocp()
    settings = dict(SOLVE, method="adam", steps=30, options={"lr": 0.05}, batch_size=16) if kill_at == 9 else SOLVE
    full = tp.solve_ocp(ocp, dtype=dtype, **settings)
    path = tmp_path / "ckpt.npz"
    interrupted = tp.solve_ocp(ocp, dtype=dtype, checkpoint=path, checkpoint_every=4,
                               callback=lambda step, value, controls: step < kill_at, **settings)
    assert interrupted.status == "stopped" and path.exists()
    assert not np.allclose(interrupted.controls, full.controls)
    resumed = tp.solve_ocp(ocp, dtype=dtype, checkpoint=path, checkpoint_every=4, resume=True, **settings)
    np.testing.assert_array_equal(resumed.controls, full.controls)
    np.testing.assert_array_equal(resumed.history["objective"], full.history["objective"])
    assert kinds <= {torch.Tensor}


def test_resume_refuses_a_checkpoint_of_other_settings(tmp_path):
    ocp = _ocp()
    path = tmp_path / "ckpt.npz"
    tp.solve_ocp(ocp, method="adam", steps=5, checkpoint=path, progress=False)
    with pytest.raises(ValueError, match="checkpoint"):
        tp.solve_ocp(ocp, method="adam", steps=6, checkpoint=path, resume=True, progress=False)
    path.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="corrupt"):
        tp.solve_ocp(ocp, method="adam", steps=5, checkpoint=path, resume=True, progress=False)
    with pytest.raises(ValueError, match="resume"):
        tp.solve_ocp(ocp, method="adam", steps=5, resume=True, progress=False)


def test_divergence_keeps_the_last_good_checkpoint(tmp_path):
    system = tp.SingleLayerResNet(state_dim=3, depth=25, activation="identity")
    rng = np.random.default_rng(0)
    ocp = tp.OCP(system, rng.normal(size=(8, 3)), np.zeros(8, int), terminal_cost=tp.L2Tracking(np.ones(3)))
    path = tmp_path / "ckpt.npz"
    # lr 0.3 on this deep linear network: a few dozen good steps, then the objective explodes
    solution = tp.solve_ocp(ocp, method="adam", steps=50, options={"lr": 0.3, "schedule": "constant"},
                            checkpoint=path, checkpoint_every=1, progress=False)
    assert solution.status == "diverged" and 5 < len(solution.history["objective"]) < 50
    saved = np.load(path)["theta"]
    assert np.all(np.isfinite(saved))
    assert np.isfinite(tp.solve_ocp(ocp, method="adam", steps=1, initial_controls=saved, progress=False).objective)


def test_layer_statistics_match_the_stored_states():
    ocp = _ocp(count=40)
    solution = tp.solve_ocp(ocp, method="lbfgs", steps=20, seed=1, progress=False)
    soft = ocp.soft_cross_entropy()
    stats = tp.layer_statistics(solution.network, ocp.inputs, ocp.labels, num_classes=3, soft_cross_entropy=soft,
                                chunk=7, dtype=np.float64)
    np.testing.assert_allclose(stats["loss"], solution.loss_per_layer("train"), rtol=1e-10)
    np.testing.assert_allclose(stats["accuracy"], solution.accuracy_per_layer("train"))
    np.testing.assert_allclose(stats["distance"], solution.distance_to_turnpike("train"), rtol=1e-10)
    lean = tp.solve_ocp(ocp, method="lbfgs", steps=20, seed=1, progress=False, keep_states=False)
    np.testing.assert_array_equal(lean.controls, solution.controls)
    with pytest.raises(ValueError, match="keep_states"):
        lean.loss_per_layer()


def test_mnist_cli_on_tiny_idx_files_and_resume(tiny_idx_dir, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["mnist", "--data", str(tiny_idx_dir), "--depth", "3", "--baselines", "2,3", "--epochs", "2",
            "--batch-size", "16", "--out", str(out), "--quiet"]
    assert main(argv) == 0
    first = json.loads((out / "metrics.json").read_text())
    assert len(first["train_loss_per_layer"]) == 4 and set(first["baselines"]) == {"2", "3"}
    assert (out / "fig5_loss_over_layers.png").stat().st_size > 0
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        "baseline-N2.npz", "baseline-N3.npz", "stage-N3.npz"]
    # a finished run resumes instantly to the same networks
    assert main(argv + ["--resume", "--no-plots"]) == 0
    second = json.loads((out / "metrics.json").read_text())
    np.testing.assert_allclose(second["control_norm_per_layer"], first["control_norm_per_layer"])
    assert "stage cost, N=3" in capsys.readouterr().out


def test_mnist_cli_bad_input(tmp_path, capsys):
    assert main(["mnist", "--data", str(tmp_path / "none"), "--out", str(tmp_path), "--quiet"]) == 2
    assert "directory" in capsys.readouterr().err
    assert main(["mnist", "--device", "tpu", "--out", str(tmp_path), "--quiet"]) == 2
    assert "device: expected 'cpu', 'cuda' or 'cuda:N', got 'tpu'" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["mnist", "--device", "cuda", "--out", str(tmp_path), "--quiet"]) == 2
        assert "no CUDA GPU" in capsys.readouterr().err
