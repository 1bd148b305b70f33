"""Bad inputs across the public API (issue 21): each is refused up front with a ValueError whose message
names the argument, says what was expected and what came (``argument: expected …, got …``), and good
inputs of every accepted kind (uint8 and float images, numpy and torch) still pass.

The objects are tiny (a 3-dimensional ResNet of two layers, a convolutional ResNet of two blocks on
8×8 images): the whole file runs in a few seconds on two cores.
"""
from __future__ import annotations

import dataclasses
import functools
import json

import numpy as np
import pytest
import torch

import turnpike as tp
from turnpike.experiments import _hessian as _hessian_experiment
from turnpike import data, distributed, theory
from turnpike.backends import make_backend
from turnpike.experiments import ResNet54Config, load_resnet54_network

X = np.random.default_rng(0).normal(size=(8, 3))
Y = np.arange(8) % 2
SOFT = tp.SoftCrossEntropy(num_classes=2, p_d=0.9)
CE3 = tp.CrossEntropy(num_classes=3)
CPU = torch.device("cpu")


@functools.cache
def system():
    return tp.SingleLayerResNet(state_dim=3, depth=2)


@functools.cache
def ocp():
    return tp.OCP(system(), X, Y, stage_cost=SOFT + tp.InputPenalty(0.01), terminal_cost=SOFT)


def theta():
    return np.zeros(system().parameter_count)


@functools.cache
def solution():
    return tp.solve_ocp(ocp(), method="adam", steps=2, progress=False)


@functools.cache
def net():
    torch.manual_seed(0)
    return tp.preact_resnet(blocks_per_stage=1, widths=(4, 4), num_classes=3).eval()


def images(count=4, channels=3, dtype=torch.float32):
    generator = torch.Generator().manual_seed(count)
    return torch.rand(count, channels, 8, 8, generator=generator).to(dtype)


def uint8_images(count=4):
    return (images(count) * 255).to(torch.uint8)


LABELS = torch.arange(4) % 3


@functools.cache
def module_ocp(float_inputs=False):
    return tp.OCP(net(), images() if float_inputs else uint8_images(), LABELS, terminal_cost=CE3)


def solve(problem=None, **settings):
    """A solve of one step that the checks must stop before it starts."""
    return tp.solve_ocp(problem or ocp(), **{"method": "adam", "steps": 1, "progress": False, **settings})


def module_solve(**settings):
    return solve(module_ocp(), **{"method": "sgd", **settings})


def image_tensors(**changes):
    fields = dict(name="x", train_images=uint8_images(), train_labels=LABELS, test_images=uint8_images(),
                  test_labels=LABELS, num_classes=3, mean=(0.5,) * 3, std=(0.2,) * 3, source="test")
    return data.ImageTensors(**{**fields, **changes})


#: run folders of `turnpike resnet54` broken in one way each (filled by the module fixture below)
FOLDERS = {}


@pytest.fixture(scope="module", autouse=True)
def broken_run_folders(tmp_path_factory):
    config = ResNet54Config(dataset="mnist", arch="homogeneous", width=4, blocks_per_stage=1)
    stored = json.dumps({"command": "resnet54", "config": dataclasses.asdict(config)})
    for kind in ("no_network", "truncated", "other_weights", "corrupt_config"):
        folder = tmp_path_factory.mktemp(kind)
        (folder / "config.json").write_text(stored if kind != "corrupt_config" else stored[:20])
        FOLDERS[kind] = folder
    network = FOLDERS["truncated"] / "network.pt"
    torch.save({"state_dict": net().state_dict(), "channels": 3, "num_classes": 3}, network)
    network.write_bytes(network.read_bytes()[:100])
    torch.save({"state_dict": {"stem.0.weight": torch.zeros(1)}, "channels": 1, "num_classes": 10},
               FOLDERS["other_weights"] / "network.pt")
    yield


# (id, a call with one bad argument, the exception, the argument its message names)
BAD = [
    # --- costs ---------------------------------------------------------------------------------------
    ("soft-ce p_d a string", lambda: tp.SoftCrossEntropy(num_classes=2, p_d="0.9"), ValueError, "p_d"),
    ("soft-ce num_classes a bool", lambda: tp.SoftCrossEntropy(num_classes=True, p_d=0.9), ValueError,
     "num_classes"),
    ("cross-entropy num_classes a float", lambda: tp.CrossEntropy(num_classes=2.0), ValueError, "num_classes"),
    ("tracking target empty", lambda: tp.L2Tracking([]), ValueError, "target"),
    ("tracking target NaN", lambda: tp.L2Tracking([np.nan, 1.0]), ValueError, "target"),
    ("input penalty negative", lambda: tp.InputPenalty(-1.0), ValueError, "weight"),
    ("cost times a string", lambda: SOFT * "2", ValueError, "cost weight"),
    ("Cost of a number", lambda: tp.Cost(5), ValueError, "terms"),
    ("per_sample labels out of range", lambda: SOFT.per_sample(np.zeros((4, 2)), [0, 1, 2, 5]), ValueError,
     "labels"),
    ("per_sample one label short", lambda: SOFT.per_sample(np.zeros((4, 2)), [0, 1, 0]), ValueError, "labels"),
    ("gradient fractional labels", lambda: SOFT.gradient(np.zeros((4, 2)), [0.5, 1, 0, 1]), ValueError,
     "labels"),
    ("per_sample logits without batch", lambda: SOFT.per_sample(np.zeros(2), [0]), ValueError, "x"),
    ("per_sample logits too wide", lambda: SOFT.per_sample(np.zeros((4, 3)), Y[:4]), ValueError, "x"),
    ("tracking table labels out of range",
     lambda: tp.L2Tracking(np.zeros((2, 3))).per_sample(np.zeros((4, 3)), [0, 1, 2, 0]), ValueError, "labels"),
    # --- systems -------------------------------------------------------------------------------------
    ("resnet depth 0", lambda: tp.SingleLayerResNet(state_dim=3, depth=0), ValueError, "depth"),
    ("resnet depth a bool", lambda: tp.SingleLayerResNet(state_dim=3, depth=True), ValueError, "depth"),
    ("resnet activation a list", lambda: tp.SingleLayerResNet(state_dim=3, depth=2, activation=["tanh"]),
     ValueError, "activation"),
    ("resnet step_size a string", lambda: tp.SingleLayerResNet(state_dim=3, depth=2, step_size="1"),
     ValueError, "step_size"),
    ("two-layer activations an int", lambda: tp.TwoLayerResNet(state_dim=3, hidden_dim=4, depth=2, activations=5),
     ValueError, "activations"),
    ("two-layer hidden_dim 0", lambda: tp.TwoLayerResNet(state_dim=3, hidden_dim=0, depth=2), ValueError,
     "hidden_dim"),
    ("shortcut activations an int", lambda: tp.ShortcutNetwork(state_dim=3, units=2, activations=3), ValueError,
     "activations"),
    ("shortcut shortcut=1", lambda: tp.ShortcutNetwork(state_dim=3, units=2, shortcut=1), ValueError, "shortcut"),
    ("node method a list", lambda: tp.NeuralODE(state_dim=2, depth=2, horizon=1, method=["rk4"]), ValueError,
     "method"),
    ("node options a list", lambda: tp.NeuralODE(state_dim=2, depth=2, horizon=1, options=[1, 2]), ValueError,
     "options"),
    ("node horizon 0", lambda: tp.NeuralODE(state_dim=2, depth=2, horizon=0), ValueError, "horizon"),
    ("node activations an int", lambda: tp.NeuralODE(state_dim=2, depth=2, horizon=1, hidden_dim=3, activations=3),
     ValueError, "activations"),
    ("node from a string", lambda: tp.NeuralODE.from_resnet("resnet"), ValueError, "resnet"),
    ("node control_norm_at after T",
     lambda: tp.NeuralODE(state_dim=2, depth=2, horizon=1).control_norm_at(np.zeros(12), [0.5, 2.0]), ValueError,
     "times"),
    ("conv net one class", lambda: tp.preact_resnet(widths=(4,), blocks_per_stage=1, num_classes=1), ValueError,
     "num_classes"),
    ("conv net no widths", lambda: tp.preact_resnet(widths=()), ValueError, "widths"),
    ("conv net exits a list", lambda: tp.preact_resnet(widths=(4,), blocks_per_stage=1, exits=["ws"]), ValueError,
     "exits"),
    ("conv net forward wrong channels", lambda: net()(images(channels=1)), ValueError, "inputs"),
    ("conv net forward uint8", lambda: net()(uint8_images()), ValueError, "inputs"),
    ("conv net exit_logits 3-d", lambda: net().exit_logits(images()[0]), ValueError, "inputs"),
    ("conv net recalibrate uint8", lambda: net().recalibrate_exit_statistics([uint8_images()]), ValueError,
     "batches"),
    ("conv net exit_costs height 0", lambda: net().exit_costs(0, 8), ValueError, "spatial[0]"),
    ("rollout wrong state width", lambda: system().rollout(theta(), np.zeros((2, 4))), ValueError, "x0"),
    ("unpack wrong length", lambda: system().unpack(theta()[:-1]), ValueError, "theta"),
    ("initial_controls rng an int", lambda: system().initial_controls(0, 0.1), ValueError, "rng"),
    ("initial_controls negative scale", lambda: system().initial_controls(np.random.default_rng(0), -1.0),
     ValueError, "scale"),
    ("truncate to 0 layers", lambda: system().truncate(theta(), 0), ValueError, "depth"),
    ("readout of other states", lambda: ocp().readout(np.zeros((5, 2))), ValueError, "states"),
    # --- early exit ----------------------------------------------------------------------------------
    ("early_exit_predict uint8 images", lambda: tp.early_exit_predict(net(), uint8_images(), 0.5), ValueError,
     "images"),
    ("early_exit_predict wrong channels", lambda: tp.early_exit_predict(net(), images(channels=1), 0.5),
     ValueError, "images"),
    ("early_exit_predict one image, no batch axis", lambda: tp.early_exit_predict(net(), images()[0], 0.5),
     ValueError, "images"),
    ("early_exit_predict NaN images",
     lambda: tp.early_exit_predict(net(), torch.full((2, 3, 8, 8), float("nan")), 0.5), ValueError, "images"),
    ("early_exit_predict no images", lambda: tp.early_exit_predict(net(), images(0), 0.5), ValueError, "images"),
    ("early_exit_predict int64 images", lambda: tp.early_exit_predict(net(), images(dtype=torch.int64), 0.5),
     ValueError, "images"),
    ("early_exit_predict threshold a string", lambda: tp.early_exit_predict(net(), images(), "0.5"), ValueError,
     "threshold"),
    ("early_exit_predict threshold 1.5", lambda: tp.early_exit_predict(net(), images(), 1.5), ValueError,
     "threshold"),
    ("early_exit_predict not a conv net", lambda: tp.early_exit_predict(torch.nn.Linear(2, 2), images(), 0.5),
     ValueError, "network"),
    ("early_exit_curve one label short", lambda: tp.early_exit_curve(net(), images(), LABELS[:3], [0.5]),
     ValueError, "labels"),
    ("early_exit_curve label out of range",
     lambda: tp.early_exit_curve(net(), images(), torch.tensor([0, 1, 2, 7]), [0.5]), ValueError, "labels"),
    ("early_exit_curve fractional labels",
     lambda: tp.early_exit_curve(net(), images(), torch.tensor([0.5, 1, 2, 0]), [0.5]), ValueError, "labels"),
    ("early_exit_curve batch_size 0", lambda: tp.early_exit_curve(net(), images(), LABELS, [0.5], batch_size=0),
     ValueError, "batch_size"),
    ("early_exit_curve batch_size a bool",
     lambda: tp.early_exit_curve(net(), images(), LABELS, [0.5], batch_size=True), ValueError, "batch_size"),
    ("early_exit_curve no thresholds", lambda: tp.early_exit_curve(net(), images(), LABELS, []), ValueError,
     "thresholds"),
    ("early_exit_curve threshold a string", lambda: tp.early_exit_curve(net(), images(), LABELS, ["a"]),
     ValueError, "thresholds[0]"),
    ("early_exit_curve measure_speed a string",
     lambda: tp.early_exit_curve(net(), images(), LABELS, [0.5], measure_speed="yes"), ValueError, "measure_speed"),
    ("early_exit_curve uint8 images", lambda: tp.early_exit_curve(net(), uint8_images(), LABELS, [0.5]),
     ValueError, "images"),
    # --- OCP -----------------------------------------------------------------------------------------
    ("OCP system a string", lambda: tp.OCP("resnet", X, Y, terminal_cost=SOFT), ValueError, "system"),
    ("OCP inputs 1-d", lambda: tp.OCP(system(), X[:, 0], Y, terminal_cost=SOFT), ValueError, "inputs"),
    ("OCP inputs NaN", lambda: tp.OCP(system(), np.full((2, 3), np.nan), Y[:2], terminal_cost=SOFT), ValueError,
     "inputs"),
    ("OCP no inputs", lambda: tp.OCP(system(), np.zeros((0, 3)), Y[:0], terminal_cost=SOFT), ValueError, "inputs"),
    ("OCP labels one short", lambda: tp.OCP(system(), X, Y[:7], terminal_cost=SOFT), ValueError, "labels"),
    ("OCP labels out of range", lambda: tp.OCP(system(), X, Y + 5, terminal_cost=SOFT), ValueError, "labels"),
    ("OCP labels strings", lambda: tp.OCP(system(), X, ["a"] * 8, terminal_cost=SOFT), ValueError, "labels"),
    ("OCP labels bools", lambda: tp.OCP(system(), X, Y.astype(bool), terminal_cost=SOFT), ValueError, "labels"),
    ("OCP stage_weight a string", lambda: tp.OCP(system(), X, Y, terminal_cost=SOFT, stage_weight="1"), ValueError,
     "stage_weight"),
    ("OCP terminal_weight negative", lambda: tp.OCP(system(), X, Y, terminal_cost=SOFT, terminal_weight=-1),
     ValueError, "terminal_weight"),
    ("OCP terminal_cost a number", lambda: tp.OCP(system(), X, Y, terminal_cost=5), ValueError, "terminal_cost"),
    ("OCP tracking of another dimension", lambda: tp.OCP(system(), X, Y, terminal_cost=tp.L2Tracking(np.zeros(2))),
     ValueError, "terminal_cost"),
    ("OCP images of wrong channel count", lambda: tp.OCP(net(), images(channels=1), LABELS, terminal_cost=CE3),
     ValueError, "inputs"),
    ("OCP int64 images", lambda: tp.OCP(net(), images(dtype=torch.int64), LABELS, terminal_cost=CE3), ValueError,
     "inputs"),
    ("OCP image labels one short", lambda: tp.OCP(net(), uint8_images(), LABELS[:3], terminal_cost=CE3),
     ValueError, "labels"),
    # --- solve_ocp -----------------------------------------------------------------------------------
    ("solve_ocp ocp a string", lambda: tp.solve_ocp("ocp", progress=False), ValueError, "ocp"),
    ("solve_ocp batch_size 0", lambda: solve(batch_size=0), ValueError, "batch_size"),
    ("solve_ocp batch_size a bool", lambda: solve(batch_size=True), ValueError, "batch_size"),
    ("solve_ocp batch_size a float", lambda: solve(batch_size=2.0), ValueError, "batch_size"),
    ("solve_ocp steps 0", lambda: solve(steps=0), ValueError, "steps"),
    ("solve_ocp method a nested list", lambda: solve(method=[["adam"]]), ValueError, "method"),
    ("solve_ocp options a list", lambda: solve(options=[1]), ValueError, "options for 'adam'"),
    ("solve_ocp unknown option", lambda: solve(options={"learning_rate": 0.1}), ValueError, "options for 'adam'"),
    ("solve_ocp negative lr", lambda: solve(options={"lr": -1.0}), ValueError, "options for 'adam'['lr']"),
    ("solve_ocp seed a string", lambda: solve(seed="0"), ValueError, "seed"),
    ("solve_ocp seed negative", lambda: solve(seed=-1), ValueError, "seed"),
    ("solve_ocp threads 0", lambda: solve(threads=0), ValueError, "threads"),
    ("solve_ocp divergence_factor below 1", lambda: solve(divergence_factor=0.5), ValueError, "divergence_factor"),
    ("solve_ocp checkpoint_every 0", lambda: solve(checkpoint="unused.npz", checkpoint_every=0), ValueError,
     "checkpoint_every"),
    ("solve_ocp checkpoint a folder", lambda: solve(checkpoint="."), ValueError, "checkpoint"),
    ("solve_ocp checkpoint a number", lambda: solve(checkpoint=5), ValueError, "checkpoint"),
    ("solve_ocp milestones a number",
     lambda: module_solve(steps=4, options={"schedule": "multistep", "milestones": 3}), ValueError,
     "options for 'sgd'['milestones']"),
    ("solve_ocp resume a string", lambda: solve(checkpoint="unused.npz", resume="yes"), ValueError, "resume"),
    ("solve_ocp progress a string", lambda: solve(progress="no"), ValueError, "progress"),
    ("solve_ocp callback an int", lambda: solve(callback=5), ValueError, "callback"),
    ("solve_ocp device tpu", lambda: solve(device="tpu"), ValueError, "device"),
    ("solve_ocp test_data a triple", lambda: solve(test_data=(X, Y, Y)), ValueError, "test_data"),
    ("solve_ocp test labels one short", lambda: solve(test_data=(X, Y[:7])), ValueError, "test_data[1]"),
    ("solve_ocp initial_controls too short", lambda: solve(initial_controls=np.zeros(3)), ValueError,
     "initial_controls"),
    ("solve_ocp dtype a numpy type", lambda: solve(dtype=np.float32), ValueError, "dtype"),
    ("solve_ocp engine a list", lambda: solve(engine=["adjoint"]), ValueError, "engine"),
    ("solve_ocp keep_states a string", lambda: solve(keep_states="no"), ValueError, "keep_states"),
    ("solve_ocp a module setting on a flat system", lambda: solve(amp=True), ValueError, "amp"),
    ("solve_ocp normalise one number", lambda: module_solve(normalise=0.5), ValueError, "normalise"),
    ("solve_ocp normalise zero std", lambda: module_solve(normalise=(0.5, 0.0)), ValueError, "std[0]"),
    ("solve_ocp normalise NaN mean", lambda: module_solve(normalise=((float("nan"),) * 3, (0.2,) * 3)), ValueError,
     "mean[0]"),
    ("solve_ocp normalise for float images",
     lambda: solve(module_ocp(float_inputs=True), method="sgd", normalise=(0.5, 0.2)), ValueError, "normalise"),
    ("solve_ocp float test images for uint8 inputs", lambda: module_solve(test_data=(images(), LABELS)),
     ValueError, "test_data[0]"),
    ("solve_ocp test images of wrong channel count", lambda: module_solve(test_data=(uint8_images()[:, :1], LABELS)),
     ValueError, "test_data[0]"),
    ("solve_ocp eval_batch_size 0", lambda: module_solve(eval_batch_size=0), ValueError, "eval_batch_size"),
    ("solve_ocp L-BFGS on a module system", lambda: module_solve(method="lbfgs"), ValueError, "method"),
    # --- make_backend --------------------------------------------------------------------------------
    ("make_backend ocp a string", lambda: make_backend("ocp", seed=0, batch_size=None, device=CPU), ValueError,
     "ocp"),
    ("make_backend seed a string", lambda: make_backend(ocp(), seed="0", batch_size=None, device=CPU), ValueError,
     "seed"),
    ("make_backend batch_size 0", lambda: make_backend(ocp(), seed=0, batch_size=0, device=CPU), ValueError,
     "batch_size"),
    ("make_backend device tpu", lambda: make_backend(ocp(), seed=0, batch_size=None, device="tpu"), ValueError,
     "device"),
    ("make_backend settings a list",
     lambda: make_backend(ocp(), seed=0, batch_size=None, device=CPU, settings=[1]), ValueError, "settings"),
    # --- results -------------------------------------------------------------------------------------
    ("Solution split val", lambda: solution().accuracy("val"), ValueError, "split"),
    ("Solution test split without test data", lambda: solution().accuracy("test"), ValueError, "split"),
    ("Solution loss of a cost wider than the states",
     lambda: solution().loss_per_layer(cost=tp.SoftCrossEntropy(num_classes=5, p_d=0.9)), ValueError, "cost"),
    ("Solution turnpike eps 0", lambda: solution().turnpike_layer(0), ValueError, "eps"),
    ("Solution prune to 0", lambda: solution().prune(0), ValueError, "depth"),
    ("Solution loss of a number", lambda: solution().loss_per_layer(cost=5), ValueError, "cost"),
    ("Network predict 0 classes", lambda: solution().network.predict(X, 0), ValueError, "num_classes"),
    ("Network predict more classes than states", lambda: solution().network.predict(X, 5), ValueError,
     "num_classes"),
    ("Network system a string", lambda: tp.Network("resnet", theta()), ValueError, "system"),
    ("Network controls too short", lambda: tp.Network(system(), theta()[:-1]), ValueError, "controls"),
    ("layer_statistics network a string", lambda: tp.layer_statistics("net", X, Y, num_classes=2), ValueError,
     "network"),
    ("layer_statistics no inputs", lambda: tp.layer_statistics(solution().network, X[:0], Y[:0], num_classes=2),
     ValueError, "inputs"),
    ("layer_statistics soft CE of other classes",
     lambda: tp.layer_statistics(solution().network, X, Y, num_classes=2,
                                 soft_cross_entropy=tp.SoftCrossEntropy(num_classes=3, p_d=0.9)),
     ValueError, "soft_cross_entropy"),
    ("layer_statistics integer dtype", lambda: tp.layer_statistics(solution().network, X, Y, num_classes=2,
                                                                   dtype=np.int64), ValueError, "dtype"),
    ("exceedance_intervals no times", lambda: tp.exceedance_intervals([], [], 0.5), ValueError, "times"),
    ("exceedance_intervals decreasing times", lambda: tp.exceedance_intervals([1, 0], [1, 2], 0.5), ValueError,
     "times"),
    ("exceedance_intervals a value short", lambda: tp.exceedance_intervals([0, 1], [1], 0.5), ValueError, "values"),
    ("objective_tensor ocp a string", lambda: tp.objective_tensor("ocp", torch.zeros(3)), ValueError, "ocp"),
    # --- data ----------------------------------------------------------------------------------------
    ("two_spirals odd count", lambda: data.two_spirals(5), ValueError, "num_samples"),
    ("two_spirals seed a string", lambda: data.two_spirals(4, seed="a"), ValueError, "seed"),
    ("two_spirals seed negative", lambda: data.two_spirals(4, seed=-1), ValueError, "seed"),
    ("two_spirals test a string", lambda: data.two_spirals(4, test="yes"), ValueError, "test"),
    ("normalise zero std", lambda: data.normalise(uint8_images(), 0.5, 0.0), ValueError, "std[0]"),
    ("normalise NaN mean", lambda: data.normalise(uint8_images(), (float("nan"),) * 3, (0.2,) * 3), ValueError,
     "mean[0]"),
    ("normalise two means for three channels", lambda: data.normalise(uint8_images(), (0.5, 0.5), 0.2), ValueError,
     "mean"),
    ("normalise float images", lambda: data.normalise(images(), 0.5, 0.2), ValueError, "images"),
    ("channel_statistics float images", lambda: data.channel_statistics(images()), ValueError, "images"),
    ("ImageTensors num_classes 0", lambda: image_tensors(num_classes=0), ValueError, "num_classes"),
    ("ImageTensors labels out of range", lambda: image_tensors(train_labels=LABELS + 3), ValueError,
     "train_labels"),
    ("ImageTensors zero std", lambda: image_tensors(std=(0.2, 0.0, 0.2)), ValueError, "std[1]"),
    ("whitening 0 components", lambda: data.whitening(X, components=0), ValueError, "components"),
    ("whitening NaN inputs", lambda: data.whitening(X * np.nan, components=2), ValueError, "inputs"),
    ("whitening no samples", lambda: data.whitening(np.zeros((0, 3)), components=1), ValueError, "inputs"),
    ("batch_indices batch_size 0", lambda: data.batch_indices(4, 0, seed=0, epoch=0), ValueError, "batch_size"),
    ("read_idx path a number", lambda: data.read_idx(5), ValueError, "path"),
    ("load_idx_split directory a number", lambda: data.load_idx_split(5, "train"), ValueError, "directory"),
    ("augment negative padding", lambda: data.augment(uint8_images(), crop_padding=-1), ValueError,
     "crop_padding"),
    # --- theory --------------------------------------------------------------------------------------
    ("minimiser_offset p_d below 1/C", lambda: theory.minimiser_offset(2, 0.4), ValueError, "p_d"),
    ("project_mean_zero NaN", lambda: theory.project_mean_zero([np.nan, 1.0]), ValueError, "x"),
    ("project_mean_zero a number", lambda: theory.project_mean_zero(3.0), ValueError, "x"),
    ("distance_to_minimisers labels out of range",
     lambda: theory.distance_to_minimisers(np.zeros((4, 2)), [0, 1, 2, 3], 2, 0.9), ValueError, "labels"),
    ("distance_to_minimisers one state, no batch",
     lambda: theory.distance_to_minimisers(np.zeros(2), [0], 2, 0.9), ValueError, "x"),
    ("curvature_bound seed a string", lambda: theory.curvature_bound(2, 0.9, seed="a"), ValueError, "seed"),
    ("curvature_bound negative starts", lambda: theory.curvature_bound(2, 0.9, random_starts=-1), ValueError,
     "random_starts"),
    ("lower bound at a negative distance", lambda: theory.SoftCELowerBound(2, 0.9, 0.1, 0.2)(-1.0), ValueError, "s"),
    ("lower bound at NaN", lambda: theory.SoftCELowerBound(2, 0.9, 0.1, 0.2)(float("nan")), ValueError, "s"),
    ("stage_cost_lower_bound of a number", lambda: theory.stage_cost_lower_bound(5, 3), ValueError, "stage_cost"),
    ("dissipation_margins of a string", lambda: theory.dissipation_margins("solution"), ValueError, "solution"),
    ("dissipation_margins storage an int", lambda: theory.dissipation_margins(solution(), storage=5), ValueError,
     "storage"),
    ("dissipation_margins negative tolerance", lambda: theory.dissipation_margins(solution(), tolerance=-1.0),
     ValueError, "tolerance"),
    ("search_storage_function system a string",
     lambda: theory.search_storage_function("s", SOFT, np.zeros((1, 8, 3)), np.zeros((1, 12)), Y), ValueError,
     "system"),
    ("search_storage_function labels out of range",
     lambda: theory.search_storage_function(system(), SOFT, np.zeros((1, 8, 3)), np.zeros((1, 12)), Y + 4),
     ValueError, "labels"),
    ("search_storage_function negative max_violations",
     lambda: theory.search_storage_function(system(), SOFT, np.zeros((1, 8, 3)), np.zeros((1, 12)), Y,
                                            max_violations=-1), ValueError, "max_violations"),
    ("turnpike_bound of a string", lambda: theory.turnpike_bound("solution", 0.1), ValueError, "solution"),
    ("layer_distances of a string", lambda: theory.layer_distances("solution"), ValueError, "solution"),
    ("hessian ocp a string", lambda: theory.hessian("ocp", theta()), ValueError, "ocp"),
    ("extreme_eigenvalues seed a string", lambda: theory.extreme_eigenvalues(ocp(), theta(), count=2, seed="a"),
     ValueError, "seed"),
    ("HessianSpectrum of an empty matrix", lambda: theory.HessianSpectrum.of(np.zeros((0, 0))), ValueError,
     "matrix"),
    ("HessianSpectrum of a non-symmetric matrix", lambda: theory.HessianSpectrum.of(np.array([[0, 1.0], [0, 0]])),
     ValueError, "matrix"),
    ("HessianSpectrum eigenvalues 2-d", lambda: theory.HessianSpectrum(np.zeros((2, 2))), ValueError,
     "eigenvalues"),
    ("theorem2_matrix one activation", lambda: theory.theorem2_matrix(X, X, activations=("identity",)), ValueError,
     "activations"),
    ("leading_derivative direction too short",
     lambda: theory.leading_derivative(tp.ShortcutNetwork(state_dim=3, units=1), X, X, np.zeros(3)), ValueError,
     "direction"),
    ("leading_derivative inputs of another dimension",
     lambda: theory.leading_derivative(tp.ShortcutNetwork(state_dim=2, units=1), X, X, np.zeros(8)), ValueError,
     "inputs"),
    ("objective_bound sub a list", lambda: theory.objective_bound([1.0, 1.0], gamma=0.5, depth=1), ValueError,
     "sub"),
    ("average_exit_loss network a list", lambda: theory.average_exit_loss([1.0, 2.0]), ValueError, "network"),
    ("depth_bound_table subs an int", lambda: theory.depth_bound_table(theory.ExitLosses([1.0, 1.0]), 5, gamma=0.5),
     ValueError, "subs"),
    ("format_depth_bound_table rows of numbers", lambda: theory.format_depth_bound_table([1]), ValueError, "rows"),
    ("huber_template of a string", lambda: theory.huber_template("a"), ValueError, "s"),
    # --- experiments and distributed -----------------------------------------------------------------
    ("load_resnet54_network no folder", lambda: load_resnet54_network("/nonexistent/run"), ValueError, "folder"),
    ("load_resnet54_network corrupt config.json", lambda: load_resnet54_network(FOLDERS["corrupt_config"]),
     ValueError, "config.json"),
    ("load_resnet54_network no network.pt", lambda: load_resnet54_network(FOLDERS["no_network"]), ValueError,
     "folder"),
    ("load_resnet54_network truncated network.pt", lambda: load_resnet54_network(FOLDERS["truncated"]),
     ValueError, "network.pt"),
    ("load_resnet54_network weights of another network", lambda: load_resnet54_network(FOLDERS["other_weights"]),
     ValueError, "network.pt"),
    ("load_resnet54_network device tpu", lambda: load_resnet54_network(FOLDERS["truncated"], device="tpu"),
     ValueError, "device"),
    ("init_distributed device an int", lambda: distributed.init_distributed(5), ValueError, "device"),
    ("init_distributed timeout 0", lambda: distributed.init_distributed("cpu", timeout_s=0), ValueError,
     "timeout_s"),
    ("finish_distributed wait a string", lambda: distributed.finish_distributed(wait="no"), ValueError, "wait"),
    # --- experiments: the config is checked before any work --------------------------------------------
    *((f"{run.__name__} config an int", (lambda run=run: run(5)), ValueError, "config")
      for run in (tp.experiments.run_spirals, tp.experiments.run_node_spirals, tp.experiments.run_mnist,
                  tp.experiments.run_resnet54, _hessian_experiment.run_hessian)),
]


@pytest.mark.parametrize("call, error, argument", [case[1:] for case in BAD], ids=[case[0] for case in BAD])
def test_bad_input_is_refused_naming_the_argument(call, error, argument):
    with pytest.raises(error) as raised:
        call()
    message = str(raised.value)
    assert f"{argument}: expected" in message, message


def test_the_table_is_large_and_its_ids_unique():
    assert len(BAD) >= 80 and len({case[0] for case in BAD}) == len(BAD)


# --- good inputs of every accepted kind still pass ---------------------------------------------------

def test_early_exit_takes_numpy_and_torch_float_images_of_any_float_dtype():
    expected = tp.early_exit_predict(net(), images(), 0.5)
    for same in (images().numpy(), images(dtype=torch.float64)):
        predictions, exits = tp.early_exit_predict(net(), same, 0.5)
        assert torch.equal(predictions, expected[0]) and torch.equal(exits, expected[1])
    curve = tp.early_exit_curve(net(), images().numpy(), LABELS.numpy(), np.array([0.0, 1.0]),
                                batch_size=np.int64(3))
    assert curve["thresholds"] == [0.0, 1.0] and len(curve["accuracy"]) == 2
    assert tp.early_exit_curve(net(), images(), LABELS, 0.5)["thresholds"] == [0.5]    # one threshold


def test_images_are_accepted_as_uint8_or_float_numpy_or_torch():
    for inputs in (uint8_images(), uint8_images().numpy(), images(), images().numpy()):
        tp.OCP(net(), inputs, LABELS, terminal_cost=CE3)
    tp.OCP(net(), uint8_images(), LABELS.numpy().astype(np.uint8), terminal_cost=CE3)   # any integer labels
    assert data.channel_statistics(uint8_images().numpy()) == data.channel_statistics(uint8_images())
    one = data.normalise(uint8_images(), 0.5, 0.2)                        # one number for every channel
    per_channel = data.normalise(uint8_images(), np.full(3, 0.5), torch.full((3,), 0.2))
    assert torch.equal(one, per_channel)
    # the module backend's checks (a solve would train): uint8 with normalise, float without
    make_backend(module_ocp(), seed=0, batch_size=2, device="cpu", test_data=(uint8_images().numpy(), LABELS),
                 settings={"normalise": (0.5, (0.2, 0.2, 0.2))})
    make_backend(module_ocp(float_inputs=True), seed=0, batch_size=None, device=CPU, test_data=(images(), LABELS))


def test_flat_systems_take_numpy_torch_and_lists():
    states = system().rollout(theta(), X[:2])
    np.testing.assert_array_equal(system().rollout(list(theta()), X[:2].tolist()), states)
    np.testing.assert_array_equal(system().rollout(torch.zeros(system().parameter_count, dtype=torch.float64),
                                                   torch.as_tensor(X[:2])).numpy(), states)
    tp.OCP(system(), X.tolist(), list(Y), terminal_cost=SOFT)
    logits = torch.zeros(4, 2, requires_grad=True)
    SOFT.per_sample(logits, torch.tensor([0, 1, 1, 0])).sum().backward()
    assert logits.grad is not None
    np.testing.assert_allclose(SOFT.per_sample([[0.0, 0.0]], [1]), SOFT.per_sample(np.zeros((1, 2)), np.ones(1, int)))
    tp.L2Tracking(np.zeros(3)).per_sample(np.zeros((2, 3)), None)         # one target: the labels are not read


def test_solve_settings_that_experiments_pass_stay_accepted():
    solve(checkpoint_every=5)                          # no checkpoint: nothing to write, not an error
    solve(batch_size=np.int64(100), seed=np.int64(1), threads=None, callback=lambda *_: None)
    backend = make_backend(ocp(), seed=0, batch_size=None, device="cpu", test_data=[X, Y])
    assert backend.test_data is not None
    tp.layer_statistics(solution().network, X, Y, num_classes=2, soft_cross_entropy=SOFT, dtype=np.float64)
    theory.HessianSpectrum.of(np.eye(3) + 1e-12 * np.triu(np.ones((3, 3)), 1))    # round-off asymmetry
