"""Control systems: the layer maps a turnpike OCP is posed on.

- flat systems (one control vector θ): :class:`SingleLayerResNet` (architecture (1)),
  :class:`TwoLayerResNet` (architecture (26)), :class:`NeuralODE` (OCP (20));
- :class:`ShortcutNetwork`: the n-shortcut networks (and plain networks) of the Demystifying-ResNet
  paper, Def. 1–2;
- module systems (a ``torch.nn.Module``): :class:`ResidualNetwork`, any residual network with an exit after
  every block; :func:`preact_resnet` builds the convolutional ResNet of the 2025 stage-cost paper as one.

:class:`System`, :class:`FlatSystem` and :class:`ModuleSystem` are the protocols they implement; a flat
system's capabilities (:class:`LayerMapSystem`, :class:`BufferedLayerMap`, :class:`Trajectories`,
:class:`DifferentiableObjective`, :class:`OwnGradient`, :class:`FixedStepScheme`) say which gradient
engines can train it.
"""
from ._node import NeuralODE
from ._protocol import (BufferedLayerMap, DifferentiableObjective, FixedStepScheme, FlatSystem, LayerMapSystem,
                        ModuleSystem, OwnGradient, SavedLayout, System, Trajectories)
from ._resnet import SingleLayerResNet, TwoLayerResNet
from ._shortcut import ShortcutNetwork
from ._layers import GlobalAveragePool, Subsample
from ._preact import STANDARD_WIDTHS, preact_resnet
from ._residual import ResidualBlock, ResidualNetwork
from ._residual_adapters import residual_network
from ._residual_parts import EXIT_VARIANTS

__all__ = ["BufferedLayerMap", "DifferentiableObjective", "EXIT_VARIANTS", "FixedStepScheme", "FlatSystem",
           "LayerMapSystem", "ModuleSystem", "NeuralODE", "OwnGradient", "SavedLayout", "ShortcutNetwork",
           "SingleLayerResNet", "System", "Trajectories", "TwoLayerResNet"]
__all__ += ["GlobalAveragePool", "ResidualBlock", "ResidualNetwork", "STANDARD_WIDTHS", "Subsample", "preact_resnet",
            "residual_network"]
