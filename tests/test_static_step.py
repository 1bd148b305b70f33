"""The graph-ready training step of the module backend (``cuda_graph``; issue 30) on a CPU.

A CUDA graph replays recorded kernels on recorded memory, so the step it captures must be the same
operators on the same tensors every time and never read a value back to the host. These tests check
exactly that on a CPU, where the graph-ready ("static") step runs eagerly: it equals today's eager
step bit for bit, records the same operator sequence on every step with no host read, keeps every
tensor at its address, and carries its learning rates as tensors through a resume. The capture and
replay logic itself runs here with a stand-in graph that records the function it captured.
"""
import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import turnpike as tp
from turnpike.backends._module_step import StaticStep, StepMode, step_mode
from turnpike.backends._schedules import learning_rate
from turnpike.models import BasicBlock, ResNet

CLASSES = 4
HOST_READS = ("aten._local_scalar_dense", "aten.item", "aten.is_nonzero", "aten.equal")


def images_and_labels(count=40, seed=0, channels=1, size=8):
    """Images whose class is a bright quadrant (float64 in [0, 1]): 40 samples, batches 16, 16, 8."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, CLASSES, count)
    images = rng.integers(0, 60, (count, channels, size, size)).astype(np.float64)
    half = size // 2
    for i, y in enumerate(labels):
        r, c = divmod(int(y), 2)
        images[i, :, half * r:half * r + half, half * c:half * c + half] += 150
    return torch.as_tensor(images / 255), labels


def preact(exits, seed=0):
    torch.manual_seed(seed)
    return tp.preact_resnet(widths=(4, 4), blocks_per_stage=(2, 2), in_channels=1, num_classes=CLASSES,
                            exits=exits).double()


def torchvision_layout(exits):
    torch.manual_seed(0)
    return tp.residual_network(ResNet(BasicBlock, [1, 1, 1, 1], num_classes=CLASSES, base=4, in_channels=1),
                               exits=exits).double()


def ocp_of(net, gamma, count=40):
    images, labels = images_and_labels(count)
    loss = tp.CrossEntropy(num_classes=CLASSES)
    stage = tp.InputPenalty(1e-3) if gamma == 0 else gamma * loss + tp.InputPenalty(1e-3)
    return tp.OCP(net, images, labels, stage_cost=stage, terminal_cost=loss)


def flip_and_crop(images, generator):
    return tp.data.augment(images, crop_padding=1, generator=generator)


def backend_of(net, gamma, *, method="sgd", steps=10, graph=True, count=40, seed=0, **settings):
    """A module backend in its first phase: SGD with momentum (or Adam/AdamW) on a multistep schedule."""
    backend = tp.backends.make_backend(ocp_of(net, gamma, count), seed=seed, batch_size=16, device=torch.device("cpu"),
                                       settings={"cuda_graph": graph, "augment": flip_and_crop, **settings})
    options = {**backend.methods[method].defaults, "lr": 0.05, "schedule": "multistep", "milestones": (2, 4)}
    backend.begin_phase(0, backend.methods[method], steps, options)
    return backend


def take_steps(backend, steps, first=0):
    values = []
    for step in range(first, first + steps):
        values.append(float(backend.evaluate(0, step)))
        backend.update(step)
    return values


def state_of(backend):
    """Every parameter, buffer and optimiser state tensor of the backend's module, as copies."""
    module = [t.detach().clone() for t in backend.module.state_dict().values()]
    optimiser = [v.clone() for s in backend.optimiser.state.values() for v in s.values() if torch.is_tensor(v)]
    return module, optimiser


def assert_same(a, b):
    for group_a, group_b in zip(a, b):
        assert len(group_a) == len(group_b)
        for x, y in zip(group_a, group_b):
            assert torch.equal(x, y)


NETWORKS = [("preact", "ws", 0.1, "sgd"), ("preact", "full", 0.1, "sgd"), ("preact", "standard", 0.0, "sgd"),
            ("preact", "ws", 0.1, "adam"), ("preact", "full", 0.1, "adamw"), ("torchvision", "ws", 0.1, "sgd"),
            ("torchvision", "full", 0.0, "sgd")]


@pytest.mark.parametrize("kind, exits, gamma, method", NETWORKS)
def test_static_step_equals_the_eager_step_bit_for_bit(kind, exits, gamma, method):
    """5 steps (an epoch of batches 16, 16, 8 and two more, two learning-rate milestones), float64."""
    build = preact if kind == "preact" else torchvision_layout
    runs = []
    for graph in (False, True):
        backend = backend_of(build(exits), gamma, method=method, graph=graph)
        runs.append((take_steps(backend, 5), state_of(backend)))
    assert runs[0][0] == runs[1][0]
    assert_same(runs[0][1], runs[1][1])


class OperatorRecorder(TorchDispatchMode):
    """The aten operators a block of code runs, with the shapes of their tensor arguments."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        leaves = torch.utils._pytree.tree_leaves((args, kwargs))
        self.calls.append((str(func), tuple(tuple(t.shape) for t in leaves if isinstance(t, torch.Tensor))))
        return func(*args, **(kwargs or {}))


def recorded_step(backend, step):
    """(J, the operators of one whole step: batch, augmentation, forward, backward, optimiser)."""
    recorder = OperatorRecorder()
    with recorder:
        value = backend.evaluate(0, step)
        backend.update(step)
    return value, recorder.calls


@pytest.mark.parametrize("kind, exits, gamma, method", [NETWORKS[0], NETWORKS[2], NETWORKS[3], NETWORKS[5]])
def test_consecutive_static_steps_run_the_same_operators_and_read_nothing_back(kind, exits, gamma, method):
    """Steps 1 and 2 of an epoch of three full batches (step 0 also draws the epoch's permutation)."""
    build = preact if kind == "preact" else torchvision_layout
    backend = backend_of(build(exits), gamma, method=method, sync_every=4, count=48)
    take_steps(backend, 1)
    value, first = recorded_step(backend, 1)
    _, second = recorded_step(backend, 2)
    assert isinstance(value, torch.Tensor)                     # sync_every > 1: J stays on the device
    assert len(first) > 100 and first == second
    assert [name for name, _ in first if name.startswith(HOST_READS)] == []
    # the eager path of today reads the labels' range back (one_hot's check) where this one does not
    eager = backend_of(build(exits), gamma, method=method, sync_every=4, count=48, graph=False)
    take_steps(eager, 1)
    assert [name for name, _ in recorded_step(eager, 1)[1] if name.startswith(HOST_READS)] == []


def test_a_shorter_last_batch_runs_the_static_step_eagerly_without_host_reads():
    backend = backend_of(preact("ws"), 0.1, sync_every=4)
    take_steps(backend, 2)
    _, calls = recorded_step(backend, 2)                      # 8 samples where the buffers hold 16
    assert [name for name, _ in calls if name.startswith(HOST_READS)] == []
    assert backend._static.images.shape[0] == 16 and backend._last[0].shape[0] == 8


def test_tensors_of_the_static_step_keep_their_addresses():
    backend = backend_of(preact("full"), 0.1, method="sgd", steps=10, count=48)
    addresses = []
    for step in range(3):
        backend.evaluate(0, step)
        backend.update(step)
        module = backend.module
        addresses.append({
            "parameters": [p.data_ptr() for p in module.parameters()],
            "gradients": [p.grad.data_ptr() for p in module.parameters()],
            "momentum": [backend.optimiser.state[p]["momentum_buffer"].data_ptr() for p in module.parameters()],
            "buffers": [b.data_ptr() for b in module.buffers()],     # BatchNorm and per-exit statistics
            "inputs": [backend._static.images.data_ptr(), backend._static.labels.data_ptr()],
            "learning rates": [g["lr"].data_ptr() for g in backend.optimiser.param_groups],
        })
    assert addresses[0] == addresses[1] == addresses[2]
    assert len(addresses[0]["buffers"]) > 2 * backend.module.depth          # exit statistics included


def test_learning_rate_tensors_follow_the_schedule_and_survive_a_resume(tmp_path):
    backend = backend_of(preact("full"), 0.1, steps=8)
    tensors = [g["lr"] for g in backend.optimiser.param_groups]
    assert len(tensors) == 2 and all(isinstance(t, torch.Tensor) for t in tensors)
    for step in range(4):
        backend.evaluate(0, step)
        backend.update(step)
        rate = learning_rate(backend.options, step, 8)
        assert [float(t) for t in tensors] == [rate, rate * backend.exit_lr_factor]
    # a checkpoint inside step 4 (after its objective, before its update), then a new backend resumes
    backend.evaluate(0, 4)
    common = {"fingerprint": "f", "phase": 0, "phase_step": 4, "history": {}}
    backend.write_checkpoint(tmp_path / "c.pt", common, with_optimiser=True)
    backend.update(4)
    uninterrupted = take_steps(backend, 3, first=5)
    resumed = backend_of(preact("full"), 0.1, steps=8)
    _, optimiser_state = resumed.read_checkpoint(tmp_path / "c.pt")
    own = [g["lr"] for g in resumed.optimiser.param_groups]
    resumed.load_optimiser_state(optimiser_state)
    assert [g["lr"] for g in resumed.optimiser.param_groups] == own          # the same tensor objects
    resumed.evaluate(0, 4)
    resumed.update(4)
    assert float(own[0]) == learning_rate(resumed.options, 4, 8)
    assert take_steps(resumed, 3, first=5) == uninterrupted
    assert_same(state_of(resumed), state_of(backend))


def test_a_solve_with_cuda_graph_on_a_cpu_says_why_and_resumes_like_the_eager_one(tmp_path):
    settings = dict(method="sgd", steps=9, batch_size=16, options={"lr": 0.05, "schedule": "multistep",
                                                                  "milestones": (4,)},
                    progress=False, augment=flip_and_crop, test_data=images_and_labels(16, seed=1))
    eager = tp.solve_ocp(ocp_of(preact("ws"), 0.1), **settings)
    assert eager.extra["training_step"] == "eager"
    path, chunks = tmp_path / "c.pt", []
    while not chunks or chunks[-1].status == "time_limit":
        chunks.append(tp.solve_ocp(ocp_of(preact("ws"), 0.1), checkpoint=path, resume=True, time_limit=0.0,
                                   cuda_graph=True, **settings))
        assert len(chunks) < 10
    assert len(chunks) == 3
    final = chunks[-1]
    assert final.extra["training_step"] == "static"
    assert "CUDA graphs need a CUDA device, got cpu" in final.extra["training_step_reason"]
    np.testing.assert_array_equal(final.history["objective"], eager.history["objective"])
    for (name, a), b in zip(eager.network.state_dict().items(), final.network.state_dict().values()):
        assert torch.equal(a, b), name
    np.testing.assert_array_equal(final.exit_metrics["test_accuracy"], eager.exit_metrics["test_accuracy"])


def test_two_runs_interleaved_in_one_process_equal_each_run_alone():
    alone = []
    for seed in (0, 1):                      # two different runs: their networks, batches and crops
        backend = backend_of(preact("ws", seed), 0.1, seed=seed)
        take_steps(backend, 6)
        alone.append(state_of(backend))
    assert not torch.equal(alone[0][0][0], alone[1][0][0])
    backends = [backend_of(preact("ws", seed), 0.1, seed=seed) for seed in (0, 1)]
    for step in range(6):                    # step by step, one run then the other
        for backend in backends:
            backend.evaluate(0, step)
            backend.update(step)
    for backend, expected in zip(backends, alone):
        assert_same(state_of(backend), expected)


class RecordedGraph:
    """A stand-in for torch.cuda.CUDAGraph on a CPU: replay runs the captured function again and writes its
    tensors into the outputs the capture returned (what a replay does on the graph's memory)."""

    def __init__(self, function, args, outputs):
        self.function, self.args, self.outputs, self.replays = function, args, outputs, 0

    def replay(self):
        self.replays += 1
        result = self.function(*self.args)
        if self.outputs is not None:
            with torch.no_grad():
                for static, new in zip(self.outputs, result):
                    static.copy_(new)


def test_capture_and_replay_sequence_trains_like_the_eager_step(monkeypatch):
    """The graphed control flow with stand-in graphs: warm-up steps eagerly, graph 1 captured at the next
    full batch and graph 2 at its update, shorter batches eager, recapture after a loaded optimiser state;
    the weights equal the eager run's."""
    captured = []

    def capture(self, function, *args):
        """Capturing runs nothing: the gradient's static outputs are made by a run whose effects on the
        module's buffers (BatchNorm statistics) are undone."""
        outputs = None
        if args:
            buffers = [b.clone() for b in graphed.module.buffers()]
            outputs = tuple(t.detach().clone() for t in function(*args))
            with torch.no_grad():
                torch._foreach_copy_(list(graphed.module.buffers()), buffers)
        graph = RecordedGraph(function, args, outputs)
        captured.append(graph)
        return graph, outputs

    monkeypatch.setattr(StaticStep, "_capture", capture)
    monkeypatch.setattr(StaticStep, "_eagerly", lambda self, function, *args: function(*args))
    monkeypatch.setattr(torch.cuda, "graph_pool_handle", lambda: None)
    eager = backend_of(preact("ws"), 0.1, graph=False)
    graphed = backend_of(preact("ws"), 0.1)
    graphed._static.graphed = True
    assert take_steps(graphed, 9) == take_steps(eager, 9)
    assert_same(state_of(graphed), state_of(eager))
    # batches 16, 16, 8 per epoch: warm-up at steps 0, 1, 3 (2 is short), capture at step 4
    assert len(captured) == 2 and graphed._static.captured
    full_batches_after_capture = [s for s in range(4, 9) if s % 3 != 2]
    assert captured[0].replays == len(full_batches_after_capture) and captured[1].replays == 5
    # a loaded optimiser state: warm up again, then capture anew
    graphed.load_optimiser_state(graphed.optimiser.state_dict())
    eager.load_optimiser_state(eager.optimiser.state_dict())
    assert not graphed._static.captured
    assert take_steps(graphed, 6, first=9) == take_steps(eager, 6, first=9)
    assert len(captured) == 4
    assert_same(state_of(graphed), state_of(eager))


def test_step_mode_refuses_what_a_graph_cannot_hold():
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert step_mode(True, device=cuda, world_size=1, compile_mode=None) == (StepMode.GRAPHED, "")
    assert step_mode(False, device=cuda, world_size=1, compile_mode=None)[0] is StepMode.EAGER
    assert step_mode(True, device=cpu, world_size=1, compile_mode="default")[0] is StepMode.STATIC
    with pytest.raises(ValueError, match=r"cuda_graph: expected False inside a process group of 2 ranks"):
        step_mode(True, device=cuda, world_size=2, compile_mode=None)
    with pytest.raises(ValueError, match=r"cuda_graph: expected False with compile='reduce-overhead'"):
        tp.solve_ocp(ocp_of(preact("ws"), 0.1), method="sgd", steps=1, batch_size=16, progress=False,
                     cuda_graph=True, compile="reduce-overhead")
    with pytest.raises(ValueError, match=r"cuda_graph: expected True or False"):
        tp.solve_ocp(ocp_of(preact("ws"), 0.1), method="sgd", steps=1, progress=False, cuda_graph="yes")
    with pytest.raises(ValueError, match=r"cudnn_benchmark: expected True or False"):
        tp.solve_ocp(ocp_of(preact("ws"), 0.1), method="sgd", steps=1, progress=False, cudnn_benchmark=1)


def test_cudnn_benchmark_is_set_for_the_step_and_restored(monkeypatch):
    seen = []
    backend = backend_of(preact("ws"), 0.1, graph=False, cudnn_benchmark=True)
    original = backend._gradient

    def spy(*args):
        seen.append(torch.backends.cudnn.benchmark)
        return original(*args)

    monkeypatch.setattr(backend, "_gradient", spy)
    before = torch.backends.cudnn.benchmark
    take_steps(backend, 2)
    assert seen == [True, True] and torch.backends.cudnn.benchmark == before
    assert backend_of(preact("ws"), 0.1).cudnn_benchmark is False         # "auto": on for CUDA only


def test_the_cli_trains_with_cuda_graph_on_a_cpu_and_records_the_step(tmp_path, capsys):
    import json

    from turnpike.cli import main
    argv = ["resnet54", "--dataset", "mnist", "--arch", "homogeneous", "--width", "4", "--blocks-per-stage", "1",
            "--epochs", "1", "--train-subset", "64", "--test-subset", "32", "--batch-size", "24", "--quiet",
            "--no-plots"]
    assert main(argv + ["--out", str(tmp_path / "graph"), "--cuda-graph"]) == 0
    assert "--cuda-graph on cpu: CUDA graphs need a CUDA device" in capsys.readouterr().err
    assert main(argv + ["--out", str(tmp_path / "eager")]) == 0
    graph, eager = (json.loads((tmp_path / name / "metrics.json").read_text()) for name in ("graph", "eager"))
    assert graph["training_step"] == "static" and eager["training_step"] == "eager"
    configs = [json.loads((tmp_path / name / "config.json").read_text()) for name in ("graph", "eager")]
    assert [c["config"]["cuda_graph"] for c in configs] == [True, False]
    for key in ("exit_train_loss", "exit_test_accuracy", "objective", "test_accuracy"):
        assert graph[key] == eager[key], key
