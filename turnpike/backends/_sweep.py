r"""The adjoint sweep on preallocated torch buffers, on the CPU or a GPU.

Same mathematics as :func:`turnpike.backends._engines.adjoint_objective` (forward sweep, stacked
state costs, costate recursion), organised for large networks, where the plain sweep
spends as much time allocating and copying as multiplying: for the 60-layer MNIST
network (12.1 M controls, batch 128) every layer would allocate about 1 MB of fresh
arrays, then stack the 61 states (24 MB), zero a 48 MB gradient and add the input
penalty 2rθ in a separate pass.

Here a :class:`Workspace` owns, per batch size, the states (N+1, B, n), each layer's
forward cache, two costate buffers used in turn and the flat gradient; every product
writes into them (``out=``). Bias, residual and the input-penalty gradient are folded
into ``addmm``, and r‖θ‖² is summed layer by layer while the layer's controls are still
in cache. The costate of layer 0 is never formed (nothing uses it).

The gradient returned is the workspace's buffer: valid until the next call.
"""
from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch

from .._objective import state_cost_terms


class Workspace:
    """Preallocated tensors for the buffered sweep of one system on one device.

    Keeps the buffers of the two most recent (batch size, dtype) pairs, e.g. full
    mini-batches and the last, shorter one of an epoch.
    """

    def __init__(self, device="cpu"):
        self.device = torch.device(device)
        self._sets: OrderedDict = OrderedDict()
        self.last_states = None        # (N+1, B, n) of the latest call, until the next one

    def buffers(self, system, batch: int, dtype: torch.dtype) -> dict:
        key = (batch, dtype)
        if key in self._sets:
            self._sets.move_to_end(key)
            return self._sets[key]
        new = lambda *shape: torch.empty(shape, dtype=dtype, device=self.device)   # noqa: E731
        n, depth = system.state_dim, system.depth
        hidden = system.layer_width
        buffers = {
            "states": new(depth + 1, batch, n),                                   # x_0..x_N
            "cache": {name: new(depth, *shape) for name, shape in system.sweep_buffers(batch).items()},
            "costates": (new(batch, n), new(batch, n)),                           # λ_{k+1}, λ_k in turn
            "scratch": {"state": new(batch, n), "hidden": new(batch, hidden)},
            "gradient": new(system.parameter_count),
        }
        self._sets[key] = buffers
        while len(self._sets) > 2:
            self._sets.popitem(last=False)
        return buffers


def buffered_adjoint_objective(ocp, theta, inputs, labels, *, workspace: Workspace, with_gradient: bool = True):
    """J(θ) on the batch and ∇J by the costate sweep, in ``workspace``'s buffers.

    ``with_gradient=False`` runs the forward sweep only and returns (J, None).

    ``theta`` and ``inputs``: numpy arrays (shared with torch without a copy on the CPU,
    copied to a GPU workspace) or torch tensors. The gradient comes back in θ's kind —
    for a numpy θ on the CPU a view of the workspace buffer, overwritten by the next call.
    """
    system = ocp.system
    is_numpy = isinstance(theta, np.ndarray)
    theta_t = torch.as_tensor(theta, device=workspace.device)
    inputs_t = torch.as_tensor(inputs, device=workspace.device)
    if inputs_t.dtype != theta_t.dtype:
        raise ValueError(f"inputs: expected the controls' dtype {theta_t.dtype}, got {inputs_t.dtype}")
    batch = inputs_t.shape[0]
    buffers = workspace.buffers(system, batch, theta_t.dtype)
    blocks = system.unpack(theta_t)
    states, cache = buffers["states"], buffers["cache"]

    states[0].copy_(inputs_t)
    for k in range(system.depth):
        system.step_into(blocks, k, states[k], states[k + 1], {name: c[k] for name, c in cache.items()})
    workspace.last_states = states
    r = ocp.input_penalty
    if not with_gradient:
        value, _ = state_cost_terms(ocp, states, labels, with_gradient=False)
        return float(value) + r * float(theta_t @ theta_t), None
    value, state_gradient = state_cost_terms(ocp, states, labels, with_gradient=True)

    gradient = buffers["gradient"]
    squared_norm = theta_t.new_zeros(())
    if state_gradient is None:            # no state cost: ∇J = 2rθ
        torch.mul(theta_t, 2.0 * r, out=gradient)
        squared_norm = theta_t @ theta_t
    else:
        grads = system.unpack(gradient)
        width = state_gradient.shape[-1]
        costate, spare = buffers["costates"]
        costate.zero_()
        costate[:, :width] = state_gradient[system.depth]                         # λ_N
        for k in range(system.depth - 1, -1, -1):
            out = spare if k > 0 else None
            system.step_backward_into(blocks, grads, k, states[k], {name: c[k] for name, c in cache.items()},
                                      costate, out, buffers["scratch"], 2.0 * r)
            if r > 0:
                for block in blocks.values():         # r‖u_k‖² while u_k is still in cache
                    flat = block[k].reshape(-1)
                    squared_norm += flat @ flat
            if out is not None:
                out[:, :width] += state_gradient[k]
                costate, spare = out, costate
    value = float(value) + r * float(squared_norm)
    if is_numpy:
        return value, gradient.numpy() if gradient.device.type == "cpu" else gradient.cpu().numpy()
    return value, gradient
