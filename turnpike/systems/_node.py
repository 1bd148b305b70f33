r"""Neural ODEs as continuous-time control systems: the training OCP (20) of the 2024 paper.

The states of the D samples follow (2)/(21) of the 2024 paper, or the two-layer form of (26),

.. math::
    \dot x(t) = F(x(t), u(t)) = σ(A(t) x(t) + b(t))                      \quad\text{(2), (21)}

    \dot x(t) = σ_2(A_2(t)\, σ_1(A_1(t) x(t) + b_1(t)) + b_2(t))           \quad\text{(26) in continuous time}

on :math:`t ∈ [0, T]`, :math:`x(0) = x_0`, and training is the OCP (20)

.. math::
    \min_{u(\cdot)} J = w_s \int_0^T \ell(x(t), u(t))\,dt + w_f\, \ell_f(x(T)),
    \qquad \ell(x, u) = \frac1D \sum_i \ell_x(x^i, y^i) + r\|u\|^2

(the 2024 paper's (20a) is ``stage_weight=1, terminal_weight=γ``). The control u(t) is
parametrised on the grid :math:`t_k = kT/K`, k = 0..K, of K intervals of length h = T/K:

- ``"piecewise_constant"``: :math:`u(t) = u_k` on :math:`[t_k, t_{k+1})`. K control values, laid out
  exactly like the K layers of :class:`~turnpike.SingleLayerResNet` / :class:`~turnpike.TwoLayerResNet`
  (one flat θ, each field stacked over the intervals), so a trained ResNet's θ is a valid
  neural-ODE control and vice versa. Explicit Euler with step h is then the ResNet (1)/(26)
  with ``step_size=h``: :math:`x_{k+1} = x_k + h F(x_k, u_k)`.
- ``"piecewise_linear"``: :math:`u(t) = (1-s) u_k + s\,u_{k+1}`, :math:`s = (t - t_k)/h`, with K+1
  node values.

Numerics. One :func:`torchdiffeq.odeint` (or ``odeint_adjoint``) call integrates the
samples and, augmenting the state with :math:`c(t)`, :math:`\dot c = \frac{w_s}{D}\sum_i \ell_x(x^i(t), y^i)`,
the running state cost: :math:`c(T)` is the integral, in the same solve and to the
solver's accuracy. The input penalty is integrated in closed form, since u(t) is known:
:math:`\int_0^T\|u\|^2dt = h\sum_k \|u_k\|^2` (piecewise constant) or
:math:`\frac h3\sum_k(\|u_k\|^2 + u_k\cdot u_{k+1} + \|u_{k+1}\|^2)` (piecewise linear).
Fixed-grid methods step on the grid refined ``substeps`` times (so no step straddles a
control switch) with torchdiffeq's ``perturb`` flag, which evaluates the first stage of a
step just after and the last stage just before the step's end points: every stage of a
step sees the control of its own interval. Adaptive methods get the switching times as
``jump_t``. The adjoint method (``adjoint=True``) integrates the costate backwards on
the same grid and stores no intermediate activations: memory O(1) in the number of
steps, at the price of one more forward solve (and, on small problems, about 2-10× the
time of direct back-propagation; see ``benchmarks/node_adjoint.py``).

Equilibrium consistency (Def. 17): σ(0) = 0 for every activation in
:data:`turnpike.ACTIVATIONS`, so zero controls make every state an equilibrium of the ODE
and, with any of the Runge-Kutta discretisations, of the discrete system too.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from ._layout import ControlLayout
from ._protocol import FixedStepScheme, OwnGradient, Trajectories
from .. import _array, _checks
from ._activations import get_activation
from ._node_solve import ODE_METHODS, locate, solve
from ._rk import TABLEAUS, refine, scheme_objective, scheme_states
from ._resnet import SingleLayerResNet, TwoLayerResNet

PARAMETRISATIONS = ("piecewise_constant", "piecewise_linear")


#: most substeps ``step_bound`` may ask for in one interval
_MAX_BOUNDED_SUBSTEPS = 64


def _torch():
    import torch
    return torch


@dataclass(frozen=True, kw_only=True)
class NeuralODE(ControlLayout, Trajectories, OwnGradient, FixedStepScheme):
    r"""A neural ODE :math:`\dot x = F(x, u(t))` on [0, ``horizon``] with controls on ``depth`` intervals.

    Parameters (keyword-only)
    -------------------------
    state_dim : int
        n, the dimension of each sample's state.
    depth : int
        K, the number of control intervals (the ResNet's number of layers).
    horizon : float
        T > 0; the interval length is h = T / K.
    hidden_dim : int or None
        None for the single-layer field σ(A x + b) of (2); h for the two-layer field of (26).
    activations : str or tuple
        σ for the single-layer field (default "tanh"); the pair (σ1, σ2) for the two-layer
        one (default ("tanh", "identity")). Names from :data:`turnpike.ACTIVATIONS`.
    parametrisation : {"piecewise_constant", "piecewise_linear"}
        How θ defines u(t) (see the module docstring).
    method : str
        torchdiffeq method, one of :data:`ODE_METHODS` (default "rk4").
    substeps : int
        Fixed-grid methods: steps per control interval (default 1).
    step_bound : float or None
        Fixed-grid methods: keep :math:`h_s L_k ≤` ``step_bound`` in every interval, with L_k an upper
        bound of the field's Lipschitz constant in x there (‖A_k‖₂, or ‖A_{2,k}‖₂‖A_{1,k}‖₂; every
        offered activation has slope ≤ 1): an interval with large controls takes
        ⌈h L_k / step_bound⌉ substeps (at least ``substeps``, at most 64). An explicit scheme with h L ≫ 1 is
        inaccurate, and an optimiser trained on it learns controls that only work for the scheme.
    rtol, atol : float
        Tolerances of the adaptive methods.
    options : dict, optional
        Further torchdiffeq options (e.g. ``{"max_num_steps": 10_000}``); the grid options
        this class sets itself (``grid_constructor``, ``perturb``, ``jump_t``, ``step_size``) are refused.
    adjoint : bool
        Gradients by ``odeint_adjoint`` (continuous adjoint, O(1) memory in the steps) instead of
        back-propagation through the solver's operations.
    """

    state_dim: int
    depth: int
    horizon: float
    hidden_dim: int | None = None
    activations: object = None
    parametrisation: str = "piecewise_constant"
    method: str = "rk4"
    substeps: int = 1
    step_bound: float | None = None
    rtol: float = 1e-7
    atol: float = 1e-9
    options: object = None
    adjoint: bool = False
    fields: tuple = field(init=False, repr=False, compare=False, default=())

    def __post_init__(self):
        _checks.integer("state_dim", self.state_dim, minimum=1)
        _checks.integer("depth", self.depth, minimum=1)
        object.__setattr__(self, "horizon", _checks.real("horizon", self.horizon, minimum=0.0,
                                                         strict_min=True))
        n = self.state_dim
        if self.hidden_dim is None:
            acts = "tanh" if self.activations is None else self.activations
            if isinstance(acts, (tuple, list)):
                if len(acts) != 1:
                    _checks.fail("activations", "one activation name for the single-layer field "
                                                "(hidden_dim=None)", acts)
                acts = acts[0]
            get_activation(acts, "activations")
            object.__setattr__(self, "activations", acts)
            object.__setattr__(self, "fields", (("A", (n, n)), ("b", (n,))))
        else:
            h = _checks.integer("hidden_dim", self.hidden_dim, minimum=1)
            acts = ("tanh", "identity") if self.activations is None else self.activations
            acts = _checks.names("activations", acts, 2, "a pair (σ1, σ2) for the two-layer field (26)")
            for position, name in zip(("activations[0]", "activations[1]"), acts):
                get_activation(name, position)
            object.__setattr__(self, "activations", acts)
            object.__setattr__(self, "fields", (("A1", (h, n)), ("b1", (h,)), ("A2", (n, h)), ("b2", (n,))))
        _checks.choice("parametrisation", self.parametrisation, PARAMETRISATIONS)
        _checks.choice("method", self.method, ODE_METHODS)
        _checks.integer("substeps", self.substeps, minimum=1)
        if self.step_bound is not None:
            _checks.real("step_bound", self.step_bound, minimum=0.0, strict_min=True)
        _checks.real("rtol", self.rtol, minimum=0.0, strict_min=True)
        _checks.real("atol", self.atol, minimum=0.0, strict_min=True)
        if not isinstance(self.adjoint, bool):
            _checks.fail("adjoint", "True or False", self.adjoint)
        try:                 # a dict, or the sorted (key, value) pairs it is stored as
            options = dict(self.options or {})
        except (TypeError, ValueError):
            _checks.fail("options", "a dict of torchdiffeq options", self.options)
        reserved = sorted(set(options) & {"grid_constructor", "perturb", "jump_t", "step_size"})
        if reserved:
            _checks.fail("options", f"torchdiffeq options other than {reserved} (set by NeuralODE from "
                                    f"the control grid)", self.options)
        object.__setattr__(self, "options", tuple(sorted(options.items())))

    @property
    def layer_width(self) -> int:
        return self.state_dim if self.hidden_dim is None else self.hidden_dim

    def scheme_unavailable(self) -> str | None:
        """None when the exact adjoint of the fixed-step scheme applies (euler, midpoint, rk4 with
        piecewise-constant controls, back-propagation; :mod:`turnpike.systems._rk`), else why not.
        Otherwise J is evaluated in one torchdiffeq solve and differentiated through it (or by
        ``odeint_adjoint``): engine "system"."""
        if self.method not in TABLEAUS or self.parametrisation != "piecewise_constant" or self.adjoint:
            return (f"the scheme adjoint covers euler, midpoint and rk4 with piecewise-constant controls and "
                    f"adjoint=False, not method={self.method!r}, parametrisation={self.parametrisation!r}, "
                    f"adjoint={self.adjoint}")
        return None

    def scheme_objective(self, ocp, theta: np.ndarray, inputs: np.ndarray, labels: np.ndarray):
        """(J, ∇_θ J) of the fixed-step scheme by its exact adjoint (engine "scheme")."""
        reason = self.scheme_unavailable()
        if reason is not None:
            _checks.fail("engine", f"'system' ({reason})", "scheme")
        return scheme_objective(self, ocp, np.asarray(theta), np.asarray(inputs), labels)

    # --- conversions to and from the ResNet -------------------------------------------
    @classmethod
    def from_resnet(cls, resnet, **settings) -> "NeuralODE":
        """The neural ODE whose explicit Euler scheme is ``resnet`` (same θ layout).

        Horizon T = N τ with N the depth and τ the ResNet's ``step_size``; the method is
        "euler" unless ``settings`` says otherwise.
        """
        if not isinstance(resnet, (SingleLayerResNet, TwoLayerResNet)):
            _checks.fail("resnet", "a SingleLayerResNet or TwoLayerResNet", resnet)
        settings.setdefault("method", "euler")
        settings.setdefault("horizon", resnet.depth * resnet.step_size)
        if isinstance(resnet, SingleLayerResNet):
            return cls(state_dim=resnet.state_dim, depth=resnet.depth, activations=resnet.activation, **settings)
        return cls(state_dim=resnet.state_dim, depth=resnet.depth, hidden_dim=resnet.hidden_dim,
                   activations=resnet.activations, **settings)

    def to_resnet(self):
        """The ResNet (1)/(26) with ``step_size = h``: this ODE's explicit Euler scheme."""
        if self.parametrisation != "piecewise_constant":
            _checks.fail("parametrisation", "'piecewise_constant' (one control per layer) for a ResNet",
                         self.parametrisation)
        if self.hidden_dim is None:
            return SingleLayerResNet(state_dim=self.state_dim, depth=self.depth, activation=self.activations,
                                     step_size=self.step_size)
        return TwoLayerResNet(state_dim=self.state_dim, depth=self.depth, hidden_dim=self.hidden_dim,
                              activations=self.activations, step_size=self.step_size)

    # --- time grid and parameter layout ---------------------------------------------------
    @property
    def step_size(self) -> float:
        """h = T / K, the length of one control interval."""
        return self.horizon / self.depth

    @property
    def times(self) -> np.ndarray:
        """The grid t_k = k T / K, k = 0..K (t_K = T exactly)."""
        return np.array(self._nodes())

    def _nodes(self) -> list:
        return [self.horizon * k / self.depth for k in range(self.depth)] + [self.horizon]

    def dense_times(self, resolution: int = 16) -> np.ndarray:
        """The grid refined ``resolution`` times: K·resolution + 1 points including every t_k."""
        resolution = _checks.integer("resolution", resolution, minimum=1)
        return np.array(refine(self._nodes(), resolution))

    @property
    def num_controls(self) -> int:
        """Number of stored control values: K (piecewise constant) or K+1 (piecewise linear)."""
        return self.depth + (self.parametrisation == "piecewise_linear")

    def control_norm_at(self, theta, times) -> np.ndarray:
        """‖u(t)‖ at the given times, shape (len(times),)."""
        blocks = self.unpack(np.asarray(theta, dtype=np.float64))
        flat = np.concatenate([b.reshape(self.num_controls, -1) for b in blocks.values()], axis=1)
        times = _checks.finite_array("times", times, min_ndim=1)
        if times.size and (times.min() < 0 or times.max() > self.horizon * (1 + 1e-12)):
            _checks.fail("times", f"times in [0, T={self.horizon:g}]", times)
        nodes = self._nodes()
        out = []
        for t in times.reshape(-1):
            k, s = locate(self, nodes, float(t))
            u = flat[k] if s is None else (1.0 - s) * flat[k] + s * flat[k + 1]
            out.append(np.sqrt(u @ u))
        return np.asarray(out)

    def control_energy(self, theta):
        r""":math:`\int_0^T \|u(t)\|^2 dt` in closed form (numpy or torch, differentiable)."""
        blocks = self.unpack(theta)
        h = self.step_size
        if self.parametrisation == "piecewise_constant":
            return h * (theta * theta).sum()
        m = self.num_controls
        if isinstance(theta, np.ndarray):
            flat = np.concatenate([b.reshape(m, -1) for b in blocks.values()], axis=1)
        else:
            flat = _torch().cat([b.reshape(m, -1) for b in blocks.values()], dim=1)
        left, right = flat[:-1], flat[1:]
        return (h / 3.0) * ((left * left).sum() + (left * right).sum() + (right * right).sum())

    def truncate(self, theta, depth: int):
        """The first ``depth`` intervals, [0, depth·h], as a new (system, θ) pair."""
        depth = _checks.integer("depth", depth, minimum=1)
        if depth > self.depth:
            _checks.fail("depth", f"at most the system depth {self.depth}", depth)
        shorter = replace(self, depth=depth, horizon=self._nodes()[depth], options=dict(self.options))
        keep = shorter.num_controls
        blocks = {name: b[:keep] for name, b in self.unpack(theta).items()}
        return shorter, shorter.pack(blocks)

    # --- dynamics -----------------------------------------------------------------------
    def interval_substeps(self, theta) -> list:
        """Fixed-grid steps in each control interval: ``substeps``, raised by ``step_bound``."""
        if self.step_bound is None or ODE_METHODS[self.method] != "fixed":
            return [self.substeps] * self.depth
        torch = _torch()
        values = theta.detach().cpu() if torch.is_tensor(theta) else theta
        blocks = self.unpack(np.asarray(values, dtype=np.float64))
        matrices = [blocks["A"]] if self.hidden_dim is None else [blocks["A1"], blocks["A2"]]
        bound = np.prod([np.linalg.norm(m, ord=2, axis=(1, 2)) for m in matrices], axis=0)   # (num_controls,)
        if self.parametrisation == "piecewise_linear":      # u(t) between the two nodes of the interval
            bound = np.maximum(bound[:-1], bound[1:])
        # capped: a line search's trial controls can be huge, and the scheme's tape grows with the steps
        needed = np.ceil(np.minimum(self.step_size * bound / self.step_bound, _MAX_BOUNDED_SUBSTEPS))
        return [max(self.substeps, int(count)) for count in needed]

    def integrate(self, theta, x0, times=None, *, running_cost=None, labels=None, running_weight=1.0):
        r"""One ODE solve: the states at ``times`` and, optionally, the running cost.

        ``theta`` (P,) and ``x0`` (B, n) are torch tensors; ``times`` an increasing sequence
        in [0, T] starting at 0 (default: the grid t_0..t_K). With ``running_cost`` (a Cost of
        state terms) the state is augmented by
        :math:`\dot c = \frac{w}{B}\sum_i \ell_x(x^i(t), y^i)`, c(0) = 0, with w = ``running_weight``,
        and the result is (states (len(times), B, n), c at ``times`` (len(times),)); without it
        (states, None). Gradients flow to ``theta`` by back-propagation or, with
        ``adjoint=True``, by torchdiffeq's adjoint method.
        """
        return solve(self, theta, x0, self._check_times(times), running_cost=running_cost, labels=labels,
                     running_weight=running_weight)

    def _check_times(self, times) -> list:
        if times is None:
            return self._nodes()
        values = _checks.finite_array("times", times, ndim=1)
        if values.size < 1:
            _checks.fail("times", "at least one time", values)
        if values[0] != 0.0 or np.any(np.diff(values) <= 0) or values[-1] > self.horizon * (1 + 1e-12):
            _checks.fail("times", f"strictly increasing times in [0, T={self.horizon:g}] starting at 0",
                         values)
        return [float(v) for v in values]

    def rollout(self, theta, x0, times=None):
        """The states at ``times`` (default the grid t_0..t_K): shape (len(times), B, n).

        numpy in, numpy out (evaluated without gradients); torch tensors keep the graph.
        """
        torch = _torch()
        theta, x0 = _array.as_array("theta", theta), _array.as_array("x0", x0)
        if x0.ndim != 2 or x0.shape[1] != self.state_dim:
            raise ValueError(f"x0: expected shape (batch, {self.state_dim}), got {tuple(x0.shape)}")
        if isinstance(x0, np.ndarray) or isinstance(theta, np.ndarray):
            dtype = np.float32 if np.asarray(x0).dtype == np.float32 else np.float64
            checked = self._check_times(times)
            if len(checked) == 1:
                return np.asarray(x0, dtype=np.float64)[None].copy()
            theta, x0 = np.asarray(theta, dtype=dtype), np.asarray(x0, dtype=dtype)
            if self.scheme_unavailable() is None:   # the same steps as torchdiffeq's fixed grid, in numpy
                return scheme_states(self, theta, x0, checked)
            with torch.no_grad():
                states, _ = self.integrate(torch.as_tensor(theta), torch.as_tensor(x0), checked)
            return states.numpy()
        if len(self._check_times(times)) == 1:
            return x0[None]
        return self.integrate(theta, x0, times)[0]

    # --- the OCP (20) -------------------------------------------------------------------
    def objective_tensor(self, ocp, theta, x0, labels):
        r"""J of (20) as a torch scalar: :math:`w_s\int_0^T\ell\,dt + w_f\ell_f(x(T))`, one solve."""
        torch = _torch()
        stage = ocp.stage_state_cost
        running = stage if stage is not None and ocp.stage_weight > 0 else None
        states, cost = self.integrate(theta, x0, [0.0, self.horizon], running_cost=running, labels=labels,
                                      running_weight=ocp.stage_weight)
        value = torch.zeros((), dtype=x0.dtype)
        if running is not None:
            value = value + cost[-1]
        if ocp.terminal_cost is not None and ocp.terminal_weight > 0:
            labels_t = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
            value = value + ocp.terminal_weight * ocp.terminal_cost.state_per_sample(ocp.readout(states[-1]), labels_t).mean()
        r = ocp.input_penalty
        if r > 0:
            value = value + r * self.control_energy(theta)
        return value

    def objective(self, ocp, theta: np.ndarray, inputs: np.ndarray, labels: np.ndarray):
        """(J, ∇_θ J) for ``solve_ocp``: the engine of continuous-time systems (float64 or float32)."""
        torch = _torch()
        dtype = torch.float32 if np.asarray(theta).dtype == np.float32 else torch.float64
        theta_t = torch.tensor(np.asarray(theta), dtype=dtype, requires_grad=True)
        x0 = torch.as_tensor(np.asarray(inputs), dtype=dtype)
        value = self.objective_tensor(ocp, theta_t, x0, labels)
        if not value.requires_grad:   # no active term
            return float(value), np.zeros_like(theta)
        value.backward()
        return float(value.detach()), theta_t.grad.numpy().astype(np.asarray(theta).dtype, copy=False)
