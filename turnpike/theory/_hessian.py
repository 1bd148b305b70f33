r"""The Hessian of a training objective at a point: dense, matrix-free, and its spectral measures.

For a flat system the objective J(θ) is :func:`turnpike.objective_tensor`; its Hessian
:math:`H = ∇^2 J(θ)` (P×P for P controls) is built from Hessian-vector products
:math:`Hv = \frac{d}{dt} ∇J(θ + tv)|_{t=0}` (forward-over-reverse differentiation with
``torch.func``):

- :func:`hessian`: the dense matrix, all P products batched with ``vmap`` in chunks that
  bound memory (small networks: a few thousand controls);
- :func:`extreme_eigenvalues`: a few extreme eigenvalues by Lanczos iteration
  (``scipy.sparse.linalg.eigsh`` on the products), for networks too large for a dense H.

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
from .._objective import objective_tensor
from .._ocp import OCP

# memory for the forward tangents of one vmap chunk of Hessian-vector products
_CHUNK_BYTES = 256 * 2 ** 20


def _objective_function(ocp):
    _checks.instance("ocp", ocp, OCP, "a turnpike.OCP of a flat system")
    inputs = torch.as_tensor(ocp.inputs, dtype=torch.float64)
    return lambda theta: objective_tensor(ocp, theta, inputs, ocp.labels)


def _controls(ocp, theta) -> torch.Tensor:
    _checks.instance("ocp", ocp, OCP, "a turnpike.OCP of a flat system")
    theta = _checks.finite_array("theta", theta, ndim=1)
    if theta.shape != (ocp.system.parameter_count,):
        _checks.fail("theta", f"a flat vector of the system's {ocp.system.parameter_count} controls", theta)
    return torch.as_tensor(theta, dtype=torch.float64)


def _hessian_vector_product(objective, theta):
    """v -> H(θ) v as a vector-Jacobian product of the gradient (H is symmetric).

    Reverse over reverse: the gradient's graph is built once and every product is one
    backward pass through it (measured twice as fast as forward over reverse here).
    """
    _, pullback = torch.func.vjp(torch.func.grad(objective), theta)
    return lambda v: pullback(v)[0]


# stored tensors per layer and state, a generous count (pre-activations, activations, their tangents)
_TENSORS_PER_STATE = 8


def _chunk_size(ocp) -> int:
    """Products per vmap chunk: each one carries a tangent of every stored tensor of the rollout."""
    system = ocp.system
    per_product = 8 * ocp.inputs.size * (system.depth + 1) * _TENSORS_PER_STATE
    return int(max(1, min(system.parameter_count, _CHUNK_BYTES // per_product)))


def hessian(ocp, theta) -> np.ndarray:
    """The dense Hessian ∇²J(θ) (P, P) in float64, for θ in the flat layout of ``ocp.system``.

    Exact (automatic differentiation, no finite differences) and symmetrised against
    round-off. Memory and time grow as P²; past a few thousand controls use
    :func:`extreme_eigenvalues`.
    """
    objective = _objective_function(ocp)
    theta = _controls(ocp, theta)
    product = _hessian_vector_product(objective, theta)
    basis = torch.eye(theta.numel(), dtype=torch.float64)
    matrix = torch.func.vmap(product, chunk_size=_chunk_size(ocp))(basis).numpy()
    return 0.5 * (matrix + matrix.T)


def hessian_vector_product(ocp, theta, vector) -> np.ndarray:
    """H(θ) v for one vector ``v`` (P,), without forming H."""
    theta = _controls(ocp, theta)
    vector = _checks.finite_array("vector", vector, ndim=1)
    if vector.shape != tuple(theta.shape):
        _checks.fail("vector", f"a vector of {theta.numel()} entries like theta", vector)
    product = _hessian_vector_product(_objective_function(ocp), theta)
    return product(torch.as_tensor(vector)).numpy()


EIGENVALUE_SELECTIONS = {"largest_magnitude": "LM", "largest": "LA", "smallest": "SA", "both_ends": "BE"}


def extreme_eigenvalues(ocp, theta, *, count: int = 6, which: str = "both_ends", tolerance: float = 1e-10,
                        seed: int = 0) -> np.ndarray:
    """``count`` extreme eigenvalues of ∇²J(θ) by Lanczos iteration, ascending.

    ``which``: ``"largest_magnitude"``, ``"largest"`` (algebraic), ``"smallest"`` or
    ``"both_ends"`` (half from each end). Only Hessian-vector products are evaluated,
    each about the cost of two gradients.
    """
    from scipy.sparse.linalg import LinearOperator, eigsh

    _checks.choice("which", which, EIGENVALUE_SELECTIONS)
    theta = _controls(ocp, theta)
    size = theta.numel()
    count = _checks.integer("count", count, minimum=1)
    tolerance = _checks.real("tolerance", tolerance, minimum=0.0)
    seed = _checks.integer("seed", seed, minimum=0)
    if count >= size:
        _checks.fail("count", f"fewer eigenvalues than the {size} controls (use hessian() for all)", count)
    product = _hessian_vector_product(_objective_function(ocp), theta)
    operator = LinearOperator((size, size), dtype=np.float64,
                              matvec=lambda v: product(torch.as_tensor(np.ravel(v), dtype=torch.float64)).numpy())
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


def directional_derivatives(ocp, theta, direction, order: int) -> np.ndarray:
    r"""The derivatives :math:`\frac{d^k}{dt^k} J(θ + t v)|_{t=0}`, k = 1..``order``.

    Exact (nested automatic differentiation along the line), the independent check of a
    stationary point's order: at zero, an n-shortcut network's first ``n - 1`` vanish.
    """
    order = _checks.integer("order", order, minimum=1)
    objective = _objective_function(ocp)
    theta = _controls(ocp, theta)
    direction = torch.as_tensor(_checks.finite_array("direction", direction, ndim=1))
    if direction.shape != theta.shape:
        _checks.fail("direction", f"a vector of {theta.numel()} entries like theta", direction)
    t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    derivative, values = objective(theta + t * direction), []
    for _ in range(order):
        # a derivative that no longer depends on t (None, or no graph) differentiates to 0
        below = (torch.autograd.grad(derivative, t, create_graph=True, allow_unused=True)[0]
                 if derivative.requires_grad else None)
        derivative = below if below is not None else torch.zeros((), dtype=torch.float64)
        values.append(float(derivative.detach()))
    return np.array(values)
