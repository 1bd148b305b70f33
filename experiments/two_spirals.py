"""Two-spirals turnpike, 2024 paper Sec. 6 (Figs. 2-4): train with and without the soft-CE stage cost.

    .venv/bin/python experiments/two_spirals.py [--out runs/spirals] [--seed 0]

Same as ``turnpike spirals``; edit the config below to change the setting.
"""
import argparse

import turnpike as tp

parser = argparse.ArgumentParser()
parser.add_argument("--out", default="runs/spirals")
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()

config = tp.experiments.SpiralsConfig(seed=args.seed)          # N = 30, h = 8, p_d = 0.95, r = 0.005, γ = 3
metrics = tp.experiments.run_spirals(config, args.out, progress=True)
print(f"train {metrics['train_accuracy']:.3f}  test {metrics['test_accuracy']:.3f}  "
      f"turnpike layer {metrics['turnpike_layer']} (ε = {metrics['eps']:.3f})  "
      f"pruned {metrics['pruned']}  baseline test {metrics['baseline']['test_accuracy']:.3f}")
print("figures:", *metrics["figures"], sep="\n  ")
