r"""The two-spirals benchmark of Lang & Witbrock (1988), generated.

Class 0 is the spiral :math:`r(t) = t,\ φ(t) = 2π\,\text{turns}\,t` for
:math:`t ∈ [t_0, 1]`; class 1 is the same spiral rotated by π. The classic set has
97 points per spiral over three turns with radius shrinking from 6.5 to 0.5 (so
:math:`t_0 = 1/13`); the 2024 paper trains on 480 samples. Training points are evenly
spaced in t; test points are drawn uniformly in t from a separate random stream, so
they fall between the training points and measure generalisation.
"""
from __future__ import annotations

import math

import numpy as np

from .. import _checks


def _spiral(t: np.ndarray, turns: float) -> np.ndarray:
    angle = 2.0 * math.pi * turns * t
    return np.stack([t * np.cos(angle), t * np.sin(angle)], axis=1)       # (len(t), 2)


def two_spirals(num_samples: int = 480, *, turns: float = 1.5, start: float = 1.0 / 13.0,
                noise: float = 0.0, test: bool = False, seed: int = 0):
    """``num_samples`` points of the two spirals: returns (inputs (D, 2), labels (D,)).

    Half the samples are of each class. ``test=True`` draws the positions along the
    spirals at random (seeded) instead of on the training grid.
    """
    num_samples = _checks.integer("num_samples", num_samples, minimum=2)
    if num_samples % 2:
        _checks.fail("num_samples", "an even number (half of each class)", num_samples)
    turns = _checks.real("turns", turns, minimum=0.0, strict_min=True)
    start = _checks.real("start", start, minimum=0.0, maximum=1.0, strict_max=True)
    noise = _checks.real("noise", noise, minimum=0.0)
    test = _checks.boolean("test", test)
    seed = _checks.integer("seed", seed, minimum=0)
    per_class = num_samples // 2
    rng = np.random.default_rng([seed, 1 if test else 0])
    if test:
        t = np.sort(rng.uniform(start, 1.0, per_class))
    else:
        t = np.linspace(start, 1.0, per_class)
    first = _spiral(t, turns)
    inputs = np.concatenate([first, -first])
    if noise > 0:
        inputs = inputs + rng.normal(0.0, noise, inputs.shape)
    labels = np.repeat(np.arange(2), per_class)
    return inputs, labels
