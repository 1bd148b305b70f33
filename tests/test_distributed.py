"""DistributedDataParallel on CPU (gloo, 2 processes): the ranks take one process's steps.

Each test starts two ranks the way torchrun does (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_* in the
environment, :func:`turnpike.distributed.init_distributed`) and compares what they trained with an independent
computation in this process.
"""
import builtins
import json
import os
import socket
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

import turnpike as tp
from turnpike.backends import make_backend
from turnpike.cli import main

from test_module_backend import tiny_net, tiny_ocp

WORLD = 2
SOLVE = dict(method="sgd", batch_size=16, options={"lr": 0.05}, progress=False, normalise=((0.3,), (0.3,)))


def _crop(images, generator):
    return tp.data.augment(images, crop_padding=1, generator=generator)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _rank_entry(rank, port, worker, folder, arguments):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    # gloo picks its network interface from the host name, which a sandbox may not resolve: use loopback
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    torch.set_num_threads(1)
    assert tp.distributed.init_distributed("cpu") == "cpu"
    try:
        worker(rank, Path(folder), *arguments)
    except BaseException:
        tp.distributed.finish_distributed(wait=False)      # the other rank may never arrive
        raise
    # both ranks done before either tears gloo down: a rank that left early once aborted its peer
    # ("terminate called without an active exception") on an oversubscribed machine
    tp.distributed.finish_distributed()


def run_ranks(worker, folder, *arguments):
    """``worker(rank, folder, *arguments)`` on two ranks of a gloo process group."""
    mp.spawn(_rank_entry, args=(_free_port(), worker, str(folder), arguments), nprocs=WORLD, join=True)


def _forbid_writes_outside_rank_zero(rank, folder):
    """On ranks other than 0 any file written under ``folder`` fails the run (the run folder's writers go
    through ``open`` or ``write_atomically``'s temporary file; the test's own ``torch.save`` to a path
    does not, it writes through torch's C++ file writer)."""
    if rank == 0:
        return
    folder = str(folder)
    real_open, real_mkstemp = builtins.open, tempfile.mkstemp

    def guarded_open(file, mode="r", *args, **kwargs):
        if any(c in mode for c in "wax+") and str(file).startswith(folder):
            raise AssertionError(f"rank {rank} wrote {file}")
        return real_open(file, mode, *args, **kwargs)

    def guarded_mkstemp(*args, dir=None, **kwargs):
        if dir is not None and str(dir).startswith(folder):
            raise AssertionError(f"rank {rank} wrote into {dir}")
        return real_mkstemp(*args, dir=dir, **kwargs)

    builtins.open, tempfile.mkstemp = guarded_open, guarded_mkstemp


def _state(solution):
    return {"network": solution.network.state_dict(), "objective": solution.history["objective"].tolist()}


# --- workers (module level: the ranks import them) -------------------------------------------------
def _train_worker(rank, folder, exits, gamma, decay, sync, steps, batch_size, augment):
    solution = tp.solve_ocp(tiny_ocp(tiny_net(exits), gamma, decay), steps=steps, sync_batchnorm=sync,
                            augment=_crop if augment else None, **{**SOLVE, "batch_size": batch_size})
    torch.save(_state(solution), folder / f"rank{rank}.pt")


def _resume_worker(rank, folder):
    _forbid_writes_outside_rank_zero(rank, folder)
    settings = dict(SOLVE, steps=9, checkpoint_every=2, augment=_crop, sync_batchnorm=True,
                    checkpoint=folder / "checkpoint.pt")
    stopped = tp.solve_ocp(tiny_ocp(tiny_net("full")), callback=lambda step, value, net: step < 6, **settings)
    assert stopped.status == "stopped"
    # a time limit passed on one rank only still stops both at the same checkpoint (any_rank)
    limited = tp.solve_ocp(tiny_ocp(tiny_net("full")), resume=True, time_limit=0.0 if rank == 1 else 1e9,
                           **settings)
    assert limited.status == "time_limit" and len(limited.history["step"]) == 7
    resumed = tp.solve_ocp(tiny_ocp(tiny_net("full")), resume=True, **settings)
    torch.save(_state(resumed), folder / f"resumed{rank}.pt")


def _cli_worker(rank, folder, argv):
    _forbid_writes_outside_rank_zero(rank, folder / "run")
    assert main(argv) == 0


# --- tests -------------------------------------------------------------------------------------------
def _assert_same_network(actual: dict, expected: dict, *, buffers=True, atol=2e-6):
    for name, value in expected.items():
        if not buffers and name in dict(tiny_net("full").named_buffers()):
            continue
        torch.testing.assert_close(actual[name], value, atol=atol, rtol=1e-5, msg=name)


@pytest.mark.parametrize("exits, gamma, decay", [("full", 0.1, 1e-4), ("standard", 0.0, 1e-4), ("full", 0.0, 0.0)])
def test_synced_ranks_take_the_steps_of_one_process(tmp_path, exits, gamma, decay):
    """Shares of every batch on two ranks with the whole batch's BN statistics = one process on the
    whole batch: parameters, BatchNorm running statistics (backbone and per exit) and objectives.
    (Full exits without stage cost and decay: their parameters get no gradient, which DDP is told.)"""
    run_ranks(_train_worker, tmp_path, exits, gamma, decay, True, 4, 15, True)   # shares of 8 and 7, then 2 and 1
    one = tp.solve_ocp(tiny_ocp(tiny_net(exits), gamma, decay), steps=4, augment=_crop, **{**SOLVE, "batch_size": 15})
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    for rank in ranks:
        _assert_same_network(rank["network"], one.network.state_dict())
        np.testing.assert_allclose(rank["objective"], one.history["objective"], rtol=1e-5)
    moved = one.network.state_dict()["blocks.0.branch.2.weight"] - tiny_net(exits).state_dict()["blocks.0.branch.2.weight"]
    assert moved.abs().max() > 1e-3                   # the comparison is of trained weights


def test_unsynced_ranks_normalise_by_their_share(tmp_path):
    """Plain DDP BatchNorm (the default): one step equals the mean of the two halves' objectives, each
    half normalised by its own statistics (ghost batches), computed here in one process."""
    run_ranks(_train_worker, tmp_path, "ws", 0.1, 1e-4, False, 1, None, False)
    ocp = tiny_ocp(tiny_net("ws"))
    backend = make_backend(ocp, seed=0, batch_size=None, device=torch.device("cpu"),
                           settings={"normalise": SOLVE["normalise"]})
    images, labels = ocp.inputs, torch.as_tensor(ocp.labels)
    halves = [backend.objective(backend.prepare(images[part]), labels[part])
              for part in (slice(0, 24), slice(24, 48))]
    objective = 0.5 * (halves[0] + halves[1])
    objective.backward()
    expected = {name: (p - SOLVE["options"]["lr"] * p.grad).detach() for name, p in backend.module.named_parameters()}
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    for rank in ranks:
        _assert_same_network({k: v for k, v in rank["network"].items() if k in expected}, expected)
        assert rank["objective"][0] == pytest.approx(float(objective.detach()), rel=1e-5)
    # and it is not the whole batch's step: the BN statistics of 24 samples change it
    whole = tp.solve_ocp(tiny_ocp(tiny_net("ws")), steps=1, **{**SOLVE, "batch_size": None})
    name = "blocks.0.branch.2.weight"
    assert (whole.network.state_dict()[name] - expected[name]).abs().max() > 1e-6


def test_resume_under_ddp_and_only_rank_zero_writes(tmp_path):
    """Two ranks stopped after step 6, then at a time limit, and resumed from rank 0's checkpoint end
    where one process that was never stopped ends; rank 1 writes nothing (any write there raises)."""
    run_ranks(_resume_worker, tmp_path)
    one = tp.solve_ocp(tiny_ocp(tiny_net("full")), steps=9, augment=_crop, **SOLVE)
    for r in range(WORLD):
        resumed = torch.load(tmp_path / f"resumed{r}.pt")
        _assert_same_network(resumed["network"], one.network.state_dict())
        np.testing.assert_allclose(resumed["objective"], one.history["objective"], rtol=1e-5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt", "resumed0.pt", "resumed1.pt"]


def test_resnet54_under_torchrun_writes_one_run_folder(tmp_path):
    out = tmp_path / "run"
    argv = ["resnet54", "--dataset", "mnist", "--arch", "homogeneous", "--width", "4", "--blocks-per-stage", "1",
            "--epochs", "2", "--milestones", "1", "--train-subset", "128", "--test-subset", "32", "--batch-size",
            "16", "--lr", "0.05", "--eps-fraction", "0.5", "--finetune-epochs", "1", "--out", str(out), "--quiet",
            "--no-plots", "--sync-batchnorm"]
    run_ranks(_cli_worker, tmp_path, argv)
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [line["epoch"] for line in log] == [1, 2]              # one writer: no line twice
    assert json.loads((out / "config.json").read_text())["world_size"] == WORLD
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["exit_test_accuracy"]) == 4 and (out / "network.pt").exists()
    assert metrics["pruned"]["finetuned"]["epochs"] == 1 and (out / "finetune_checkpoint.pt").exists()


def test_synced_batch_norm_outside_a_process_group_is_batch_norm(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert tp.distributed.init_distributed("cpu") == "cpu" and tp.distributed.is_main_process()
    net = tiny_net("ws")
    plain = tiny_net("ws")
    optimiser = torch.optim.SGD(net.parameters(), lr=0.1)
    net.synchronise_batch_norm()
    converted = [m for m in net.modules() if isinstance(m, tp.distributed.SyncedBatchNorm2d)]
    assert len(converted) == sum(isinstance(m, torch.nn.BatchNorm2d) for m in plain.modules()) > 0
    # the same tensors: the optimiser built before still steps the network's parameters
    assert {id(p) for p in optimiser.param_groups[0]["params"]} == {id(p) for p in net.parameters()}
    images = torch.randn(6, 1, 8, 8)
    torch.testing.assert_close(net.exit_logits(images), plain.exit_logits(images))
    torch.testing.assert_close(net.state_dict(), plain.state_dict())     # running statistics moved alike
    with pytest.raises(ValueError, match="sync_batchnorm: expected True or False"):
        tp.solve_ocp(tiny_ocp(tiny_net()), steps=1, sync_batchnorm="yes", **SOLVE)


def _stalled_rank_worker(rank, port, folder):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    tp.distributed.init_distributed("cpu", timeout_s=2.0)
    try:
        if rank == 1:
            time.sleep(6.0)                            # stalled: never joins the collective
            return
        started = time.perf_counter()
        try:
            torch.distributed.all_reduce(torch.ones(1))
            outcome = "returned"
        except RuntimeError as error:
            outcome = f"failed: {error}"
        (Path(folder) / "rank0.json").write_text(json.dumps({"outcome": outcome,
                                                             "seconds": time.perf_counter() - started}))
    finally:
        tp.distributed.finish_distributed(wait=False)


def test_a_stalled_rank_fails_the_job_within_the_process_group_timeout(tmp_path):
    mp.spawn(_stalled_rank_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    result = json.loads((tmp_path / "rank0.json").read_text())
    assert result["outcome"].startswith("failed") and result["seconds"] < 5.0, result


def test_a_bad_process_group_timeout_is_refused_also_outside_torchrun():
    with pytest.raises(ValueError, match="timeout_s: expected"):
        tp.distributed.init_distributed("cpu", timeout_s=-5)
