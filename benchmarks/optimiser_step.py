"""The module backend's optimiser step on a CPU: torch's fused kernels against its foreach ones.

    .venv/bin/python benchmarks/optimiser_step.py [--blocks 18] [--steps 200] [--rounds 3]

The parameters are those of the paper's ResNet-54 (16/32/64, WS exits), each with a gradient; SGD with
momentum and weight decay, and Adam, as the backend builds them. The two implementations alternate in
rounds in one process; the script prints ms per step of each and foreach/fused per round, and whether
the two SGD implementations agree bit for bit in float64 after 6 steps (they need not: the fused kernel
rounds its own way, which is why the backend takes it for eager and graph-ready steps alike).
"""
import argparse
import time

import torch

import turnpike as tp

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--blocks", type=int, default=18)
parser.add_argument("--steps", type=int, default=200)
parser.add_argument("--rounds", type=int, default=3)
args = parser.parse_args()


def optimiser(kind: str, implementation: str, dtype=torch.float32):
    torch.manual_seed(0)
    net = tp.preact_resnet(blocks_per_stage=args.blocks, exits="ws").to(dtype)
    parameters = list(net.parameters())
    for p in parameters:
        p.grad = torch.randn_like(p)
    if kind == "sgd":
        built = torch.optim.SGD(parameters, lr=0.1, momentum=0.9, weight_decay=1e-4, **{implementation: True})
    else:
        built = torch.optim.Adam(parameters, lr=1e-3, weight_decay=1e-4, **{implementation: True})
    built.step()                                       # the state (momentum, moments) exists from here on
    return built, parameters


def seconds_per_step(built, steps: int) -> float:
    began = time.perf_counter()
    for _ in range(steps):
        built.step()
    return (time.perf_counter() - began) / steps


def main():
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, ResNet-54 layout with {args.blocks} blocks "
          f"per stage")
    for kind in ("sgd", "adam"):
        built = {name: optimiser(kind, name)[0] for name in ("foreach", "fused")}
        for round_ in range(args.rounds):
            times = {name: seconds_per_step(step, args.steps) for name, step in built.items()}
            print(f"{kind} round {round_}: foreach {times['foreach'] * 1e3:.3f} ms, fused {times['fused'] * 1e3:.3f} ms"
                  f" a step; foreach/fused {times['foreach'] / times['fused']:.2f}")
    runs = [optimiser("sgd", name, torch.float64) for name in ("foreach", "fused")]
    for built, _ in runs:
        for _ in range(5):
            built.step()
    same = all(torch.equal(a, b) for a, b in zip(runs[0][1], runs[1][1]))
    print(f"sgd float64 after 6 steps: fused equals foreach bit for bit: {same}")


if __name__ == "__main__":
    main()
