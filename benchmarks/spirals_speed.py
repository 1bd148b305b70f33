"""Speed of the default two-spirals run against a plain PyTorch loop, side by side.

Baseline: ``plain_loop.train_plain`` — autograd, Adam lr 0.01, 3,000 full-batch steps over
the 30 layers, as one would write it from the paper. Contender: ``turnpike spirals``'
default run, *both* trainings (with and without stage cost), no plots. Both are measured
in this process, one after the other, so machine load affects them alike; the script
prints the wall times, the ratio, and whether each reached the result (100% train
accuracy and a turnpike).

    .venv/bin/python benchmarks/spirals_speed.py [--seed 0] [--baseline-steps 3000]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from plain_loop import train_plain  # noqa: E402

import turnpike as tp  # noqa: E402
from turnpike.results import turnpike_layer_of  # noqa: E402
from turnpike.theory import distance_to_minimisers  # noqa: E402


def plain_turnpike_layer(model, inputs, labels, eps):
    with torch.no_grad():
        states = torch.stack(model(torch.as_tensor(inputs, dtype=torch.float64))).numpy()
    distance = np.sqrt((distance_to_minimisers(states, labels, 2, 0.95) ** 2).mean(axis=1))
    return turnpike_layer_of(distance, eps)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--baseline-steps", type=int, default=3000)
    parser.add_argument("--baseline-threads", type=int, default=None,
                        help="torch threads for the plain loop (default: torch's default)")
    args = parser.parse_args()

    config = tp.experiments.SpiralsConfig(seed=args.seed)
    metrics = tp.experiments.run_spirals(config, plots=False)
    ours = metrics["wall_time_s"]
    eps = metrics["eps"]

    inputs, labels = tp.data.two_spirals(config.num_train, turns=config.turns, seed=args.seed)
    if args.baseline_threads:
        torch.set_num_threads(args.baseline_threads)
    model, plain, plain_accuracy = train_plain(inputs, labels, steps=args.baseline_steps, seed=args.seed)
    plain_layer = plain_turnpike_layer(model, inputs, labels, eps)

    print(f"plain PyTorch loop: {args.baseline_steps} Adam steps, {plain:7.2f} s "
          f"({1e3 * plain / args.baseline_steps:.1f} ms/step), train accuracy {plain_accuracy:.3f}, "
          f"turnpike layer {plain_layer} (ε = {eps:.3f})")
    print(f"turnpike spirals  : both trainings,   {ours:7.2f} s, train accuracy "
          f"{metrics['train_accuracy']:.3f}, turnpike layer {metrics['turnpike_layer']} "
          f"(baseline run: {metrics['baseline']['train_time_s']:.2f} s of it)")
    print(f"speed-up ratio (plain / turnpike): {plain / ours:.1f}x")


if __name__ == "__main__":
    main()
