r"""The Hessian of a training objective at a point: dense, matrix-free, and its spectral measures.

The objective J(θ) is :func:`turnpike.objective_tensor` of the OCP, for a flat system (θ its flat
control vector) or a module system such as :func:`turnpike.preact_resnet` or a
:func:`turnpike.residual_network` (θ the flat vector of its trainable parameters in
``module.parameters()`` order, :func:`module_parameters_vector`; J the module backend's objective,
exits' and output's losses plus r‖w‖², on one batch). Its Hessian :math:`H = ∇^2 J(θ)` (P×P for P
parameters) is built from Hessian-vector products :math:`Hv = ∇_θ\langle ∇J(θ), v\rangle`
(reverse over reverse with ``torch.func``):

- :func:`hessian`: the dense matrix, all P products batched with ``vmap`` in chunks that
  bound memory (small networks: at most ``DENSE_LIMIT`` = 20,000 parameters);
- :func:`extreme_eigenvalues`: a few extreme eigenvalues by Lanczos iteration
  (``scipy.sparse.linalg.eigsh`` on the products), for networks too large for a dense H.

Module systems (BatchNorm): every function takes ``mode`` = ``"train"`` (each BatchNorm normalises
by the batch's statistics, which then depend on θ: the objective that training differentiates) or
``"eval"`` (the running statistics, constants); there is no default. The running statistics are
never updated (the objective runs on copies of the buffers), and each submodule's train/eval flag
is restored. The analysis runs in float64 whatever the module's dtype (its parameters and buffers
are copied to float64; a float64 module is recommended, e.g. ``net.double()``, so that the θ it
holds is the point analysed without rounding). θ defaults to the module's current parameters
(``theta=None``); flat systems hold no θ and need one. ``inputs``/``labels`` default to the OCP's
data; images must be floating point, prepared as in training (uint8 images are refused).

:class:`HessianSpectrum` holds a full spectrum and the measures of the Demystifying-ResNet
paper: the condition number max|λ|/min|λ| (H is indefinite, so magnitudes), the robust
condition number max|λ| / |λ|_(0.1) with |λ|_(0.1) the 10th percentile of |λ| (App. B:
min|λ| is unstable), and the index, the share of negative eigenvalues.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .. import _checks
from .._objective import module_objective_function, module_parameters_vector, objective_tensor, trainable_parameters
from .._ocp import OCP
from ..systems._protocol import FlatSystem, ModuleSystem

# memory for the forward tangents of one vmap chunk of Hessian-vector products
_CHUNK_BYTES = 256 * 2 ** 20

#: most parameters :func:`hessian` forms a dense matrix for (20,000² float64 entries are 3.2 GB)
DENSE_LIMIT = 20_000


@dataclass(frozen=True)
class _Point:
    """J as a function of θ, the point θ (float64, on the system's device) and the system kind."""

    objective: object
    theta: torch.Tensor
    module: bool
    input_size: int = 0     # entries of a flat system's inputs (D·n): the memory of its rollout

    @property
    def size(self) -> int:
        return self.theta.numel()


def _point(ocp, theta, mode, inputs, labels) -> _Point:
    """The objective and the point of an OCP, arguments checked (see the module docstring)."""
    _checks.instance("ocp", ocp, OCP, "a turnpike.OCP of a flat or a module system")
    system = ocp.system
    if isinstance(system, ModuleSystem):
        parameters = trainable_parameters(system)
        if not parameters:
            _checks.fail("ocp.system", "a module with trainable parameters", system)
        device = parameters[0][1].device
        objective = module_objective_function(ocp, inputs, labels, mode=mode, dtype=torch.float64, device=device)
        size = sum(p.numel() for _, p in parameters)
        if theta is None:
            theta = module_parameters_vector(system)
        else:
            theta = _checks.finite_array("theta", theta, ndim=1)
            if theta.shape != (size,):
                _checks.fail("theta", f"a flat vector of the module's {size} trainable parameters "
                                      f"(module_parameters_vector(system); None for the current ones)", theta)
            theta = torch.as_tensor(theta, dtype=torch.float64, device=device)
        return _Point(objective, theta, True)
    if not isinstance(system, FlatSystem):
        _checks.fail("ocp.system", "a flat system or a module system", system)
    if mode is not None:
        _checks.fail("mode", "None for a flat system (it has no batch statistics)", mode)
    if theta is None:
        _checks.fail("theta", f"a flat vector of the system's {system.parameter_count} controls (a flat system "
                              f"holds none)", theta)
    theta = _checks.finite_array("theta", theta, ndim=1)
    if theta.shape != (system.parameter_count,):
        _checks.fail("theta", f"a flat vector of the system's {system.parameter_count} controls", theta)
    if inputs is None:
        inputs = torch.as_tensor(ocp.inputs, dtype=torch.float64)
    else:
        inputs = _checks.finite_array("inputs", inputs, ndim=2)
        if inputs.shape[1] != system.state_dim:
            _checks.fail("inputs", f"shape (D, {system.state_dim}) to match the system's state_dim", inputs)
        inputs = torch.as_tensor(inputs)
    labels = _checks.labels("ocp.labels" if labels is None else "labels", ocp.labels if labels is None else labels,
                            count=inputs.shape[0], num_classes=ocp.num_classes)
    return _Point(lambda t: objective_tensor(ocp, t, inputs, labels), torch.as_tensor(theta, dtype=torch.float64),
                  False, int(inputs.numel()))


def _vector(name: str, value, point: _Point) -> torch.Tensor:
    """A direction in θ's space: (P,) finite, as float64 on θ's device."""
    if value is None:
        _checks.fail(name, f"a vector of {point.size} entries like theta", value)
    value = _checks.finite_array(name, value, ndim=1)
    if value.shape != tuple(point.theta.shape):
        _checks.fail(name, f"a vector of {point.size} entries like theta", value)
    return torch.as_tensor(value, dtype=torch.float64, device=point.theta.device)


def _hessian_vector_product(objective, theta):
    """v -> H(θ) v as a vector-Jacobian product of the gradient (H is symmetric).

    Reverse over reverse: the gradient's graph is built once and every product is one
    backward pass through it (measured twice as fast as forward over reverse here).
    """
    _, pullback = torch.func.vjp(torch.func.grad(objective), theta)
    return lambda v: pullback(v)[0]


# stored tensors per layer and state, a generous count (pre-activations, activations, their tangents)
_TENSORS_PER_STATE = 8
# a product's tangents per byte the forward pass saves for its backward (the gradient's graph and its tangent)
_TANGENTS_PER_SAVED_BYTE = 4


def _chunk_size(ocp, point: _Point) -> int:
    """Products per vmap chunk: each one carries a tangent of every stored tensor of the forward pass."""
    if point.module:
        saved = [0]

        def pack(tensor):
            saved[0] += tensor.numel() * tensor.element_size()
            return tensor
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            point.objective(point.theta.detach().clone().requires_grad_())
        per_product = _TANGENTS_PER_SAVED_BYTE * max(saved[0], 1)
    else:
        per_product = 8 * point.input_size * (ocp.system.depth + 1) * _TENSORS_PER_STATE
    return int(max(1, min(point.size, _CHUNK_BYTES // per_product)))


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().cpu().numpy()


def hessian(ocp, theta=None, *, mode=None, inputs=None, labels=None, max_parameters: int = DENSE_LIMIT) -> np.ndarray:
    """The dense Hessian ∇²J(θ) (P, P) in float64.

    θ in the flat layout of ``ocp.system`` (a module system: its trainable parameters in
    ``parameters()`` order, default its current ones; ``mode`` "train" or "eval" required; see the
    module docstring). Exact (automatic differentiation, no finite differences) and symmetrised
    against round-off. Memory and time grow as P²: more than ``max_parameters`` (default 20,000)
    are refused; use :func:`extreme_eigenvalues` or :func:`hessian_vector_product` there.
    """
    point = _point(ocp, theta, mode, inputs, labels)
    max_parameters = _checks.integer("max_parameters", max_parameters, minimum=1)
    if point.size > max_parameters:
        _checks.fail("ocp.system", f"at most max_parameters={max_parameters} parameters for a dense Hessian "
                                   f"(P² float64 entries; use extreme_eigenvalues or hessian_vector_product)",
                     f"{point.size} parameters")
    product = _hessian_vector_product(point.objective, point.theta)
    basis = torch.eye(point.size, dtype=torch.float64, device=point.theta.device)
    matrix = _numpy(torch.func.vmap(product, chunk_size=_chunk_size(ocp, point))(basis))
    return 0.5 * (matrix + matrix.T)


def hessian_vector_product(ocp, theta=None, vector=None, *, mode=None, inputs=None, labels=None) -> np.ndarray:
    """H(θ) v for one vector ``v`` (P,), without forming H (θ, ``mode``: as :func:`hessian`)."""
    point = _point(ocp, theta, mode, inputs, labels)
    vector = _vector("vector", vector, point)
    return _numpy(_hessian_vector_product(point.objective, point.theta)(vector))


EIGENVALUE_SELECTIONS = {"largest_magnitude": "LM", "largest": "LA", "smallest": "SA", "both_ends": "BE"}


def extreme_eigenvalues(ocp, theta=None, *, count: int = 6, which: str = "both_ends", tolerance: float = 1e-10,
                        seed: int = 0, mode=None, inputs=None, labels=None) -> np.ndarray:
    """``count`` extreme eigenvalues of ∇²J(θ) by Lanczos iteration, ascending.

    ``which``: ``"largest_magnitude"``, ``"largest"`` (algebraic), ``"smallest"`` or
    ``"both_ends"`` (half from each end, the extra one from the top for an odd count). Only
    Hessian-vector products are evaluated, each about the cost of two gradients. θ, ``mode``,
    ``inputs``, ``labels``: as :func:`hessian`.
    """
    from scipy.sparse.linalg import LinearOperator, eigsh

    _checks.choice("which", which, EIGENVALUE_SELECTIONS)
    count = _checks.integer("count", count, minimum=1)
    tolerance = _checks.real("tolerance", tolerance, minimum=0.0)
    seed = _checks.integer("seed", seed, minimum=0)
    point = _point(ocp, theta, mode, inputs, labels)
    size = point.size
    if count >= size:
        _checks.fail("count", f"fewer eigenvalues than the {size} parameters (use hessian() for all)", count)
    product = _hessian_vector_product(point.objective, point.theta)
    device = point.theta.device
    operator = LinearOperator((size, size), dtype=np.float64, matvec=lambda v: _numpy(product(
        torch.as_tensor(np.ravel(v), dtype=torch.float64, device=device))))
    start = np.random.default_rng(seed).normal(size=size)    # a fixed start makes runs reproducible
    values = eigsh(operator, k=count, which=EIGENVALUE_SELECTIONS[which], tol=tolerance, v0=start,
                   return_eigenvectors=False)
    return np.sort(values)


@dataclass(frozen=True)
class HessianSpectrum:
    """All eigenvalues of a Hessian (ascending) and the measures the paper plots."""

    eigenvalues: np.ndarray

    def __post_init__(self):
        values = _checks.finite_array("eigenvalues", self.eigenvalues, ndim=1, nonempty=True)
        object.__setattr__(self, "eigenvalues", values)

    @classmethod
    def of(cls, matrix) -> "HessianSpectrum":
        """The spectrum of a symmetric matrix (e.g. :func:`hessian`'s)."""
        matrix = _checks.finite_array("matrix", matrix, ndim=2)
        if matrix.shape[0] != matrix.shape[1] or matrix.size == 0:
            _checks.fail("matrix", "a non-empty square matrix", matrix)
        scale = float(np.abs(matrix).max())
        if float(np.abs(matrix - matrix.T).max()) > 1e-6 * scale:
            _checks.fail("matrix", "a symmetric matrix (symmetrise it: (H + H.T) / 2)", matrix)
        # torch's LAPACK follows torch.set_num_threads: on a busy 2-core machine one thread takes
        # 1.7 s for 3,200 × 3,200 where numpy's and scipy's thread pools spin for 10-25 s
        return cls(torch.linalg.eigvalsh(torch.from_numpy(matrix)).numpy())

    @property
    def magnitudes(self) -> np.ndarray:
        return np.abs(self.eigenvalues)

    @property
    def max_magnitude(self) -> float:
        """max |λ|."""
        return float(self.magnitudes.max())

    def magnitude_percentile(self, fraction: float = 0.1) -> float:
        """|λ|_(fraction): the ``fraction`` quantile of |λ| (App. B uses 0.1)."""
        fraction = _checks.real("fraction", fraction, minimum=0.0, maximum=1.0)
        return float(np.quantile(self.magnitudes, fraction))

    @property
    def condition_number(self) -> float:
        """max|λ| / min|λ| (inf for a singular Hessian)."""
        smallest = self.magnitudes.min()
        return float(self.max_magnitude / smallest) if smallest > 0 else float("inf")

    @property
    def robust_condition_number(self) -> float:
        """max|λ| / |λ|_(0.1), the paper's stand-in for the unstable min|λ| (App. B)."""
        low = self.magnitude_percentile(0.1)
        return float(self.max_magnitude / low) if low > 0 else float("inf")

    @property
    def index(self) -> float:
        """Share of negative eigenvalues; |λ| below 1e-10·max|λ| counts as zero (round-off)."""
        threshold = 1e-10 * self.max_magnitude
        return float(np.mean(self.eigenvalues < -threshold))

    def summary(self) -> dict:
        return {"max_abs": self.max_magnitude, "abs_p10": self.magnitude_percentile(0.1),
                "condition_number": self.condition_number, "robust_condition_number": self.robust_condition_number,
                "index": self.index, "size": int(self.eigenvalues.size)}


def directional_derivatives(ocp, theta=None, direction=None, order=None, *, mode=None, inputs=None,
                            labels=None) -> np.ndarray:
    r"""The derivatives :math:`\frac{d^k}{dt^k} J(θ + t v)|_{t=0}`, k = 1..``order``, v = ``direction``.

    Exact (nested automatic differentiation along the line), the independent check of a
    stationary point's order: at zero, an n-shortcut network's first ``n - 1`` vanish.
    θ, ``mode``, ``inputs``, ``labels``: as :func:`hessian`.
    """
    order = _checks.integer("order", order, minimum=1)
    point = _point(ocp, theta, mode, inputs, labels)
    direction = _vector("direction", direction, point)
    t = torch.zeros((), dtype=torch.float64, device=point.theta.device, requires_grad=True)
    derivative, values = point.objective(point.theta + t * direction), []
    for _ in range(order):
        # a derivative that no longer depends on t (None, or no graph) differentiates to 0
        below = (torch.autograd.grad(derivative, t, create_graph=True, allow_unused=True)[0]
                 if derivative.requires_grad else None)
        derivative = below if below is not None else torch.zeros((), dtype=torch.float64)
        values.append(float(derivative.detach()))
    return np.array(values)
