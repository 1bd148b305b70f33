r"""Stage and terminal costs, composable with ``+`` and scalar ``*``.

A cost is a weighted sum of *state terms* (functions of a layer's states, averaged
over the data set: the empirical loss of the 2024 paper, Sec. 2.1) and *input terms*
(functions of a layer's controls). Every term gives its per-sample value and its
closed-form gradient with respect to the state, for numpy arrays and torch tensors;
states may carry leading layer axes, ``x`` of shape (..., B, n) with labels (B,), so
that the costs of all layers are evaluated in one call.

Costs act on *logits*: what the system's readout gives at a layer (the first C state
components of the MLP systems, Remark 4 of the 2024 paper; the intermediate output E_k of a
convolutional ResNet, eq. (2) of the 2025 paper). Every state term has a ``width``, the
size of the last axis it reads, and refuses anything else: a wider state is an error, never
a silent slice (use ``ocp.readout(states)``).

Examples
--------
The 2024 paper's stage cost (17) and the 2025 paper's γ-weighted stage loss::

    SoftCrossEntropy(num_classes=2, p_d=0.95) + InputPenalty(0.005)
    0.02 * CrossEntropy(num_classes=10) + InputPenalty(5e-4)
"""
from __future__ import annotations

import math

import numpy as np

from . import _array, _checks


class Cost:
    """A weighted sum of state and input terms: ``terms`` is a tuple of (weight, term)."""

    def __init__(self, terms):
        if not isinstance(terms, (tuple, list)) or not all(
                isinstance(pair, tuple) and len(pair) == 2 and isinstance(pair[1], _Term) for pair in terms):
            _checks.fail("terms", "a tuple of (weight, term) pairs (or compose terms with + and *)", terms)
        self.terms = tuple(terms)

    # --- composition --------------------------------------------------------------
    def __add__(self, other):
        if not isinstance(other, Cost):
            return NotImplemented
        return Cost(self.terms + other.terms)

    def __mul__(self, scale):
        scale = _checks.real("cost weight", scale, minimum=0.0)
        return Cost(tuple((scale * w, t) for w, t in self.terms))

    __rmul__ = __mul__

    def __repr__(self) -> str:
        return " + ".join(f"{w:g}*{t!r}" if w != 1 else repr(t) for w, t in self.terms)

    @property
    def state_terms(self):
        return tuple((w, t) for w, t in self.terms if not isinstance(t, InputPenalty))

    @property
    def input_terms(self):
        return tuple((w, t) for w, t in self.terms if isinstance(t, InputPenalty))

    def find(self, kind):
        """The first term of the given class, or None."""
        return next((t for _, t in self.terms if isinstance(t, kind)), None)

    # --- evaluation ---------------------------------------------------------------
    # A composite cost reads logits of its ``logit_width`` (the widest term). For the MLP
    # systems the readout of width w holds the readout of a narrower width w' as its first
    # w' components (Remark 4), so a classification term next to a full-state tracking term
    # reads the leading ``term.width`` logits; a single term never slices (see _Term).
    def _term_logits(self, x, term):
        if x.shape[-1] != self.logit_width:
            raise ValueError(f"x: expected logits of shape (..., {self.logit_width}) for {self!r} (the "
                             f"system's readout, e.g. ocp.readout(states)), got shape {tuple(x.shape)}")
        return x if term.width == x.shape[-1] else x[..., :term.width]

    def state_per_sample(self, x, labels):
        """Σ w_i ℓ_i(x, y) per sample: shape x.shape[:-1]."""
        total = 0.0
        for weight, term in self.state_terms:
            total = total + weight * term._values(self._term_logits(x, term), labels)
        return total

    def state_gradient(self, x, labels):
        """∂/∂x of :meth:`state_per_sample`, per sample: shape x.shape."""
        return self.state_per_sample_and_gradient(x, labels)[1]

    def state_per_sample_and_gradient(self, x, labels):
        """Both at once, sharing the softmax: (values x.shape[:-1], gradients x.shape)."""
        value, grad = 0.0, None
        for weight, term in self.state_terms:
            v, g = term.per_sample_and_gradient(self._term_logits(x, term), labels)
            value = value + weight * v
            if g.shape[-1] != x.shape[-1]:        # a narrower term: zero gradient on the other logits
                wide = _array.zeros_like(x)
                wide[..., :term.width] = g
                g = wide
            grad = weight * g if grad is None else grad + weight * g
        return value, grad

    def input_coefficient(self) -> float:
        """The total r of the input penalty r‖u‖² in this cost (0 if none)."""
        return float(sum(w * t.weight for w, t in self.input_terms))

    def check_state_dim(self, state_dim: int, argument: str) -> None:
        for _, term in self.state_terms:
            term.check_state_dim(state_dim, argument)

    @property
    def logit_width(self) -> int | None:
        """The number of logits this cost reads: its widest state term's (None without state terms)."""
        return max((term.width for _, term in self.state_terms), default=None)


class _Term(Cost):
    """A single cost term; it is a Cost with weight 1 so that terms compose directly.

    What an OCP checks its data and system against, declared by every term (no attribute probes):
    ``width`` the logits a state term reads (None for the input penalty), ``num_classes`` the classes
    of a classification loss and ``label_count`` the labels a term indexes (None when it indexes none).
    """

    width: int | None = None
    num_classes: int | None = None

    def __init__(self):
        super().__init__(((1.0, self),))

    @property
    def label_count(self) -> int | None:
        """Labels must lie in 0..label_count-1 (None: the term does not read labels)."""
        return self.num_classes

    def per_sample(self, x, labels):
        """ℓ(x_i, y_i) per sample: shape x.shape[:-1]."""
        return self._values(*self._checked(x, labels))

    def gradient(self, x, labels):
        """∂ℓ(x_i, y_i)/∂x_i per sample: shape x.shape."""
        return self.per_sample_and_gradient(*self._checked(x, labels))[1]

    def _values(self, x, labels):
        """:meth:`per_sample` without the checks of its arguments (the solvers' own calls, every step)."""
        return self.per_sample_and_gradient(x, labels, gradient=False)[0]

    def _checked(self, x, labels):
        """The public calls' arguments: logits (..., B, width), numpy or torch, and B labels in range."""
        if not hasattr(x, "shape"):
            try:
                x = np.asarray(x, dtype=np.float64)
            except (TypeError, ValueError):
                _checks.fail("x", f"logits of shape (..., B, {self.width})", x)
        if x.ndim < 2:
            _checks.fail("x", f"logits of shape (..., B, {self.width}) (a batch of B samples)", x)
        self._check_logits(x)
        if self.label_count is not None:
            labels = _checks.labels("labels", labels, count=x.shape[-2], num_classes=self.label_count)
        return x, labels

    def _check_logits(self, x):
        if x.ndim < 1 or x.shape[-1] != self.width:
            raise ValueError(f"x: expected logits of shape (..., {self.width}) for {self!r} (the system's "
                             f"readout, e.g. ocp.readout(states)), got shape {tuple(x.shape)}")

    def check_state_dim(self, state_dim: int, argument: str) -> None:
        needed = self.width
        if needed is not None and state_dim < needed:
            raise ValueError(f"{argument}: expected a cost the system's state (state_dim={state_dim}) can read "
                             f"out, got {self!r}, which needs a state with at least {needed} components")


class SoftCrossEntropy(_Term):
    r"""Soft cross-entropy with offset, eq. (13) of the 2024 paper.

    .. math::
        \tilde\ell_f(x, y) = -\sum_{i=1}^{C} \tilde q(i|y)\log p(i|x) + \sum_i \tilde q(i|y)\log\tilde q(i|y)
                           = \mathrm{KL}(\tilde q(y)\,\|\,\mathrm{softmax}(x)),

    with smoothed targets :math:`\tilde q(y|y) = p_d`, :math:`\tilde q(i|y) = (1-p_d)/(C-1)`.
    Its minimum is exactly 0, attained on the line
    :math:`X^*_y = \{x: x_c = x_y + δ\ \forall c \ne y\}`, :math:`δ = -\log((C-1)p_d/(1-p_d))`
    (Lemma 3). Requires :math:`1/C < p_d < 1` so that the correct class is the most likely one
    and the minimiser is finite. Gradient: :math:`p(x) - \tilde q(y)`.
    """

    def __init__(self, *, num_classes: int, p_d: float):
        self.num_classes = self.width = _checks.integer("num_classes", num_classes, minimum=2)
        self.p_d = _checks.real("p_d", p_d, minimum=1.0 / self.num_classes, maximum=1.0,
                                strict_min=True, strict_max=True)
        super().__init__()

    def __repr__(self) -> str:
        return f"SoftCrossEntropy(num_classes={self.num_classes}, p_d={self.p_d:g})"

    @property
    def off_target(self) -> float:
        """Target probability of each wrong class, (1 - p_d)/(C - 1)."""
        return (1.0 - self.p_d) / (self.num_classes - 1)

    @property
    def offset(self) -> float:
        """δ = -log((C-1) p_d / (1-p_d)): the minimiser line has x_c = x_y + δ (Lemma 3)."""
        return -math.log((self.num_classes - 1) * self.p_d / (1.0 - self.p_d))

    @property
    def target_entropy(self) -> float:
        """H(q̃, q̃) = -Σ q̃ log q̃; the loss is the cross-entropy minus this."""
        q = self.off_target
        return -(self.p_d * math.log(self.p_d) + (self.num_classes - 1) * q * math.log(q))

    def targets(self, labels, like):
        """Smoothed target distributions q̃(y), shape (B, C)."""
        hot = _array.one_hot(labels, self.num_classes, like)
        return self.off_target + (self.p_d - self.off_target) * hot

    def per_sample_and_gradient(self, x, labels, gradient=True):
        self._check_logits(x)
        value, grad = _array.cross_entropy(x, self.targets(labels, x), gradient=gradient)
        return value - self.target_entropy, grad


class CrossEntropy(_Term):
    r"""Cross-entropy with one-hot targets, eq. (7): :math:`\ell_f(x, y) = -\log p(y|x)`.

    Its infimum 0 is not attained (Lemma 2): minimisers lie at infinity, which is why
    it gives no strict dissipativity with a K∞ bound. Gradient: :math:`p(x) - e_y`.
    """

    def __init__(self, *, num_classes: int):
        self.num_classes = self.width = _checks.integer("num_classes", num_classes, minimum=2)
        super().__init__()

    def __repr__(self) -> str:
        return f"CrossEntropy(num_classes={self.num_classes})"

    def per_sample_and_gradient(self, x, labels, gradient=True):
        self._check_logits(x)
        return _array.cross_entropy(x, _array.one_hot(labels, self.num_classes, x), gradient=gradient)


class L2Tracking(_Term):
    r"""Quadratic tracking :math:`\ell(x) = \|x - \bar x\|^2` of a designed steady state.

    ``target`` is one state (n,) for all samples, or a table (C, n) of one target per
    class, indexed by the labels (the setting of Faulwasser et al. 2021, Table 1 row 1).
    Gradient: :math:`2(x - \bar x)`.
    """

    def __init__(self, target):
        target = _checks.finite_array("target", target, nonempty=True)
        if target.ndim not in (1, 2):
            _checks.fail("target", "a state (n,) or a per-class table (C, n)", target)
        self.target = target
        self.state_dim = self.width = target.shape[-1]
        super().__init__()

    def __repr__(self) -> str:
        return f"L2Tracking(target shape {self.target.shape})"

    @property
    def label_count(self) -> int | None:
        """A per-class table (C, n) is indexed by the labels: C of them; one target reads none."""
        return self.target.shape[0] if self.target.ndim == 2 else None

    def check_state_dim(self, state_dim: int, argument: str) -> None:
        if state_dim != self.state_dim:
            raise ValueError(f"{argument}: expected a cost on states of the system's state_dim={state_dim}, "
                             f"got {self!r}, which tracks states of dimension {self.state_dim}")

    def _difference(self, x, labels):
        target = self.target if self.target.ndim == 1 else self.target[np.asarray(labels)]
        if not _array.is_numpy(x):
            import torch
            target = torch.as_tensor(target, dtype=x.dtype, device=x.device)
        return x - target

    def per_sample_and_gradient(self, x, labels, gradient=True):
        self._check_logits(x)
        d = self._difference(x, labels)
        return _array.sum_last(d * d), (2.0 * d if gradient else None)


class InputPenalty(_Term):
    r"""Input penalty (weight decay) :math:`r\|u_k\|^2` on each layer's controls."""

    def __init__(self, weight: float):
        self.weight = _checks.real("weight", weight, minimum=0.0)
        super().__init__()

    def __repr__(self) -> str:
        return f"InputPenalty({self.weight:g})"
