"""Neural-ODE gradients: direct back-propagation vs torchdiffeq's adjoint, and the running-cost augmentation.

Measured side by side in one process on the two-spirals OCP (20) (480 samples, field (26) with
h = 8, K control intervals on [0, T]): time per objective+gradient evaluation (median of
repeats) and the memory of the tensors the autograd graph saves for the backward pass
(counted through autograd's pack hook, since tracemalloc does not see torch's allocations).
Prints the ratios.

    .venv/bin/python benchmarks/node_adjoint.py [--horizon 10] [--interval 0.5] [--method rk4] [--repeats 5]
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

import turnpike as tp


def graph_memory_mb(function) -> float:
    """MB of tensors saved for the backward pass while ``function()`` runs (distinct storages).

    Called on the forward computation of J: this is the memory direct back-propagation
    holds from the forward solve until the backward sweep, and what the adjoint avoids (torch's CPU allocations bypass
    tracemalloc, so the saved tensors are counted through autograd's pack hook).
    """
    storages = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        function()
    return sum(storages.values()) / 2 ** 20


def timed(function, repeats: int) -> float:
    function()                                   # warm-up
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--horizon", type=float, default=10.0)
    parser.add_argument("--interval", type=float, default=0.5)
    parser.add_argument("--method", default="rk4")
    parser.add_argument("--substeps", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    inputs, labels = tp.data.two_spirals(480, turns=1.0)
    soft = tp.SoftCrossEntropy(num_classes=2, p_d=0.95)
    depth = int(round(args.horizon / args.interval))

    def problem(adjoint, stage=True):
        node = tp.NeuralODE(state_dim=2, depth=depth, horizon=args.horizon, hidden_dim=8, method=args.method,
                            substeps=args.substeps, adjoint=adjoint)
        stage_cost = soft + tp.InputPenalty(0.005) if stage else tp.InputPenalty(0.005)
        return node, tp.OCP(node, inputs, labels, stage_cost=stage_cost, terminal_cost=soft, terminal_weight=3.0)

    theta = problem(False)[0].initial_controls(np.random.default_rng(0), 1.0)
    rows = {}
    gradients = {}
    for name, adjoint, stage in (("direct, running cost", False, True), ("adjoint, running cost", True, True),
                                 ("direct, terminal only", False, False), ("adjoint, terminal only", True, False)):
        node, ocp = problem(adjoint, stage)

        def evaluate(node=node, ocp=ocp):
            return node.objective(ocp, theta, inputs, labels)

        def forward(node=node, ocp=ocp):   # J with its graph, before the backward pass
            theta_t = torch.tensor(theta, requires_grad=True)
            return node.objective_tensor(ocp, theta_t, torch.tensor(inputs), labels)

        gradients[name] = evaluate()[1]
        rows[name] = (timed(evaluate, args.repeats), graph_memory_mb(forward))

    print(f"two spirals, 480 samples, T = {args.horizon:g}, K = {depth} intervals, {args.method} "
          f"(substeps {args.substeps}), {args.threads} thread(s)")
    print(f"{'evaluation (J and ∇J)':<26} {'time ms':>9} {'graph MB':>9}")
    for name, (seconds, memory) in rows.items():
        print(f"{name:<26} {1e3 * seconds:>9.1f} {memory:>9.2f}")
    direct, adjoint = rows["direct, running cost"], rows["adjoint, running cost"]
    plain = rows["direct, terminal only"]
    difference = np.abs(gradients["adjoint, running cost"] - gradients["direct, running cost"]).max()
    print(f"\nadjoint / direct:  time {adjoint[0] / direct[0]:.2f}x, saved-graph memory {adjoint[1] / direct[1]:.3f}x "
          f"(max gradient difference {difference:.2e}, relative "
          f"{difference / np.abs(gradients['direct, running cost']).max():.2e})")
    print(f"running-cost augmentation (direct): time {direct[0] / plain[0]:.2f}x, "
          f"saved-graph memory {direct[1] / plain[1]:.2f}x of the terminal-cost-only solve")
    print(f"running-cost augmentation (adjoint): time "
          f"{adjoint[0] / rows['adjoint, terminal only'][0]:.2f}x of the terminal-cost-only solve")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
