"""The MNIST turnpike of the 2024 paper (Sec. 6, Fig. 5), for MNIST or Fashion-MNIST.

One 60-layer network of architecture (26) trained with the soft cross-entropy (on the
first 10 of the 784 state components, Remark 4) in the stage cost, against baselines
without it at depths 10, 20, ..., 60. Mini-batch Adam through ``solve_ocp`` with the
adjoint engine in float32: the per-layer losses of a batch are evaluated in one stacked
call. Every training checkpoints each epoch; ``resume=True`` continues a killed run.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import _checks
from .._costs import InputPenalty, SoftCrossEntropy
from .._ocp import OCP
from .._runs import claim_run_folder, holds_run, write_metrics, write_run_config
from ..results import layer_statistics, turnpike_layer_of
from .._solve import solve_ocp
from ..systems._resnet import TwoLayerResNet
from ..data import load_images


@dataclass
class MnistConfig:
    dataset: str = "mnist"               # "mnist" (embedded 5k subset or --data) or "fashion-mnist"
    data_dir: str | None = None
    seed: int = 0
    depth: int = 60                      # N of the stage-cost network
    hidden_dim: int = 128                # h
    activations: tuple = ("relu", "identity")
    p_d: float = 0.91
    input_penalty: float = 1e-5          # r
    terminal_weight: float = 1.0         # γ (2024 convention)
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    init_scale: float = 0.1
    baseline_depths: tuple = (10, 20, 30, 40, 50, 60)
    # ε = d_N + eps_fraction (d_0 - d_N), d_k the RMS distance of layer k to X*_y: on image data
    # the hardest samples keep the RMS distance on a plateau d_N well above 0 (see docs/mnist.md)
    eps_fraction: float = 0.1
    train_subset: int | None = None      # use only the first n training images (CI, quick looks)
    device: str = "cpu"                  # "cuda" keeps controls, Adam state and data on the GPU

    def __post_init__(self):
        _checks.integer("depth", self.depth, minimum=1)
        _checks.integer("epochs", self.epochs, minimum=1)
        _checks.integer("batch_size", self.batch_size, minimum=1)
        _checks.real("lr", self.lr, minimum=0.0, strict_min=True)
        self.baseline_depths = tuple(_checks.integer("baseline_depths", d, minimum=1)
                                     for d in self.baseline_depths)
        if self.train_subset is not None:
            _checks.integer("train_subset", self.train_subset, minimum=10)
        self.device = str(_checks.device("device", self.device))


def _problem(config, data, depth, *, with_stage_cost: bool) -> OCP:
    system = TwoLayerResNet(state_dim=data.train_inputs.shape[1], hidden_dim=config.hidden_dim, depth=depth,
                            activations=config.activations)
    soft = SoftCrossEntropy(num_classes=10, p_d=config.p_d)
    stage = soft + InputPenalty(config.input_penalty) if with_stage_cost else InputPenalty(config.input_penalty)
    return OCP(system, data.train_inputs, data.train_labels, stage_cost=stage, terminal_cost=soft,
               terminal_weight=config.terminal_weight)


def _train(config, data, depth, with_stage_cost, out, resume, progress):
    ocp = _problem(config, data, depth, with_stage_cost=with_stage_cost)
    steps = config.epochs * -(-len(data.train_labels) // config.batch_size)
    name = f"{'stage' if with_stage_cost else 'baseline'}-N{depth}"
    checkpoint = None if out is None else Path(out) / "checkpoints" / f"{name}.npz"
    return name, solve_ocp(ocp, method="adam", steps=steps, options={"lr": config.lr},
                           batch_size=config.batch_size, seed=config.seed, init_scale=config.init_scale,
                           dtype="float32", keep_states=False, threads=None, checkpoint=checkpoint,
                           device=config.device,
                           resume=resume, progress=progress)


def _layer_metrics(solution, data, soft) -> dict:
    train = layer_statistics(solution.network, solution.ocp.inputs, solution.ocp.labels, num_classes=10,
                             soft_cross_entropy=soft)
    test = layer_statistics(solution.network, data.test_inputs, data.test_labels, num_classes=10,
                            soft_cross_entropy=soft)
    return {"status": solution.status, "message": solution.message, "depth": solution.depth,
            "train_time_s": solution.wall_time_s, "objective": solution.objective,
            "train_loss_per_layer": train["loss"], "test_loss_per_layer": test["loss"],
            "train_accuracy_per_layer": train["accuracy"], "test_accuracy_per_layer": test["accuracy"],
            "distance_per_layer": train["distance"], "test_distance_per_layer": test["distance"],
            "train_accuracy": float(train["accuracy"][-1]), "test_accuracy": float(test["accuracy"][-1]),
            "control_norm_per_layer": solution.control_norms()}


#: what an mnist run writes in its folder (``overwrite`` removes these, nothing else)
RUN_FILES = ("config.json", "metrics.json", "checkpoints", "*.png")
#: settings a resumed run may change: they do not change its result
RESUMABLE = ("data_dir", "device")


def run_mnist(config: MnistConfig | None = None, out=None, *, plots: bool = True, resume: bool = False,
              progress: bool = False, overwrite: bool = False) -> dict:
    """Train the stage-cost network and the baselines; return (and write) the metrics.

    A folder that holds a run is refused unless ``resume`` (continue it from its checkpoints; every
    setting but :data:`RESUMABLE` must match) or ``overwrite`` (its run files are removed first)."""
    config = MnistConfig() if config is None else _checks.instance("config", config, MnistConfig, "a MnistConfig")
    started = time.perf_counter()
    continues = resume and out is not None and holds_run(out)
    if out is not None:
        claim_run_folder(out, config, command="mnist", resume=resume, overwrite=overwrite, resumable=RESUMABLE,
                         run_files=RUN_FILES)
    data = load_images(config.dataset, config.data_dir)
    if config.train_subset is not None:
        from dataclasses import replace
        data = replace(data, train_inputs=data.train_inputs[: config.train_subset],
                       train_labels=data.train_labels[: config.train_subset])
    if out is not None and not continues:          # config.json is written once, when the run starts
        write_run_config(out, config, command="mnist", data=repr(data))
    soft = SoftCrossEntropy(num_classes=10, p_d=config.p_d)
    name, solution = _train(config, data, config.depth, True, out, resume, progress)
    metrics = _layer_metrics(solution, data, soft)
    distance = metrics["distance_per_layer"]
    eps = float(distance[-1] + config.eps_fraction * (distance[0] - distance[-1]))
    layer = turnpike_layer_of(metrics["distance_per_layer"], eps)
    metrics.update(eps=eps, turnpike_layer=layer,
                   layers_in_Q_eps=np.flatnonzero(metrics["distance_per_layer"] <= eps))
    networks = {name: solution}
    baselines = {}
    for depth in config.baseline_depths:
        base_name, base = _train(config, data, depth, False, out, resume, progress)
        baselines[str(depth)] = _layer_metrics(base, data, soft)
        networks[base_name] = base
    metrics["baselines"] = baselines
    if layer is not None and 0 < layer < config.depth:
        pruned = solution.prune(layer)
        test = layer_statistics(pruned, data.test_inputs, data.test_labels, num_classes=10)
        train = layer_statistics(pruned, data.train_inputs, data.train_labels, num_classes=10)
        nearest = min(config.baseline_depths, key=lambda d: (abs(d - layer), d)) if baselines else None
        metrics["pruned"] = {"depth": layer, "train_accuracy": float(train["accuracy"][-1]),
                             "test_accuracy": float(test["accuracy"][-1]),
                             "baseline_depth": nearest,
                             "baseline_test_accuracy": baselines[str(nearest)]["test_accuracy"] if nearest else None}
    else:
        metrics["pruned"] = None
    metrics["wall_time_s"] = time.perf_counter() - started
    if out is not None:
        write_metrics(out, metrics, RUN_FILES)        # before the figure: a plotting error loses no result
        if plots:
            from ._plots import mnist_figure
            metrics["figures"] = [str(mnist_figure(metrics, Path(out) / "fig5_loss_over_layers.png"))]
            write_metrics(out, metrics, RUN_FILES)
    metrics["solutions"] = networks
    return metrics
