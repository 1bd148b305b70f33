r"""Residual networks as discrete-time control systems.

A system is the layer map :math:`x_{k+1} = f_k(x_k, u_k) = x_k + \tau F(x_k, u_k)`,
k = 0..N-1, on a batch of states ``x`` of shape (B, n). The controls ``u_k`` (weights
and biases of layer k) are *not* stored in the system: they live in one flat vector
``theta`` so that optimisers, adjoint sweeps and checkpoints all handle a single
array. ``theta`` is laid out field by field, each field stacked over the layers
(``A1`` of every layer, then ``b1`` of every layer, ...), and :meth:`unpack` returns
views of shape (N, *field_shape) into it. Systems work with numpy arrays and torch
tensors alike, so the same code serves the fast adjoint engine and autograd.

Each system also has a *buffered* form of its step for the fast adjoint sweep
(:mod:`turnpike.backends._sweep`): ``step_into`` and ``step_backward_into`` write into
preallocated torch tensors (CPU or GPU) with fused matrix products (bias, residual
and weight decay folded into ``addmm``) instead of allocating a new array per
operation. The plain ``step`` / ``step_backward`` stay the reference they are tested
against, and serve autograd and small networks.

``step_size`` τ = 1 gives the ResNet; τ = T/N makes the rollout the explicit Euler
discretisation of the neural ODE ẋ = F(x, u(t)) on [0, T].
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
import numpy as np

from .. import _array, _checks
from ._activations import get_activation
from ._layout import LayerMap
from ._protocol import BufferedLayerMap


@dataclass(frozen=True, kw_only=True)
class _ResidualSystem(LayerMap, BufferedLayerMap):
    state_dim: int
    depth: int
    step_size: float = 1.0
    # (name, shape of one layer's block); filled by subclasses
    fields: tuple = field(init=False, repr=False, compare=False, default=())

    def __post_init__(self):
        _checks.integer("state_dim", self.state_dim, minimum=1)
        _checks.integer("depth", self.depth, minimum=1)
        _checks.real("step_size", self.step_size, minimum=0.0, strict_min=True)

    @property
    def num_controls(self) -> int:
        """One block of controls per layer."""
        return self.depth

    # --- dynamics: x_{k+1} = x_k + τ F(x_k, u_k), F given by the subclass's ``field`` ----
    def step(self, blocks, k, x, out=None):
        """x_{k+1} and what :meth:`step_backward` needs; with ``out`` (a numpy array (B, n), the
        adjoint sweep's preallocated state k+1) x_{k+1} is written there instead of a new array."""
        value, cache = self.field(blocks, k, x, out=out)
        if out is None:
            return x + (value if self.step_size == 1.0 else self.step_size * value), cache
        if value is not out:
            np.multiply(value, self.step_size, out=out)
        elif self.step_size != 1.0:
            out *= self.step_size
        out += x
        return out, cache

    def step_backward(self, blocks, grads, k, cache, costate):
        """Accumulate ∂J/∂u_k into ``grads`` (zero on entry) and return λ_{k+1} ∂f/∂x."""
        g = costate * self.step_size if self.step_size != 1.0 else costate
        return costate + self.field_backward(blocks, grads, k, cache, g)

    def truncate(self, theta, depth: int):
        """The first ``depth`` layers as a new (system, theta) pair; runs on its own."""
        depth = _checks.integer("depth", depth, minimum=1)
        if depth > self.depth:
            _checks.fail("depth", f"at most the system depth {self.depth}", depth)
        shorter = replace(self, depth=depth)
        blocks = {name: b[:depth] for name, b in self.unpack(theta).items()}
        return shorter, shorter.pack(blocks)


@dataclass(frozen=True, kw_only=True)
class SingleLayerResNet(_ResidualSystem):
    r"""Architecture (1) of the 2024 paper: :math:`x_{k+1} = x_k + \tau\,σ(A_k x_k + b_k)`.

    Controls per layer: ``A`` (n, n) and ``b`` (n,).
    """

    activation: str = "tanh"

    def __post_init__(self):
        super().__post_init__()
        n = self.state_dim
        object.__setattr__(self, "fields", (("A", (n, n)), ("b", (n,))))
        # looked up once: the sweeps ask for it at every layer and RK stage
        object.__setattr__(self, "_sigmas", (get_activation(self.activation),))

    def field(self, blocks, k, x, out=None):
        """F(x, u_k) = σ(A_k x + b_k), (B, n), and what :meth:`field_backward` needs (``out``
        unused: σ(z) is kept for the backward pass, and z too unless σ' needs only σ(z))."""
        z = x @ blocks["A"][k].T + blocks["b"][k]   # (B, n)
        a = self._sigmas[0].apply_in_place(z)       # numpy: over z when σ' needs only σ(z)
        return a, (x, z, a)

    def field_backward(self, blocks, grads, k, cache, g):
        """Add g ∂F/∂u_k to ``grads`` (layer k) and return g ∂F/∂x, for g (B, n)."""
        x, z, a = cache
        sigma = self._sigmas[0]
        if sigma.derivative is not None:
            g = g * sigma.derivative(z, a)
        grads["A"][k] += g.T @ x
        grads["b"][k] += _array.sum_rows(g)
        return g @ blocks["A"][k]

    # --- buffered sweep (torch tensors, preallocated) ------------------------------
    def sweep_buffers(self, batch: int) -> dict:
        """Shapes of the per-layer tensors the buffered forward pass keeps for the backward one."""
        shapes = {"z": (batch, self.state_dim)}
        if _keeps_value_apart(self._sigmas[0]):
            shapes["a"] = (batch, self.state_dim)
        return shapes

    def step_into(self, blocks, k, x, out, cache):
        """x_{k+1} into ``out`` (B, n); fills ``cache`` (views of one layer's buffers)."""
        import torch
        z = torch.addmm(blocks["b"][k], x, blocks["A"][k].T, out=cache["z"])
        a = _value_into_cache(self._sigmas[0], z, cache, "a")
        torch.add(x, a, alpha=self.step_size, out=out)

    def step_backward_into(self, blocks, grads, k, x, cache, costate, out, scratch, decay):
        """∂J/∂u_k (+ ``decay``·u_k, the input penalty) into ``grads``; λ_{k+1}∂f/∂x into ``out``.

        ``out`` None skips the costate (layer 0's is never used). ``scratch`` holds
        tensors of shape (B, n) and (B, hidden) the step may overwrite.
        """
        import torch
        z = cache["z"]
        sigma = self._sigmas[0]
        g = costate
        if self.step_size != 1.0 or sigma.derivative is not None:
            g = torch.mul(costate, self.step_size, out=scratch["state"])   # costate itself stays intact
            sigma.scale_by_derivative(g, z, cache.get("a", z))
        _weight_gradient(grads["A"][k], g, x, blocks["A"][k], decay)
        _bias_gradient(grads["b"][k], g, blocks["b"][k], decay)
        if out is not None:
            torch.addmm(costate, g, blocks["A"][k], out=out)


@dataclass(frozen=True, kw_only=True)
class TwoLayerResNet(_ResidualSystem):
    r"""Architecture (26) of the 2024 paper:
    :math:`x_{k+1} = x_k + \tau\,σ_2(A_{k,2}\,σ_1(A_{k,1} x_k + b_{k,1}) + b_{k,2})`.

    Controls per layer: ``A1`` (h, n), ``b1`` (h,), ``A2`` (n, h), ``b2`` (n,).
    """

    hidden_dim: int = 8
    activations: tuple = ("tanh", "identity")

    @property
    def layer_width(self) -> int:
        return self.hidden_dim

    def __post_init__(self):
        super().__post_init__()
        _checks.integer("hidden_dim", self.hidden_dim, minimum=1)
        object.__setattr__(self, "activations", _checks.names("activations", self.activations, 2,
                                                              "a pair (σ1, σ2) of activation names"))
        for position, name in zip(("activations[0]", "activations[1]"), self.activations):
            get_activation(name, position)
        n, h = self.state_dim, self.hidden_dim
        object.__setattr__(self, "fields", (("A1", (h, n)), ("b1", (h,)), ("A2", (n, h)), ("b2", (n,))))
        object.__setattr__(self, "_sigmas", tuple(get_activation(a) for a in self.activations))   # (σ1, σ2)

    def field(self, blocks, k, x, out=None):
        """F(x, u_k) = σ2(A2 σ1(A1 x + b1) + b2), (B, n), and what :meth:`field_backward` needs.

        With ``out`` (numpy, (B, n)) and σ2 the identity, F is written into ``out``: the backward
        pass needs neither z2 nor σ2(z2) then, so the next state can take their place.
        """
        inner, outer = self._sigmas
        z1 = x @ blocks["A1"][k].T                      # (B, h)
        if _array.is_numpy(z1):
            z1 += blocks["b1"][k]                       # in place: one (B, h) temporary less per layer
            a1 = inner.apply_in_place(z1)               # over z1 when σ1' needs only σ1(z1) (then a1 is z1)
        else:
            z1 = z1 + blocks["b1"][k]                   # autograd and torch.func want no in-place ops
            a1 = inner.value(z1)
        if out is not None and outer.derivative is None and _array.is_numpy(out):
            np.matmul(a1, blocks["A2"][k].T, out=out)
            out += blocks["b2"][k]
            return out, (x, z1, a1, None, None)
        z2 = a1 @ blocks["A2"][k].T + blocks["b2"][k]   # (B, n)
        a2 = outer.value(z2)
        return a2, (x, z1, a1, z2, a2)

    def field_backward(self, blocks, grads, k, cache, g):
        """Add g ∂F/∂u_k to ``grads`` (layer k) and return g ∂F/∂x, for g (B, n)."""
        x, z1, a1, z2, a2 = cache
        inner, outer = self._sigmas
        if outer.derivative is not None:
            g = g * outer.derivative(z2, a2)
        grads["A2"][k] += g.T @ a1
        grads["b2"][k] += _array.sum_rows(g)
        g1 = inner.scale_by_derivative(g @ blocks["A2"][k], z1, a1)             # (B, h), a fresh array
        grads["A1"][k] += g1.T @ x
        grads["b1"][k] += _array.sum_rows(g1)
        return g1 @ blocks["A1"][k]

    # --- buffered sweep (torch tensors, preallocated) ------------------------------
    def sweep_buffers(self, batch: int) -> dict:
        n, h = self.state_dim, self.hidden_dim
        inner, outer = self._sigmas
        shapes = {"z1": (batch, h)}
        if _keeps_value_apart(inner):
            shapes["a1"] = (batch, h)
        if outer.derivative is not None:          # σ2 not the identity
            shapes["z2"] = (batch, n)
            if _keeps_value_apart(outer):
                shapes["a2"] = (batch, n)
        return shapes

    def step_into(self, blocks, k, x, out, cache):
        import torch
        inner, outer = self._sigmas
        z1 = torch.addmm(blocks["b1"][k], x, blocks["A1"][k].T, out=cache["z1"])          # (B, h)
        a1 = _value_into_cache(inner, z1, cache, "a1")
        if "z2" in cache:
            z2 = torch.addmm(blocks["b2"][k], a1, blocks["A2"][k].T, out=cache["z2"])     # (B, n)
            torch.add(x, _value_into_cache(outer, z2, cache, "a2"), alpha=self.step_size, out=out)
        else:
            # identity σ2: the residual x rides in the product, x + τ A2 a1, then + τ b2
            torch.addmm(x, a1, blocks["A2"][k].T, alpha=self.step_size, out=out)
            out.add_(blocks["b2"][k], alpha=self.step_size)

    def step_backward_into(self, blocks, grads, k, x, cache, costate, out, scratch, decay):
        import torch
        inner, outer = self._sigmas
        z1 = cache["z1"]
        a1 = cache.get("a1", z1)
        g2 = costate                                                                     # (B, n)
        if self.step_size != 1.0 or "z2" in cache:
            g2 = torch.mul(costate, self.step_size, out=scratch["state"])
            if "z2" in cache:
                outer.scale_by_derivative(g2, cache["z2"], cache.get("a2", cache["z2"]))
        _weight_gradient(grads["A2"][k], g2, a1, blocks["A2"][k], decay)
        _bias_gradient(grads["b2"][k], g2, blocks["b2"][k], decay)
        g1 = inner.scale_by_derivative(torch.mm(g2, blocks["A2"][k], out=scratch["hidden"]), z1, a1)   # (B, h)
        _weight_gradient(grads["A1"][k], g1, x, blocks["A1"][k], decay)
        _bias_gradient(grads["b1"][k], g1, blocks["b1"][k], decay)
        if out is not None:
            torch.addmm(costate, g1, blocks["A1"][k], out=out)


def _keeps_value_apart(sigma) -> bool:
    """Whether the buffered sweep keeps σ(z) in a buffer of its own beside z: only when σ' needs z
    (σ(z) over z otherwise; the identity needs no σ(z) at all)."""
    return sigma.derivative is not None and not sigma.derivative_from_value


def _value_into_cache(sigma, z, cache, name):
    """σ(z) of the buffered forward pass: z itself for the identity, cache[name] when σ' needs z,
    else written over z (the caches then hold only σ(z), under z's name)."""
    if sigma.derivative is None:
        return z
    return sigma.write(z, cache.get(name, z))


def _weight_gradient(out, g, a, weight, decay):
    """out = gᵀ a + decay · weight, one fused product (decay = 2r of the input penalty)."""
    import torch
    torch.addmm(weight, g.T, a, beta=decay, out=out)


def _bias_gradient(out, g, bias, decay):
    import torch
    torch.sum(g, 0, out=out)
    if decay:
        out.add_(bias, alpha=decay)
