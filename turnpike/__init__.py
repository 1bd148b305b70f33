"""turnpike: train ResNets and neural ODEs as optimal control problems and find their turnpikes."""
from ._costs import Cost, CrossEntropy, InputPenalty, L2Tracking, SoftCrossEntropy
from ._ocp import OCP
from ._node import ODE_METHODS, PARAMETRISATIONS, NeuralODE, ODESolution, exceedance_intervals
from ._optimizers import METHODS
from ._solution import Network, Solution, layer_statistics
from ._solve import solve_ocp
from ._systems import SingleLayerResNet, TwoLayerResNet
from ._spirals_experiment import SpiralsConfig, run_spirals
from ._node_experiment import NodeSpiralsConfig, run_node_spirals
from ._mnist_experiment import MnistConfig, run_mnist
from ._activations import ACTIVATIONS
from . import data, theory

__version__ = "0.1.0"

__all__ = [
    "ACTIVATIONS", "METHODS", "NeuralODE", "ODESolution", "ODE_METHODS", "PARAMETRISATIONS", "exceedance_intervals",
    "NodeSpiralsConfig", "run_node_spirals",
    "OCP", "Cost", "CrossEntropy", "InputPenalty", "L2Tracking", "Network",
    "SingleLayerResNet", "Solution", "SoftCrossEntropy", "SpiralsConfig", "TwoLayerResNet", "data",
    "MnistConfig", "layer_statistics", "run_mnist", "run_spirals", "solve_ocp", "theory",
]
