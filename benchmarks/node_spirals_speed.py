"""``turnpike node-spirals``: the new default (RK4 trained through its exact adjoint, warm-started horizons)
against the previous default (dopri5 at rtol 1e-4, back-propagation through torchdiffeq, every horizon
from random controls), side by side in one process on the same seeds.

Prints, per configuration, the wall time of the whole run (T = 5, 10, 20, 40 by default), μ[Θ_ε,T],
T − μ and the training accuracy for every horizon, and the speed-up ratio.

    .venv/bin/python benchmarks/node_spirals_speed.py [--seeds 0] [--horizons 5,10,20,40]
"""
from __future__ import annotations

import argparse
import time

import torch

from turnpike import retain_freed_memory
from turnpike.experiments._node import NodeSpiralsConfig, run_node_spirals

#: the defaults before the discretise-then-optimise engine (2026-11, issue 12)
PREVIOUS = dict(ode_method="dopri5", rtol=1e-4, atol=1e-6, step_bound=None, warm_start=False, starts=1,
                warm_method=None, check_method=None)


def measure(settings: dict, seed: int, horizons: tuple) -> tuple:
    start = time.perf_counter()
    metrics = run_node_spirals(NodeSpiralsConfig(seed=seed, horizons=horizons, **settings), None, plots=False)
    return time.perf_counter() - start, metrics


def describe(name: str, seconds: float, metrics: dict) -> None:
    rows = metrics["per_horizon"].values()
    print(f"  {name:<9} {seconds:7.1f} s   μ[Θ_ε,T] " + " ".join(f"{r['theta_measure']:5.2f}" for r in rows)
          + "   T − μ " + " ".join(f"{r['time_near_turnpike']:5.2f}" for r in rows)
          + "   train acc " + " ".join(f"{r['train_accuracy']:.3f}" for r in rows)
          + "   test acc " + " ".join(f"{r['test_accuracy']:.3f}" for r in rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--horizons", default="5,10,20,40")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    retain_freed_memory()     # as `turnpike node-spirals` does; one process, so both runs have it
    horizons = tuple(float(t) for t in args.horizons.split(","))
    for seed in (int(s) for s in args.seeds.split(",")):
        new_time, new = measure({}, seed, horizons)
        old_time, old = measure(PREVIOUS, seed, horizons)
        print(f"seed {seed}: ε = {new['eps']:.4f}, horizons {horizons}")
        describe("previous", old_time, old)
        describe("new", new_time, new)
        checks = [r["a_posteriori"] for r in new["per_horizon"].values()]
        print(f"  new vs dopri5 (rtol 1e-8) a posteriori: max state difference at the nodes "
              f"{max(c['max_state_difference'] for c in checks):.1e}, max |Δμ| "
              f"{max(c['theta_measure_difference'] for c in checks):.3f}")
        print(f"  speed-up {old_time / new_time:.1f}×")


if __name__ == "__main__":
    main()
