"""Control systems: the layer maps a turnpike OCP is posed on.

- flat systems (one control vector θ): :class:`SingleLayerResNet` (architecture (1)),
  :class:`TwoLayerResNet` (architecture (26)), :class:`NeuralODE` (OCP (20));
- module systems (a ``torch.nn.Module``): :class:`PreActResNet`, the convolutional ResNet of
  the 2025 stage-cost paper with its intermediate outputs.

:class:`System`, :class:`FlatSystem` and :class:`ModuleSystem` are the protocols they implement.
"""
from ._conv import EXIT_VARIANTS, PreActResNet
from ._node import NeuralODE
from ._protocol import FlatSystem, ModuleSystem, System
from ._resnet import SingleLayerResNet, TwoLayerResNet

__all__ = ["EXIT_VARIANTS", "FlatSystem", "ModuleSystem", "NeuralODE", "PreActResNet", "SingleLayerResNet",
           "System", "TwoLayerResNet"]
