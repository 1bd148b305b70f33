r"""n-shortcut networks of the Demystifying-ResNet paper (Li et al., Def. 1–2), as a flat system.

One residual unit r = 0..R-1 maps a state x ∈ R^d to

.. math::
    x_{r+1} = x_r + σ_{post}\big(W_{r,n}\, σ_{mid}(\cdots σ_{mid}(W_{r,1}\, σ_{pre}(x_r)))\big),

a transformation path of n square weight matrices (no biases) and an identity shortcut of
depth n. The OCP's horizon is the number of units R (one control block
u_r = (W_{r,1}, …, W_{r,n}) per unit); the paper's *depth* is the number of weight layers
``layers`` = n·R. With ``shortcut=False`` the same layers and activations form the plain
network :math:`x_{r+1} = σ_{post}(W_{r,n} \cdots σ_{pre}(x_r))` the paper compares against
(its linear networks, or with ReLUs "at the same positions").

Initialisations (``initialisation``, multiplied by ``init_scale`` of :func:`turnpike.solve_ocp`):
``"xavier"`` (Glorot normal, N(0, 1/d) for d×d matrices), ``"orthogonal"`` (Haar-random
orthogonal matrices, Saxe et al.), ``"zero"`` (the saddle point of Theorem 2 itself). The
paper's "zero plus a small perturbation" is ``"xavier"`` with ``init_scale=0.01``.

θ holds the fields ``W1``…``Wn`` in the flat layout of :mod:`turnpike.systems._layout`: all
units' W1 (R, d, d), then all W2, …; :func:`turnpike.theory.theorem2_hessian` builds the
Hessian at zero in this same order.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from .. import _checks
from ._activations import get_activation
from ._layout import LayerMap, check_draw

INITIALISATIONS = ("xavier", "orthogonal", "zero")
ACTIVATION_POSITIONS = ("pre", "mid", "post")


@dataclass(frozen=True, kw_only=True)
class ShortcutNetwork(LayerMap):
    """An n-shortcut network (``shortcut=True``) or the plain network of the same layers.

    ``activations`` = (σ_pre, σ_mid, σ_post), names from :data:`turnpike.ACTIVATIONS`;
    all ``"identity"`` is the n-shortcut *linear* network of Def. 1.
    """

    state_dim: int
    units: int
    shortcut_depth: int = 2
    activations: tuple = ("identity", "identity", "identity")
    shortcut: bool = True
    initialisation: str = "xavier"
    fields: tuple = field(init=False, repr=False, compare=False, default=())

    def __post_init__(self):
        _checks.integer("state_dim", self.state_dim, minimum=1)
        _checks.integer("units", self.units, minimum=1)
        _checks.integer("shortcut_depth", self.shortcut_depth, minimum=1)
        object.__setattr__(self, "activations", _checks.names("activations", self.activations, 3,
                                                              "a triple (σ_pre, σ_mid, σ_post) of activation names"))
        for position, name in zip(ACTIVATION_POSITIONS, self.activations):
            get_activation(name, f"activations ({position})")
        if not isinstance(self.shortcut, bool):
            _checks.fail("shortcut", "True (n-shortcut network) or False (plain network)", self.shortcut)
        _checks.choice("initialisation", self.initialisation, INITIALISATIONS)
        d = self.state_dim
        object.__setattr__(self, "fields", tuple((f"W{l}", (d, d)) for l in range(1, self.shortcut_depth + 1)))

    @property
    def depth(self) -> int:
        """The OCP's horizon: the number of residual units R."""
        return self.units

    @property
    def num_controls(self) -> int:
        return self.units

    @property
    def layers(self) -> int:
        """The paper's depth: weight layers n·R."""
        return self.shortcut_depth * self.units

    # --- initialisation ------------------------------------------------------------
    def initial_controls(self, rng: np.random.Generator, scale: float) -> np.ndarray:
        """θ from ``initialisation``, every matrix multiplied by ``scale``."""
        check_draw(rng, scale)
        d, count = self.state_dim, self.units * self.shortcut_depth
        if self.initialisation == "zero":
            matrices = np.zeros((count, d, d))
        elif self.initialisation == "xavier":
            # Glorot: variance 2 / (fan_in + fan_out) = 1/d for a square matrix
            matrices = rng.normal(0.0, 1.0 / math.sqrt(d), (count, d, d))
        else:
            matrices = np.stack([_haar_orthogonal(rng, d) for _ in range(count)])
        # draw order: unit by unit, layer by layer; θ stores layer by layer (all W1 first)
        matrices = scale * matrices.reshape(self.units, self.shortcut_depth, d, d)
        return self.pack({f"W{l + 1}": matrices[:, l] for l in range(self.shortcut_depth)})

    # --- dynamics ------------------------------------------------------------------
    def step(self, blocks, k, x, out=None):
        """x_{k+1} for the batch ``x`` (B, d) and what the adjoint step needs; written into
        ``out`` (numpy, (B, d)) when given, as the ResNets' :meth:`step` does."""
        pre, mid, post = (get_activation(a) for a in self.activations)
        a = pre.value(x)                                      # (B, d)
        cache = [x, a]
        for l in range(1, self.shortcut_depth + 1):
            z = a @ blocks[f"W{l}"][k].T                      # (B, d)
            a = (post if l == self.shortcut_depth else mid).value(z)
            cache += [z, a]
        if out is None:
            return (x + a if self.shortcut else a), cache
        if self.shortcut:
            np.add(x, a, out=out)
        else:
            out[...] = a
        return out, cache

    def step_backward(self, blocks, grads, k, cache, costate):
        """Add ∂J/∂u_k to ``grads`` (zero on entry, as for the ResNets); return λ_{k+1} ∂f_k/∂x (a new array)."""
        pre, mid, post = (get_activation(a) for a in self.activations)
        x, n = cache[0], self.shortcut_depth
        g = costate                                           # ∂J/∂(output of the path), (B, d)
        for l in range(n, 0, -1):
            z, a = cache[2 * l], cache[2 * l + 1]
            sigma = post if l == n else mid
            if sigma.derivative is not None:
                g = g * sigma.derivative(z, a)
            below = cache[2 * l - 1]                          # input of W_l
            grads[f"W{l}"][k] += g.T @ below
            g = g @ blocks[f"W{l}"][k]
        if pre.derivative is not None:
            g = g * pre.derivative(x, cache[1])
        return costate + g if self.shortcut else g

    def truncate(self, theta, depth: int):
        """The first ``depth`` units as a new (system, θ) pair."""
        depth = _checks.integer("depth", depth, minimum=1)
        if depth > self.units:
            _checks.fail("depth", f"at most the number of units {self.units}", depth)
        shorter = replace(self, units=depth)
        return shorter, shorter.pack({name: b[:depth] for name, b in self.unpack(theta).items()})


def _haar_orthogonal(rng: np.random.Generator, d: int) -> np.ndarray:
    """A Haar-distributed orthogonal matrix: QR of a Gaussian matrix with R's diagonal made positive."""
    q, r = np.linalg.qr(rng.normal(size=(d, d)))
    return q * np.sign(np.diag(r))
