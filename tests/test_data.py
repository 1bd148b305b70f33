"""The generated two-spirals data set."""
import math

import numpy as np
import pytest

from turnpike.data import two_spirals


@pytest.mark.parametrize("test", [False, True])
@pytest.mark.parametrize("num_samples", [2, 10, 480])
def test_shapes_and_balanced_labels(num_samples, test):
    inputs, labels = two_spirals(num_samples, test=test)
    assert inputs.shape == (num_samples, 2) and inputs.dtype == np.float64
    assert labels.shape == (num_samples,) and np.issubdtype(labels.dtype, np.integer)
    assert set(labels.tolist()) == {0, 1}
    assert np.sum(labels == 0) == np.sum(labels == 1) == num_samples // 2
    assert np.all(np.isfinite(inputs))


def test_training_points_lie_on_the_spiral():
    """Class 0: r = t, angle = 2π·turns·t for t evenly spaced in [start, 1]; class 1 = -class 0."""
    turns, start = 1.5, 1 / 13
    inputs, labels = two_spirals(40, turns=turns, start=start)
    first, second = inputs[labels == 0], inputs[labels == 1]
    np.testing.assert_array_equal(second, -first)
    t = np.linspace(start, 1, 20)
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), t, rtol=1e-12)
    angle = 2 * math.pi * turns * t
    np.testing.assert_allclose(first, np.stack([t * np.cos(angle), t * np.sin(angle)], axis=1), atol=1e-12)


def test_test_points_lie_on_the_spirals_between_training_points():
    turns, start = 1.0, 0.2
    inputs, labels = two_spirals(60, turns=turns, start=start, test=True, seed=3)
    radius = np.linalg.norm(inputs, axis=1)
    assert np.all((radius >= start) & (radius <= 1))
    for points in (inputs[labels == 0], -inputs[labels == 1]):   # class 1 is class 0's spiral rotated by π
        t = np.linalg.norm(points, axis=1)
        angle = 2 * math.pi * turns * t
        np.testing.assert_allclose(points, np.stack([t * np.cos(angle), t * np.sin(angle)], axis=1), atol=1e-12)
    train, _ = two_spirals(60, turns=turns, start=start)
    assert not np.any(np.all(np.isclose(inputs[:, None, :], train[None, :, :]), axis=2))


@pytest.mark.parametrize("kwargs", [dict(), dict(test=True), dict(noise=0.05), dict(noise=0.05, test=True)])
def test_deterministic_per_seed(kwargs):
    a = two_spirals(50, seed=7, **kwargs)
    b = two_spirals(50, seed=7, **kwargs)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


@pytest.mark.parametrize("kwargs", [dict(test=True), dict(noise=0.05), dict(noise=0.05, test=True)])
def test_random_parts_change_with_seed(kwargs):
    assert not np.allclose(two_spirals(50, seed=1, **kwargs)[0], two_spirals(50, seed=2, **kwargs)[0])


def test_test_set_differs_from_training_set():
    train, train_labels = two_spirals(100)
    test, test_labels = two_spirals(100, test=True)
    np.testing.assert_array_equal(train_labels, test_labels)
    assert not np.allclose(train, test)
    noisy_train = two_spirals(100, noise=0.1)[0]
    noisy_test = two_spirals(100, noise=0.1, test=True)[0]
    assert not np.allclose(noisy_train, noisy_test)


def test_noise_perturbs_the_training_grid():
    clean = two_spirals(100)[0]
    noisy = two_spirals(100, noise=0.1)[0]
    residual = noisy - clean
    assert 0.05 < residual.std() < 0.2
    assert abs(residual.mean()) < 0.05


@pytest.mark.parametrize("kwargs, argument", [
    (dict(num_samples=7), "num_samples"),
    (dict(num_samples=0), "num_samples"),
    (dict(num_samples=10.0), "num_samples"),
    (dict(turns=0.0), "turns"),
    (dict(turns=-1.0), "turns"),
    (dict(turns=float("inf")), "turns"),
    (dict(start=1.0), "start"),
    (dict(start=-0.1), "start"),
    (dict(noise=-0.01), "noise"),
])
def test_bad_arguments(kwargs, argument):
    arguments = {"num_samples": 10, **kwargs}
    with pytest.raises(ValueError, match=argument):
        two_spirals(**arguments)


def test_whitening_signs_do_not_depend_on_blas_threads_or_scale():
    """Each whitened component's largest |value| is positive (svd_flip): the same data whitened after
    scaling, or with one or two BLAS threads (LAPACK flips signs between them), gives the same components."""
    import subprocess
    import sys

    from turnpike.data import whitened_regression_data

    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, size=(300, 6, 6)).astype(np.uint8)
    labels = rng.integers(0, 10, size=300)
    X, _ = whitened_regression_data(images, labels)
    scaled, _ = whitened_regression_data(images.astype(np.float64) / 255, labels)
    np.testing.assert_allclose(scaled, X, atol=1e-9)
    rows = np.abs(X).argmax(axis=0)
    assert (X[rows, np.arange(X.shape[1])] > 0).all()
    code = ("import numpy as np, sys; from turnpike.data import whitened_regression_data as w; "
            "r = np.random.default_rng(3); i = r.integers(0, 256, size=(300, 6, 6)).astype(np.uint8); "
            "l = r.integers(0, 10, size=300); sys.stdout.write(repr(w(i, l)[0][:3].round(9).tolist()))")
    printed = {threads: subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                       env={**__import__("os").environ, "OPENBLAS_NUM_THREADS": threads}).stdout
               for threads in ("1", "2")}
    assert printed["1"] == printed["2"] == repr(X[:3].round(9).tolist())
