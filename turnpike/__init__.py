"""turnpike: train ResNets and neural ODEs as optimal control problems and find their turnpikes."""
from ._costs import Cost, CrossEntropy, InputPenalty, L2Tracking, SoftCrossEntropy
from ._ocp import OCP
from .systems._node import ODE_METHODS, PARAMETRISATIONS, NeuralODE
from .backends._optimizers import METHODS
from .backends import ENGINES, objective_tensor
from ._version import __version__
from .results import ModuleSolution, Network, ODESolution, Solution, Status, exceedance_intervals, layer_statistics
from .systems import ResidualBlock, ResidualNetwork, preact_resnet, residual_network
from .systems._early_exit import early_exit_curve, early_exit_predict
from ._solve import solve_ocp
from ._allocator import retain_freed_memory
from .systems._resnet import SingleLayerResNet, TwoLayerResNet
from .systems._shortcut import ShortcutNetwork
from .systems._activations import ACTIVATIONS
from . import data, distributed, experiments, models, theory


__all__ = [
    "ACTIVATIONS", "Cost", "CrossEntropy", "ENGINES", "InputPenalty", "L2Tracking", "METHODS", "ModuleSolution",
    "Network", "NeuralODE", "OCP", "ODESolution", "ODE_METHODS", "PARAMETRISATIONS", "ResidualBlock",
    "ResidualNetwork", "ShortcutNetwork", "SingleLayerResNet", "SoftCrossEntropy", "Solution", "Status",
    "TwoLayerResNet", "data", "early_exit_curve", "early_exit_predict", "exceedance_intervals", "layer_statistics",
    "models", "objective_tensor", "preact_resnet", "residual_network", "retain_freed_memory", "solve_ocp", "theory",
]

