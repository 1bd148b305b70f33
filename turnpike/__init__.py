"""turnpike: train ResNets and neural ODEs as optimal control problems and find their turnpikes."""
from ._costs import Cost, CrossEntropy, InputPenalty, L2Tracking, SoftCrossEntropy
from ._ocp import OCP
from ._optimizers import METHODS
from ._solution import Network, Solution
from ._solve import solve_ocp
from ._systems import SingleLayerResNet, TwoLayerResNet
from ._spirals_experiment import SpiralsConfig, run_spirals
from ._activations import ACTIVATIONS
from . import data, theory

__version__ = "0.1.0"

__all__ = [
    "ACTIVATIONS", "METHODS", "OCP", "Cost", "CrossEntropy", "InputPenalty", "L2Tracking", "Network",
    "SingleLayerResNet", "Solution", "SoftCrossEntropy", "SpiralsConfig", "TwoLayerResNet", "data",
    "run_spirals", "solve_ocp", "theory",
]
