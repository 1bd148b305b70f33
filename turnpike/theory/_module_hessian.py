r"""The Hessian at initialisation against depth, for convolutional ResNets (Demystifying ResNet, Sec. 4-5).

Theorem 2 of the Demystifying-ResNet paper concerns linear 2-shortcut networks at zero: there the
Hessian's condition number does not depend on depth, while a Kaiming-like initialisation of a deep
network has a Hessian whose extremes grow with it. :func:`initialisation_spectrum` measures the
analogue for the pre-activation convolutional ResNet (:func:`turnpike.preact_resnet`): the smallest
and largest eigenvalue of ∇²J at initialisation (Lanczos, :func:`extreme_eigenvalues`) for several
depths, with the residual branches' last convolutions zero-initialised ("zero": every block starts
as its skip, so the network's function does not depend on depth) against the plain Kaiming
initialisation ("kaiming"). With one seed both networks get the same draws and differ only in the
zeroed convolutions.

What holds exactly at a zero branch (W_2 = 0 the last convolution of block k, θ_k the branch's other
parameters): the network does not depend on θ_k, and ∂J/∂θ_k is linear in W_2, so the Hessian's rows
of θ_k vanish except against W_2 of the same block: H is a sum of a smooth part on (backbone, W_2's)
and blocks [[0, B_k], [B_kᵀ, 0]] that couple θ_k with W_2 (each B_k gives ± pairs of eigenvalues,
hence a negative smallest eigenvalue: the initialisation is a saddle, like the paper's zero).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from .. import _checks
from .._costs import Cost, CrossEntropy
from .._objective import checked_mode, objective_tensor, module_parameters_vector
from .._ocp import OCP
from ..systems._protocol import ModuleSystem
from ._hessian import extreme_eigenvalues

#: initialisations of :func:`initialisation_spectrum`: zero-initialised branches, or Kaiming's alone
INITIALISATIONS = ("zero", "kaiming")


@dataclass(frozen=True)
class InitialisationSpectrumRow:
    """The extreme Hessian eigenvalues of one network at initialisation."""

    initialisation: str        # "zero" or "kaiming"
    blocks_per_stage: int
    depth: int                 # N, the number of residual blocks
    seed: int
    parameters: int            # P
    smallest: float            # λ_min(∇²J)
    largest: float             # λ_max(∇²J)
    objective: float           # J at the initialisation

    @property
    def max_magnitude(self) -> float:
        """max |λ| = max(|λ_min|, |λ_max|)."""
        return max(abs(self.smallest), abs(self.largest))


@dataclass(frozen=True)
class InitialisationSpectrum:
    """Rows of :func:`initialisation_spectrum`, one per (initialisation, depth, seed), and its settings."""

    rows: tuple
    mode: str

    def select(self, initialisation: str, blocks_per_stage: Optional[int] = None) -> list:
        """The rows of one initialisation (and one depth)."""
        _checks.choice("initialisation", initialisation, INITIALISATIONS)
        return [r for r in self.rows if r.initialisation == initialisation
                and (blocks_per_stage is None or r.blocks_per_stage == blocks_per_stage)]

    def mean(self, initialisation: str, blocks_per_stage: int, field: str = "max_magnitude") -> float:
        """The mean over the seeds of ``field`` ("smallest", "largest", "max_magnitude", "objective")."""
        _checks.choice("field", field, ("smallest", "largest", "max_magnitude", "objective"))
        rows = self.select(initialisation, blocks_per_stage)
        if not rows:
            _checks.fail("blocks_per_stage", f"one of the depths measured for {initialisation!r}", blocks_per_stage)
        return float(np.mean([getattr(r, field) for r in rows]))

    def as_dict(self) -> dict:
        return {"mode": self.mode, "rows": [{**asdict(r), "max_magnitude": r.max_magnitude} for r in self.rows]}

    def format(self) -> str:
        """A text table: per initialisation and depth, mean λ_min, λ_max and max|λ| over the seeds."""
        lines = [f"{'init':8} {'blocks':>6} {'N':>4} {'P':>7} {'λ_min':>10} {'λ_max':>10} {'max|λ|':>10}"]
        for init in INITIALISATIONS:
            for blocks in sorted({r.blocks_per_stage for r in self.select(init)}):
                row = self.select(init, blocks)[0]
                lines.append(f"{init:8} {blocks:>6} {row.depth:>4} {row.parameters:>7} "
                             f"{self.mean(init, blocks, 'smallest'):>10.4g} {self.mean(init, blocks, 'largest'):>10.4g} "
                             f"{self.mean(init, blocks):>10.4g}")
        return "\n".join(lines)


def initialisation_spectrum(inputs, labels, *, mode, depths: Sequence[int] = (1, 2, 4), width: int = 4,
                            stages: int = 2, num_classes: Optional[int] = None,
                            initialisations: Sequence[str] = INITIALISATIONS, seeds: Sequence[int] = (0,),
                            terminal_cost: Optional[Cost] = None, stage_cost: Optional[Cost] = None,
                            factory: Optional[Callable] = None, tolerance: float = 1e-6) -> InitialisationSpectrum:
    r"""Extreme eigenvalues of ∇²J at initialisation against depth, zero-initialised branches vs Kaiming.

    For every depth d in ``depths`` (blocks per stage), initialisation and seed: a float64 network
    ``factory(d, zero_branches)`` (default: ``preact_resnet(widths=(width,) * stages,
    blocks_per_stage=d, num_classes=C, in_channels=inputs.shape[1], zero_branches=...)``, built under
    ``torch.manual_seed(seed)`` in a forked RNG, so the caller's RNG is untouched), the OCP
    ``OCP(net, inputs, labels, stage_cost, terminal_cost)`` (default terminal cost cross-entropy on C
    classes, C = ``num_classes`` or max label + 1), and λ_min, λ_max of ∇²J at the network's
    parameters by Lanczos (:func:`extreme_eigenvalues`, ``which="both_ends"``, relative ``tolerance``).

    ``inputs``: float images (B, channels, H, W), prepared as in training; ``mode``: "train"
    (BatchNorm by batch statistics, the training objective) or "eval" (running statistics: at
    initialisation mean 0 and variance 1, i.e. a network without normalisation). Cost: about 50
    Hessian-vector products per network (each ~2 gradients).
    """
    mode = checked_mode(mode)
    images = _checks.image_batch("inputs", inputs, (None, None, None))
    if not images.is_floating_point():
        _checks.fail("inputs", "floating-point images prepared as in training (e.g. images.double() / 255)", images)
    images = images.to(torch.float64)
    labels = _checks.labels("labels", labels, count=images.shape[0], num_classes=num_classes)
    if num_classes is None:
        num_classes = max(2, int(labels.max()) + 1)
    num_classes = _checks.integer("num_classes", num_classes, minimum=2)
    if isinstance(depths, (str, bytes)) or not isinstance(depths, Sequence) or not depths:
        _checks.fail("depths", "a non-empty sequence of blocks per stage", depths)
    depths = [_checks.integer("depths[]", d, minimum=1) for d in depths]
    if isinstance(initialisations, str) or not isinstance(initialisations, Sequence) or not initialisations:
        _checks.fail("initialisations", f"a non-empty sequence of {list(INITIALISATIONS)}", initialisations)
    for init in initialisations:
        _checks.choice("initialisations[]", init, INITIALISATIONS)
    if isinstance(seeds, (str, bytes)) or not isinstance(seeds, Sequence) or not seeds:
        _checks.fail("seeds", "a non-empty sequence of integer seeds", seeds)
    seeds = [_checks.integer("seeds[]", s, minimum=0) for s in seeds]
    tolerance = _checks.real("tolerance", tolerance, minimum=0.0)
    if terminal_cost is None:
        terminal_cost = CrossEntropy(num_classes=num_classes)
    if factory is None:
        width = _checks.integer("width", width, minimum=1)
        stages = _checks.integer("stages", stages, minimum=1)
        factory = _homogeneous_factory(width, stages, num_classes, images.shape[1], stage_cost)
    _checks.function("factory", factory, "a callable factory(blocks_per_stage, zero_branches) -> module system",
                     optional=False)

    rows = []
    for init in initialisations:
        for blocks in depths:
            for seed in seeds:
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(seed)
                    net = factory(blocks, init == "zero")
                if not isinstance(net, ModuleSystem):
                    _checks.fail("factory", "a callable returning a module system (e.g. turnpike.preact_resnet(...))", net)
                ocp = OCP(net, images, labels, stage_cost=stage_cost, terminal_cost=terminal_cost)
                theta = module_parameters_vector(net)
                value = float(objective_tensor(ocp, theta, mode=mode).detach())
                smallest, largest = extreme_eigenvalues(ocp, count=2, which="both_ends", tolerance=tolerance,
                                                        seed=seed, mode=mode)
                rows.append(InitialisationSpectrumRow(init, blocks, net.depth, seed, theta.numel(),
                                                      float(smallest), float(largest), value))
    return InitialisationSpectrum(tuple(rows), mode)


def _homogeneous_factory(width, stages, num_classes, in_channels, stage_cost):
    from ..systems import preact_resnet

    exits = "ws" if stage_cost is not None and stage_cost.state_terms else "standard"

    def build(blocks_per_stage, zero_branches):
        return preact_resnet(widths=(width,) * stages, blocks_per_stage=blocks_per_stage, num_classes=num_classes,
                             in_channels=in_channels, exits=exits, zero_branches=zero_branches).double()
    return build
