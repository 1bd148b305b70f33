"""One training epoch of the 60-layer MNIST network: turnpike against a plain PyTorch loop.

Architecture (26) on 784-dim flattened images, N = 60, h = 128, ReLU then identity, soft
cross-entropy (p_d = 0.91) on the first 10 components at every layer, r = 1e-5, γ = 1,
mini-batch Adam (batch 128). Baseline: a hand-written PyTorch loop with autograd that
computes the 60 per-layer losses one by one. Contender: ``solve_ocp`` with the float32
adjoint engine (buffered torch sweep, all per-layer losses of a batch in one stacked call,
fused Adam). Both run the same
number of steps on the same data (the 60,000 Fashion-MNIST images if Debian's
dataset-fashion-mnist is installed, else the embedded MNIST subset repeated to 60,000).
The script prints both times, their ratio, each one's fraction of the machine's float32
matrix-multiply throughput measured in the same run, and the ceiling that throughput puts
on the ratio: a step needs at least its 6 matrix products per layer, so no implementation
can beat the plain loop by more than (plain time) / (matrix-product FLOP / peak).

    .venv/bin/python benchmarks/mnist_epoch.py [--images 60000] [--steps-limit 0] [--rounds 3] [--device cuda]
"""
from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch

import turnpike as tp
from turnpike.data._images import FASHION_MNIST_DIR


def matmul_throughput(device, size=2048, repeats=5) -> float:
    """float32 GFLOP/s of a matrix product on ``device`` (numpy's on the CPU), now."""
    if device.type == "cuda":
        size, repeats = 8192, 20
        a = torch.randn(size, size, device=device)
        a @ a
        torch.cuda.synchronize(device)
        start = time.perf_counter()
        for _ in range(repeats):
            a @ a
        torch.cuda.synchronize(device)
        return 2 * size ** 3 * repeats / (time.perf_counter() - start) / 1e9
    a = np.random.default_rng(0).standard_normal((size, size), dtype=np.float32)
    a @ a
    start = time.perf_counter()
    for _ in range(repeats):
        a @ a
    return 2 * size ** 3 * repeats / (time.perf_counter() - start) / 1e9


def flops_per_step(batch, state, hidden, depth) -> float:
    """Multiply-adds of the 6 matrix products per layer (2 forward, 4 backward), ×2 for FLOP."""
    return 2 * 6 * batch * state * hidden * depth


class PlainNet(torch.nn.Module):
    def __init__(self, depth, state, hidden):
        super().__init__()
        self.inner = torch.nn.ModuleList(torch.nn.Linear(state, hidden) for _ in range(depth))
        self.outer = torch.nn.ModuleList(torch.nn.Linear(hidden, state) for _ in range(depth))

    def forward(self, x):
        states = [x]
        for inner, outer in zip(self.inner, self.outer):
            x = x + outer(torch.relu(inner(x)))
            states.append(x)
        return states


def plain_epoch(inputs, labels, steps, batch, depth, hidden, device, p_d=0.91, r=1e-5):
    torch.manual_seed(0)
    model = PlainNet(depth, inputs.shape[1], hidden).to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    x_all, y_all = torch.from_numpy(inputs).to(device), torch.from_numpy(labels).to(device)
    off = (1 - p_d) / 9
    synchronize(device)
    start = time.perf_counter()
    for step in range(steps):
        index = slice(step * batch % len(inputs), step * batch % len(inputs) + batch)
        x, y = x_all[index], y_all[index]
        targets = torch.full((len(y), 10), off, device=device)
        targets[torch.arange(len(y), device=device), y] = p_d
        entropy = -(targets * targets.log()).sum(1).mean()
        optimiser.zero_grad()
        states = model(x)
        loss = 0.0
        for k, s in enumerate(states):            # the 61 per-layer losses, one by one
            layer_loss = -(targets * torch.log_softmax(s[:, :10], 1)).sum(1).mean() - entropy
            loss = loss + layer_loss
        loss = loss + r * sum((p * p).sum() for p in model.parameters())
        loss.backward()
        optimiser.step()
    synchronize(device)
    return time.perf_counter() - start


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=60000, help="images per epoch (default 60,000)")
    parser.add_argument("--steps-limit", type=int, default=0,
                        help="time only this many steps of each (0: the whole epoch) and extrapolate")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (both contenders run there)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of both contenders (default 3)")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device: expected 'cpu' on this machine (torch sees no CUDA GPU), got {args.device!r}")
    depth, hidden, batch = 60, 128, 128
    if FASHION_MNIST_DIR.is_dir():
        data = tp.data.load_images("fashion-mnist")
    else:
        data = tp.data.load_images("mnist")
    repeat = math.ceil(args.images / len(data.train_labels))
    inputs = np.tile(data.train_inputs, (repeat, 1))[: args.images]
    labels = np.tile(data.train_labels, repeat)[: args.images]
    steps = math.ceil(len(labels) / batch)
    timed = min(steps, args.steps_limit) if args.steps_limit else steps

    soft = tp.SoftCrossEntropy(num_classes=10, p_d=0.91)
    system = tp.TwoLayerResNet(state_dim=784, hidden_dim=hidden, depth=depth, activations=("relu", "identity"))
    ocp = tp.OCP(system, inputs[: timed * batch], labels[: timed * batch],
                 stage_cost=soft + tp.InputPenalty(1e-5), terminal_cost=soft)

    def turnpike_epoch():
        solution = tp.solve_ocp(ocp, method="adam", steps=timed, options={"lr": 1e-3}, batch_size=batch,
                                dtype="float32", keep_states=False, threads=None, progress=False,
                                device=args.device)
        return solution.wall_time_s      # the optimisation loop only, not the final full-data objective

    # this machine's speed drifts by tens of percent within minutes: alternate the contenders
    # (and which goes first) over several rounds, with the matrix-product peak measured in each
    flop = flops_per_step(batch, 784, hidden, depth) * timed
    scale = steps / timed
    print(f"{steps} steps of batch {batch} per epoch, {timed} timed per contender and round")
    rounds = []
    for round_index in range(args.rounds):
        peak = matmul_throughput(device)
        if round_index % 2 == 0:
            plain, ours = plain_epoch(inputs, labels, timed, batch, depth, hidden, device), turnpike_epoch()
        else:
            ours, plain = turnpike_epoch(), plain_epoch(inputs, labels, timed, batch, depth, hidden, device)
        floor = flop / (peak * 1e9)
        rounds.append((plain / ours, plain / floor))
        print(f"round {round_index + 1}: {device.type} float32 matmul {peak:.0f} GFLOP/s | "
              f"plain loop (61 losses one by one) {plain * scale:6.1f} s/epoch, {1e3 * plain / timed:.0f} ms/step, "
              f"{flop / plain / 1e9 / peak:.0%} of peak | turnpike {ours * scale:6.1f} s/epoch, "
              f"{1e3 * ours / timed:.0f} ms/step, {flop / ours / 1e9 / peak:.0%} of peak | "
              f"ratio {plain / ours:.2f}x, ceiling {plain / floor:.2f}x")
    ratios, ceilings = zip(*rounds)
    print(f"speed-up ratio (plain / turnpike), median of {len(rounds)} rounds: {np.median(ratios):.2f}x "
          f"(range {min(ratios):.2f}-{max(ratios):.2f}x)")
    print(f"ceiling at 100% of matmul peak (6 products per layer and nothing else): {np.median(ceilings):.2f}x")


if __name__ == "__main__":
    main()
