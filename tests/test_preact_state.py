"""States written by the former PreActResNet class load into preact_resnet (issue 29): its weights files, run
folders and checkpoints, optimiser state included, through one key map."""
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

import turnpike as tp
from turnpike.backends import make_backend
from turnpike.experiments import load_resnet54_network
from turnpike.systems._preact_former import FormerPreActResNet

DATA = Path(__file__).parent / "data"
STUDY = Path(__file__).parent.parent / "benchmarks" / "results" / "gpu" / "fmnist-study.tgz"


@pytest.fixture(scope="module")
def former():
    return torch.load(DATA / "former-preact.pt", weights_only=True)


def network(stored, exits):
    return tp.preact_resnet(blocks_per_stage=stored["blocks_per_stage"], widths=stored["widths"], num_classes=3,
                            exits=exits).double()


@pytest.mark.parametrize("exits", ["full", "ws"])
def test_a_former_state_dict_loads_and_gives_the_exits_it_gave(former, exits):
    """tests/data/former-preact.pt holds, per variant, the former class's state after 2 SGD steps and the exit
    logits it computed in eval mode (a full network with learned skips; a homogeneous one with trailing skips)."""
    stored = former[exits]
    net = network(stored, exits)
    net.load_state_dict(stored["state_dict"])          # strict: every key mapped, none left over
    net.eval()
    with torch.no_grad():
        torch.testing.assert_close(net.exit_logits(stored["inputs"]), stored["exit_logits"], rtol=1e-12, atol=1e-12)
    old = stored["state_dict"]
    norm = next(m for m in net.head if isinstance(m, torch.nn.BatchNorm2d))
    assert torch.equal(norm.running_mean, old["exit_running_mean"][-1])
    assert torch.equal(net.exit_statistics[-1].running_var, old["exit_running_var"][:-1])
    assert torch.equal(net.head[-1].weight, old["head_linear.weight"])


@pytest.mark.parametrize("exits", ["full", "ws"])
def test_a_former_checkpoint_resumes_each_parameters_momentum_in_its_shape(former, exits, tmp_path):
    """A checkpoint (module and optimiser state) of the former class: the optimiser listed the head's BatchNorm
    first and held the full exits' copies as (rows, C_out, C_in) tensors; read back, every parameter gets its own
    momentum (found by the parameter's stored value, not by the key map), in its shape, and a step runs."""
    stored = former[exits]
    net = network(stored, exits).float()              # the backend's float32 inputs
    path = tmp_path / "checkpoint.pt"
    torch.save({"module": stored["state_dict"], "optimiser": stored["optimiser"], "history": {}, "fingerprint": "",
                "phase": 0, "phase_step": 2}, path)
    ocp = tp.OCP(net, torch.zeros((4, 3, 9, 9), dtype=torch.uint8), np.array([0, 1, 2, 0]),
                 stage_cost=0.5 * tp.CrossEntropy(num_classes=3), terminal_cost=tp.CrossEntropy(num_classes=3))
    backend = make_backend(ocp, seed=0, batch_size=4, device="cpu", settings={})
    _, optimiser = backend.read_checkpoint(path)
    sgd = backend.methods["sgd"]
    backend.begin_phase(0, sgd, 10, {**sgd.defaults, "lr": 0.1, "momentum": 0.9})
    backend.load_optimiser_state(optimiser)
    momenta = backend.optimiser.state
    assert len(momenta) == len(stored["parameters"]) == len(list(net.parameters()))
    for i, value in enumerate(stored["parameters"]):
        owner = [p for p in net.parameters() if p.numel() == value.numel()
                 and torch.equal(p.detach(), value.reshape(p.shape).float())]
        assert len(owner) == 1, i
        mine = momenta[owner[0]]["momentum_buffer"]
        assert mine.shape == owner[0].shape
        assert torch.equal(mine, stored["optimiser"]["state"][i]["momentum_buffer"].reshape(mine.shape).float())
    backend.evaluate(0, 0)
    backend.update(0)


def test_the_stored_study_folder_loads_and_its_checkpoint_matches_the_run_fingerprint(tmp_path):
    """The Fashion-MNIST study run (benchmarks/results/gpu/fmnist-study.tgz, written on an H200 by the former
    class) loads as a preact_resnet, and its checkpoint resumes: the backend's fingerprint fields equal the
    stored ones and the module and optimiser states load."""
    with tarfile.open(STUDY) as archive:
        archive.extractall(tmp_path, filter="data")
    folder = tmp_path / "runs" / "fmnist" / "standard"
    net = load_resnet54_network(folder)
    saved = torch.load(folder / "network.pt", map_location="cpu", weights_only=True)["state_dict"]
    assert net.architecture == "PreActResNet" and net.depth == 54
    assert torch.equal(net.head[0].running_var, saved["exit_running_var"][54])
    assert torch.equal(net.exit_statistics[0].running_mean, saved["exit_running_mean"][:54])
    assert torch.equal(net.blocks[40].branch[2].weight, saved["blocks.40.branch.2.weight"])

    checkpoint = torch.load(folder / "checkpoint.pt", map_location="cpu", weights_only=True)
    fingerprint = json.loads(checkpoint["fingerprint"])
    images = torch.zeros(fingerprint["data"], dtype=torch.uint8)
    ocp = tp.OCP(net.train(), images, np.zeros(len(images), dtype=np.int64),
                 stage_cost=tp.InputPenalty(0.5e-4), terminal_cost=tp.CrossEntropy(num_classes=10))
    backend = make_backend(ocp, seed=0, batch_size=2, device="cpu", settings={"amp": fingerprint["amp"]})
    assert backend.fingerprint().items() <= fingerprint.items()
    common, optimiser = backend.read_checkpoint(folder / "checkpoint.pt")
    sgd = backend.methods["sgd"]
    backend.begin_phase(0, sgd, 10, {**sgd.defaults, "lr": 0.1, "momentum": 0.9})
    backend.load_optimiser_state(optimiser)
    assert common["phase_step"] == checkpoint["phase_step"] > 0
    norm = net.head[0].weight                          # listed first by the former class's optimiser
    assert torch.equal(backend.optimiser.state[norm]["momentum_buffer"],
                       checkpoint["optimiser"]["state"][0]["momentum_buffer"])
    backend.evaluate(0, 0)
    backend.update(0)                                  # the resumed step runs on the reordered momenta


def test_a_state_in_the_new_keys_is_not_taken_for_the_former_layout():
    net = tp.preact_resnet(blocks_per_stage=1, widths=(2, 4), num_classes=3)
    assert not FormerPreActResNet().wrote(net.state_dict())
    assert net.optimiser_order(net.state_dict()) is None
