"""The papers' experiments as reusable runs (configs, run folders, figures); thin scripts in
``experiments/`` and the CLI call them.

- :func:`run_spirals` (2024 paper, two spirals), :func:`run_node_spirals` (neural ODE, Prop. 16),
  :func:`run_mnist` (Fig. 5);
- :func:`run_resnet54`, :func:`run_resnet54_study`, :func:`load_resnet54_network` (2025 paper);
- :func:`run_train` (the 2025 paper's method for any residual network), :func:`load_run_network`;
- :func:`run_study` (the 2025 paper's comparison for a ResNet54Config or a TrainConfig);
- :func:`depth_bounds_from_runs` (Theorems 1-2 tables from finished runs), :func:`export_pruned` (a run's
  pruned network for torch alone).
"""
from ._depth_bounds import depth_bounds_from_runs
from ._export import export_pruned
from ._mnist import MnistConfig, run_mnist
from ._node import NodeSpiralsConfig, run_node_spirals
from ._resnet54 import ResNet54Config, run_resnet54
from ._study import run_resnet54_study, run_study
from ._spirals import SpiralsConfig, run_spirals
from ._train import TrainConfig, run_train
from ._recipe import TrainingRecipe
from ._run_reading import load_resnet54_network, load_run_network, run_config

__all__ = ["MnistConfig", "NodeSpiralsConfig", "ResNet54Config", "SpiralsConfig", "TrainConfig", "TrainingRecipe",
           "depth_bounds_from_runs", "export_pruned", "load_resnet54_network", "load_run_network", "run_config", "run_mnist", "run_node_spirals",
           "run_resnet54", "run_resnet54_study", "run_spirals", "run_study", "run_train"]
