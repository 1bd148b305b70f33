"""turnpike: train ResNets and neural ODEs as optimal control problems and find their turnpikes."""
from ._costs import Cost, CrossEntropy, InputPenalty, L2Tracking, SoftCrossEntropy
from ._ocp import OCP
from .systems._node import ODE_METHODS, PARAMETRISATIONS, NeuralODE
from .backends._optimizers import METHODS
from .backends import ENGINES, objective_tensor
from ._version import __version__
from .results import ModuleSolution, Network, ODESolution, Solution, Status, exceedance_intervals, layer_statistics
from .systems import PreActResNet
from .systems._early_exit import early_exit_curve, early_exit_predict
from ._solve import solve_ocp
from ._allocator import retain_freed_memory
from ._distributed import SyncedBatchNorm2d, finish_distributed, init_distributed, is_main_process
from .systems._resnet import SingleLayerResNet, TwoLayerResNet
from .systems._shortcut import ShortcutNetwork
from .experiments._spirals import SpiralsConfig, run_spirals
from .experiments._node import NodeSpiralsConfig, run_node_spirals
from .experiments._mnist import MnistConfig, run_mnist
from .experiments._resnet54 import ResNet54Config, load_resnet54_network, run_resnet54
from .experiments._depth_bounds import depth_bounds_from_runs
from .experiments._resnet54_study import run_resnet54_study
from .systems._activations import ACTIVATIONS
from . import data, theory


__all__ = [
    "ACTIVATIONS", "ENGINES", "METHODS", "NeuralODE", "ODESolution", "ODE_METHODS", "PARAMETRISATIONS", "exceedance_intervals",
    "NodeSpiralsConfig", "run_node_spirals",
    "OCP", "Cost", "CrossEntropy", "InputPenalty", "L2Tracking", "ModuleSolution", "Network", "PreActResNet",
    "ShortcutNetwork", "SingleLayerResNet", "Solution", "Status", "SoftCrossEntropy", "SpiralsConfig", "TwoLayerResNet", "data",
    "MnistConfig", "ResNet54Config", "depth_bounds_from_runs", "early_exit_curve", "early_exit_predict", "layer_statistics", "load_resnet54_network", "run_resnet54", "run_resnet54_study", "run_mnist", "run_spirals", "objective_tensor", "retain_freed_memory", "SyncedBatchNorm2d", "init_distributed", "finish_distributed", "is_main_process", "solve_ocp", "theory",
]
