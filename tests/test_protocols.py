"""The flat-system protocols are explicit: a new system that implements one capability, written here and
nowhere else, trains with the engines that capability opens, and only with those."""
import math
from dataclasses import dataclass, replace

import numpy as np
import pytest
import torch

import turnpike as tp
from turnpike.backends import available_engines
from turnpike.systems import DifferentiableObjective, LayerMapSystem

CLASSES = 2


@dataclass(frozen=True)
class SineResNet(LayerMapSystem):
    """x_{k+1} = x_k + w_k ⊙ sin(x_k) + c_k: controls w_k, c_k ∈ R^n per layer, θ = (w_0..w_{N-1}, c_0..c_{N-1})."""

    state_dim: int
    depth: int

    @property
    def parameter_count(self) -> int:
        return 2 * self.depth * self.state_dim

    def initial_controls(self, rng, scale):
        return rng.normal(0.0, scale, self.parameter_count)

    def unpack(self, theta) -> dict:
        w, c = theta[:self.parameter_count // 2], theta[self.parameter_count // 2:]
        return {"w": w.reshape(self.depth, self.state_dim), "c": c.reshape(self.depth, self.state_dim)}

    def step(self, blocks, k, x, out=None):
        sine = np.sin(x) if isinstance(x, np.ndarray) else torch.sin(x)
        following = x + blocks["w"][k] * sine + blocks["c"][k]
        if out is not None:
            out[...] = following
        return following if out is None else out, (x, sine)

    def step_backward(self, blocks, grads, k, cache, costate):
        x, sine = cache
        grads["w"][k] += (costate * sine).sum(axis=0)
        grads["c"][k] += costate.sum(axis=0)
        return costate * (1.0 + blocks["w"][k] * np.cos(x))

    def truncate(self, theta, depth):
        blocks = self.unpack(theta)
        shorter = replace(self, depth=depth)
        return shorter, np.concatenate([blocks["w"][:depth].ravel(), blocks["c"][:depth].ravel()])

    def control_norms(self, theta):
        blocks = self.unpack(np.asarray(theta))
        return np.sqrt((blocks["w"] ** 2).sum(axis=1) + (blocks["c"] ** 2).sum(axis=1))


@dataclass(frozen=True)
class TiedResNet(DifferentiableObjective):
    """One weight matrix A shared by all N layers, x_{k+1} = x_k + tanh(A x_k) / N, with only a terminal
    cost: J as a torch scalar and nothing else (no layer states, no sweep)."""

    state_dim: int
    depth: int

    @property
    def parameter_count(self) -> int:
        return self.state_dim ** 2

    def initial_controls(self, rng, scale):
        return rng.normal(0.0, scale / math.sqrt(self.state_dim), self.parameter_count)

    def objective_tensor(self, ocp, theta, inputs, labels):
        weight = theta.reshape(self.state_dim, self.state_dim)
        x = inputs
        for _ in range(self.depth):
            x = x + torch.tanh(x @ weight.T) / self.depth
        labels = torch.as_tensor(np.asarray(labels))
        loss = ocp.terminal_cost.state_per_sample(ocp.readout(x[None]), labels).mean()
        return ocp.terminal_weight * loss + ocp.input_penalty * (theta * theta).sum()


def _ocp(system, *, stage=True):
    inputs, labels = tp.data.two_spirals(120, turns=0.5, seed=0)
    soft = tp.SoftCrossEntropy(num_classes=CLASSES, p_d=0.9)
    stage_cost = soft + tp.InputPenalty(0.01) if stage else tp.InputPenalty(0.01)
    return tp.OCP(system, inputs, labels, stage_cost=stage_cost, terminal_cost=soft)


def test_a_layer_map_trains_with_the_costate_sweep_and_with_autograd():
    system = SineResNet(state_dim=2, depth=6)
    assert available_engines(system) == ("adjoint", "autograd")
    ocp = _ocp(system)
    runs = {engine: tp.solve_ocp(ocp, engine=engine, method="adam", steps=60, options={"lr": 0.05}, seed=4,
                                 progress=False) for engine in ("auto", "adjoint", "autograd")}
    assert runs["auto"].extra["engine"] == "adjoint"
    objective = runs["adjoint"].history["objective"]
    assert objective[-1] < 0.8 * objective[0]
    np.testing.assert_allclose(runs["autograd"].history["objective"], objective, rtol=1e-9)
    np.testing.assert_allclose(runs["autograd"].network.controls, runs["adjoint"].network.controls, atol=1e-9)
    layers = runs["adjoint"].distance_to_turnpike()       # the turnpike analysis reads its states
    assert layers.shape == (system.depth + 1,)
    assert runs["adjoint"].prune(3).depth == 3
    with pytest.raises(ValueError, match=r"engine: expected 'auto' or one of \['adjoint', 'autograd'\]"):
        tp.solve_ocp(ocp, engine="buffered", steps=1, progress=False)


def test_the_costate_sweep_of_a_layer_map_is_its_gradient():
    system = SineResNet(state_dim=2, depth=4)
    ocp = _ocp(system)
    theta = system.initial_controls(np.random.default_rng(1), 0.5)
    value, gradient = tp.ENGINES["adjoint"](ocp, theta, ocp.inputs, ocp.labels)
    reference_value, reference = tp.ENGINES["autograd"](ocp, theta, ocp.inputs, ocp.labels)
    assert value == pytest.approx(reference_value, rel=1e-12)
    np.testing.assert_allclose(gradient, reference, rtol=1e-10, atol=1e-13)


def test_an_objective_alone_trains_with_autograd():
    system = TiedResNet(state_dim=2, depth=5)
    assert available_engines(system) == ("autograd",)
    ocp = _ocp(system, stage=False)
    solution = tp.solve_ocp(ocp, method=("adam", "lbfgs"), steps=(40, 40), options=({"lr": 0.05}, {}), seed=2,
                            progress=False)
    assert solution.extra["engine"] == "autograd" and solution.status in ("converged", "max_steps", "stalled")
    assert solution.objective < 0.9 * solution.history["objective"][0]
    assert solution.train_states is None and not solution.network.has_states
    with pytest.raises(TypeError, match="no layer states"):
        solution.network.states(ocp.inputs)
    for engine in ("adjoint", "system", "scheme"):
        with pytest.raises(ValueError, match=r"engine: expected 'auto' or 'autograd' for TiedResNet"):
            tp.solve_ocp(ocp, engine=engine, steps=1, progress=False)


def test_engines_follow_from_the_capabilities_of_the_built_in_systems():
    assert available_engines(tp.TwoLayerResNet(state_dim=2, depth=3)) == ("adjoint", "buffered", "autograd")
    assert available_engines(tp.ShortcutNetwork(state_dim=2, units=3)) == ("adjoint", "autograd")
    assert available_engines(tp.NeuralODE(state_dim=2, depth=3, horizon=1.0)) == ("scheme", "system")
    assert tp.TwoLayerResNet(state_dim=3, depth=2, hidden_dim=7).layer_width == 7
    assert tp.SingleLayerResNet(state_dim=3, depth=2).layer_width == 3


FLAT_SETTINGS = {"engine": "adjoint", "dtype": "float32", "init_scale": 0.5, "initial_controls": np.zeros(3),
                 "keep_states": False}
MODULE_SETTINGS = {"normalise": ((0.5,), (0.2,)), "augment": lambda images, generator: images,
                   "exit_lr_factor": 2.0, "eval_batch_size": 64, "amp": True, "channels_last": True,
                   "sync_batchnorm": True, "sync_every": 4, "compile": "default", "loader_workers": 2,
                   "cuda_graph": True, "cudnn_benchmark": True}


def test_the_settings_of_each_kind_are_declared_once():
    from dataclasses import fields

    from turnpike.backends import FlatSettings, ModuleSettings
    assert {f.name for f in fields(FlatSettings)} == set(FLAT_SETTINGS)
    assert {f.name for f in fields(ModuleSettings)} == set(MODULE_SETTINGS)


@pytest.mark.parametrize("name", sorted(FLAT_SETTINGS))
def test_a_flat_setting_given_to_a_module_system_is_refused(name):
    net = tp.preact_resnet(widths=(2,), blocks_per_stage=(1,), in_channels=1, num_classes=2)
    ocp = tp.OCP(net, torch.zeros((4, 1, 4, 4), dtype=torch.uint8), np.array([0, 1, 0, 1]),
                 terminal_cost=tp.CrossEntropy(num_classes=2))
    with pytest.raises(ValueError, match=rf"^{name}: expected one of the settings of the module system "
                                         rf"ResidualNetwork \(normalise, .*\), got one of the flat systems' backend"):
        tp.solve_ocp(ocp, method="sgd", steps=1, progress=False, **{name: FLAT_SETTINGS[name]})


@pytest.mark.parametrize("name", sorted(MODULE_SETTINGS))
def test_a_module_setting_given_to_a_flat_system_is_refused(name):
    ocp = _ocp(SineResNet(state_dim=2, depth=2))
    with pytest.raises(ValueError, match=rf"^{name}: expected one of the settings of the flat system SineResNet "
                                         rf"\(engine, dtype, .*\), got one of the module systems' backend"):
        tp.solve_ocp(ocp, method="adam", steps=1, progress=False, **{name: MODULE_SETTINGS[name]})


def test_an_unknown_setting_is_refused_with_the_valid_ones():
    with pytest.raises(ValueError, match=r"^enigne: expected one of the settings of the flat system SineResNet "
                                         r"\(engine, dtype, init_scale, initial_controls, keep_states\), got an "
                                         r"unknown setting"):
        tp.solve_ocp(_ocp(SineResNet(state_dim=2, depth=2)), steps=1, progress=False, enigne="adjoint")


def _module_ocp():
    net = tp.preact_resnet(widths=(2,), blocks_per_stage=(1,), in_channels=1, num_classes=2)
    return tp.OCP(net, torch.zeros((4, 1, 4, 4), dtype=torch.uint8), np.array([0, 1, 0, 1]),
                  terminal_cost=tp.CrossEntropy(num_classes=2))


@pytest.mark.parametrize("kind", ["flat", "module"])
@pytest.mark.parametrize("method, options, pattern", [
    ("sgd", {"momentum": 1.5}, r"options for 'sgd'\['momentum'\]: expected a number < 1.0, got 1.5"),
    ("sgd", {"momentum": -1.0}, r"options for 'sgd'\['momentum'\]: expected a number >= 0.0, got -1.0"),
    ("sgd", {"momentum": 0.0, "nesterov": True}, r"\['nesterov'\]: expected False when momentum is 0"),
    ("adam", {"beta1": 1.0}, r"options for 'adam'\['beta1'\]"),
    ("adam", {"lr": 0.0}, r"options for 'adam'\['lr'\]"),
    ("adam", {"warmup_steps": 5}, r"\['warmup_steps'\]: expected fewer than the phase's 5 steps"),
])
def test_a_method_option_out_of_range_is_refused_before_training(kind, method, options, pattern):
    ocp = _module_ocp() if kind == "module" else _ocp(SineResNet(state_dim=2, depth=2))
    calls = []
    with pytest.raises(ValueError, match=pattern):
        tp.solve_ocp(ocp, method=method, steps=5, options=options, progress=False,
                     callback=lambda *step: calls.append(step))
    assert not calls


@pytest.mark.parametrize("options, pattern", [
    ({"schedule": "multistep"}, r"\['milestones'\]: expected at least one step for the multistep schedule"),
    ({"schedule": "multistep", "milestones": (4, 2)}, r"\['milestones'\]: expected increasing steps"),
    ({"schedule": "multistep", "milestones": (2,), "decay": 0.0}, r"\['decay'\]"),
])
def test_a_multistep_schedule_needs_increasing_milestones(options, pattern):
    with pytest.raises(ValueError, match=pattern):
        tp.solve_ocp(_module_ocp(), method="sgd", steps=5, options=options, progress=False)


def test_flat_methods_have_no_multistep_schedule():
    with pytest.raises(ValueError, match=r"options for 'adam'\['schedule'\]: expected one of .*'constant', 'cosine'"):
        tp.solve_ocp(_ocp(SineResNet(state_dim=2, depth=2)), method="adam", steps=5,
                     options={"schedule": "multistep"}, progress=False)


def test_the_schedules_are_the_documented_formulas():
    from turnpike.backends._schedules import learning_rate

    base = {"lr": 0.2, "warmup_steps": 0, "milestones": (3, 6), "decay": 0.1, "final_lr_fraction": 0.1}
    multistep = [learning_rate({**base, "schedule": "multistep"}, t, 8) for t in range(8)]
    np.testing.assert_allclose(multistep, [0.2] * 3 + [0.02] * 3 + [0.002] * 2, rtol=1e-15)
    cosine = [learning_rate({**base, "schedule": "cosine"}, t, 8) for t in (0, 4, 8)]
    np.testing.assert_allclose(cosine, [0.2, 0.02 + 0.5 * 0.18, 0.02], rtol=1e-15)
    warm = [learning_rate({**base, "schedule": "constant", "warmup_steps": 4}, t, 8) for t in range(5)]
    np.testing.assert_allclose(warm, [0.05, 0.1, 0.15, 0.2, 0.2], rtol=1e-15)


def test_import_turnpike_loads_no_heavy_optional_library():
    """``import turnpike`` costs torch's import and little more (0.09-0.13 s more on the 2-core development
    machine, 2026-12-04; it was 0.43 s with scipy.optimize): the analyses load scipy, cvxpy, torchdiffeq and
    matplotlib when they run."""
    import subprocess
    import sys
    heavy = ("scipy", "cvxpy", "torchdiffeq", "matplotlib")
    code = f"import sys, turnpike; print([m for m in {heavy!r} if m in sys.modules])"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"


@pytest.mark.parametrize("name, module", [("run_spirals", "experiments"), ("ResNet54Config", "experiments"),
                                          ("depth_bounds_from_runs", "experiments"),
                                          ("init_distributed", "distributed"), ("SyncedBatchNorm2d", "distributed")])
def test_names_of_the_subpackages_live_there_only(name, module):
    """The top-level aliases of a release ago are gone (issue 29): each name is its subpackage's."""
    import importlib
    assert hasattr(importlib.import_module(f"turnpike.{module}"), name)
    with pytest.raises(AttributeError, match=f"has no attribute '{name}'"):
        getattr(tp, name)


def test_the_top_level_is_the_core_a_user_composes():
    assert {"OCP", "solve_ocp", "Solution", "ModuleSolution", "Status", "preact_resnet", "TwoLayerResNet", "NeuralODE",
            "SoftCrossEntropy", "data", "theory"} <= set(tp.__all__)
    assert all(not name.startswith("run_") and not name.endswith("Config") for name in tp.__all__)
    assert all(hasattr(tp, name) for name in tp.__all__)
    with pytest.raises(AttributeError, match="has no attribute 'run_everything'"):
        tp.run_everything
