"""Whitened principal components: the data set-up of the Demystifying-ResNet experiments (App. B).

Inputs are centred, projected on their leading principal components and each component
scaled to unit variance, so that Σ^{XX} = (1/m) XᵀX = I; targets are one-hot. Square
residual networks then map R^k to R^k with k = components = classes (10 for MNIST).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import _checks


@dataclass(frozen=True)
class WhiteningTransform:
    """x ↦ ((x − mean) @ basis) / scale, fitted on training data."""

    mean: np.ndarray        # (p,)
    basis: np.ndarray       # (p, k): the leading principal directions
    scale: np.ndarray       # (k,): the components' standard deviations

    def __call__(self, inputs) -> np.ndarray:
        inputs = _samples("inputs", inputs)
        if inputs.shape[1] != self.mean.shape[0]:
            _checks.fail("inputs", f"samples of {self.mean.shape[0]} features", inputs)
        return (inputs - self.mean) @ self.basis / self.scale


def _samples(name: str, inputs) -> np.ndarray:
    """One or more finite samples (m, ...), flattened per sample to (m, p)."""
    inputs = _checks.finite_array(name, inputs, min_ndim=2, nonempty=True)
    return inputs.reshape(len(inputs), -1)


def whitening(inputs, *, components: int = 10) -> WhiteningTransform:
    """Fit PCA whitening to ``inputs`` (m, ...) flattened per sample, keeping ``components``."""
    inputs = _samples("inputs", inputs)
    components = _checks.integer("components", components, minimum=1)
    if components > min(inputs.shape):
        _checks.fail("components", f"at most min(samples, features) = {min(inputs.shape)}", components)
    mean = inputs.mean(axis=0)
    # right singular vectors of the centred data are the principal directions
    samples, singular, directions = np.linalg.svd(inputs - mean, full_matrices=False)
    # LAPACK's signs depend on the BLAS thread count and the input's scale, and the Hessian at zero of
    # a shortcut network maps component i onto class i's target: fix them (each whitened component's
    # largest |value| positive, scikit-learn's svd_flip) so that results do not change with the machine
    signs = np.sign(samples[np.abs(samples).argmax(axis=0), np.arange(samples.shape[1])])
    directions = directions * signs[:, None]
    scale = singular[:components] / np.sqrt(len(inputs))
    if scale[-1] <= 0:
        _checks.fail("components", f"at most the data's rank ({int(np.sum(singular > 0))})", components)
    return WhiteningTransform(mean, directions[:components].T, scale)


def whitened_regression_data(images, labels, *, components: int = 10, classes: int = 10):
    """(X (m, components) whitened, Y (m, classes) one-hot) for the square networks of App. B."""
    classes = _checks.integer("classes", classes, minimum=1)
    labels = _checks.labels("labels", labels, count=len(images), num_classes=classes)
    inputs = whitening(images, components=components)(images)
    return inputs, np.eye(classes)[labels]
