"""From "I have a ResNet-18" to its turnpike, pruned network and early-exit curve, on a CPU, over several seeds.

    .venv/bin/python experiments/your_network.py                       # the table of docs/your-network.md
    .venv/bin/python experiments/your_network.py --resume              # continue after a stop (Ctrl-C, a limit)
    .venv/bin/python experiments/your_network.py --dataset mnist       # the embedded MNIST subset
    .venv/bin/python experiments/your_network.py --gamma 0.2 --resume  # another γ: the standard runs are reused

For each seed, a ResNet-18 (torchvision's layout from turnpike.models, a 3x3 stem for small images, base width
8) is trained twice by ``turnpike train``'s run: with the stage cost through its skip-path exits (WS, γ = 0.02)
and by standard training (the same recipe without the exits' losses). Each run folder holds the usual metrics;
this script prints one line per seed and the spread, and writes OUT/summary-gammaG.json and
OUT/your_network-gammaG.png
(exit test accuracy against the exit, and the early-exit curve). Seeds 1-5 by default: none was used to choose
a setting.
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from turnpike.data._images import FASHION_MNIST_DIR
from turnpike.experiments import TrainConfig, run_train


@dataclass
class Demo:
    dataset: str = "fashion-mnist"
    data_dir: str | None = None          # Fashion-MNIST's IDX files (default: Debian's dataset-fashion-mnist)
    base: int = 8                        # ResNet-18's stem width (64 in torchvision)
    epochs: int = 6
    milestones: tuple = (4,)             # lr ÷ 10 after these epochs
    train_subset: int | None = 6_000
    test_subset: int | None = 2_000
    batch_size: int = 128
    gamma: float = 0.02                  # the stage cost's weight (the 2025 paper's, for 54 blocks)
    seeds: tuple = (1, 2, 3, 4, 5)
    variants: tuple = ("ws", "standard")
    threads: int | None = None
    out: str = "runs/your-network"
    model_options: dict = field(default_factory=dict)

    def config(self, variant: str, seed: int) -> TrainConfig:
        return TrainConfig(model="resnet18", model_options={"base": self.base, "small_stem": True,
                                                            **self.model_options},
                           dataset=self.dataset, data_dir=self.data_dir, variant=variant,
                           gamma=self.gamma if variant != "standard" else TrainConfig.gamma,   # unused there
                           epochs=self.epochs,
                           milestones=self.milestones, train_subset=self.train_subset,
                           test_subset=self.test_subset, batch_size=self.batch_size, seed=seed)

    def folder(self, variant: str, seed: int) -> Path:
        """OUT/standard/seed-S, OUT/ws-gamma0.02/seed-S: standard training does not depend on γ, so runs of
        several γ in one OUT share it."""
        name = variant if variant == "standard" else f"{variant}-gamma{self.gamma:g}"
        return Path(self.out) / name / f"seed-{seed}"


def arguments() -> tuple[Demo, bool]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    defaults = Demo()
    parser.add_argument("--dataset", default=defaults.dataset, choices=["fashion-mnist", "mnist"])
    parser.add_argument("--data", default=defaults.data_dir, help="folder of Fashion-MNIST's IDX files")
    parser.add_argument("--base", type=int, default=defaults.base)
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--milestones", type=lambda s: tuple(int(x) for x in s.split(",") if x),
                        default=defaults.milestones)
    parser.add_argument("--train-subset", type=int, default=defaults.train_subset)
    parser.add_argument("--test-subset", type=int, default=defaults.test_subset)
    parser.add_argument("--gamma", type=float, default=defaults.gamma)
    parser.add_argument("--seeds", type=lambda s: tuple(int(x) for x in s.split(",")), default=defaults.seeds)
    parser.add_argument("--threads", type=int, default=defaults.threads)
    parser.add_argument("--out", default=defaults.out)
    parser.add_argument("--resume", action="store_true", help="continue the runs in --out (finished ones are kept)")
    args = parser.parse_args()
    data_dir = args.data
    if args.dataset == "fashion-mnist" and data_dir is None and not FASHION_MNIST_DIR.is_dir() \
            and Path("data/fmnist").is_dir():
        data_dir = "data/fmnist"                # where scripts/setup.sh's notes put the IDX files
    demo = Demo(dataset=args.dataset, data_dir=data_dir, base=args.base, epochs=args.epochs,
                milestones=args.milestones, train_subset=args.train_subset, test_subset=args.test_subset,
                gamma=args.gamma, seeds=args.seeds, threads=args.threads, out=args.out)
    return demo, args.resume


def train_all(demo: Demo, resume: bool) -> dict:
    """{(variant, seed): metrics} of every run, each in :meth:`Demo.folder` (finished runs are read, not rerun)."""
    results = {}
    for seed in demo.seeds:
        for variant in demo.variants:
            folder = demo.folder(variant, seed)
            metrics_file = folder / "metrics.json"
            if resume and metrics_file.is_file() and json.loads(metrics_file.read_text())["status"] == "max_steps":
                results[variant, seed] = json.loads(metrics_file.read_text())
                continue
            started = time.perf_counter()
            metrics = run_train(demo.config(variant, seed), folder, resume=resume and folder.is_dir(),
                                progress=False)
            print(f"seed {seed} {variant:>8}: test accuracy {metrics['test_accuracy']:.4f}, turnpike "
                  f"{metrics['turnpike_layer']}, {time.perf_counter() - started:.0f} s", flush=True)
            results[variant, seed] = metrics
    return results


def at_threshold(early_exit: dict, threshold: float) -> tuple[float, float]:
    """(accuracy, compute share) of early exit at the confidence threshold ``threshold``."""
    index = early_exit["thresholds"].index(threshold)
    return early_exit["accuracy"][index], early_exit["mean_compute"][index]


def table(demo: Demo, results: dict) -> list[dict]:
    rows = []
    for seed in demo.seeds:
        ws, standard = results["ws", seed], results["standard", seed]
        pruned = ws["pruned"] or {}
        accuracy, compute = at_threshold(ws["early_exit"], 0.9)
        rows.append({"seed": seed, "standard": standard["test_accuracy"], "ws": ws["test_accuracy"],
                     "turnpike": ws["turnpike_layer"], "depth": ws["depth"],
                     "pruned": pruned.get("test_accuracy"), "pruned_parameters": pruned.get("parameters"),
                     "parameters": ws["parameters"], "pruned_compute": (pruned["multiply_adds"] / ws["multiply_adds"]
                                                                        if pruned else None),
                     "standard_turnpike": standard["turnpike_layer"],
                     "early_exit_0.9": accuracy, "early_exit_0.9_compute": compute,
                     "ws_time_s": ws["train_time_s"], "standard_time_s": standard["train_time_s"]})
    return rows


def report(rows: list[dict]) -> None:
    print(f"\n{'seed':>4} {'standard':>9} {'stage':>7} {'turnpike':>9} {'pruned':>7} {'params':>7} "
          f"{'compute':>8} {'exit@0.9':>9} {'compute':>8} {'std tp':>7} {'time ws/std s':>14}")
    for r in rows:
        pruned = f"{r['pruned']:>7.4f} {r['pruned_parameters'] / r['parameters']:>7.2f} {r['pruned_compute']:>8.2f}" \
            if r["pruned"] is not None else f"{'-':>7} {'-':>7} {'-':>8}"
        print(f"{r['seed']:>4} {r['standard']:>9.4f} {r['ws']:>7.4f} {r['turnpike']!s:>9} {pruned} "
              f"{r['early_exit_0.9']:>9.4f} {r['early_exit_0.9_compute']:>8.2f} {r['standard_turnpike']!s:>7} "
              f"{r['ws_time_s']:>7.0f}/{r['standard_time_s']:.0f}")
    for key, name in (("standard", "standard training"), ("ws", "stage cost (WS)"), ("pruned", "pruned at the turnpike"),
                      ("early_exit_0.9", "early exit τ = 0.9")):
        values = [r[key] for r in rows if r[key] is not None]
        if values:
            print(f"{name:>24}: test accuracy {np.mean(values):.4f} (min {min(values):.4f}, max {max(values):.4f}, "
                  f"{len(values)} seeds)")


def figure(demo: Demo, results: dict, path: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (exits, early) = plt.subplots(1, 2, figsize=(11, 4))
    for variant, colour in zip(demo.variants, ("C0", "C1")):
        curves = np.array([results[variant, seed]["exit_test_accuracy"] for seed in demo.seeds])
        blocks = np.arange(curves.shape[1])
        exits.plot(blocks, curves.mean(0), f"{colour}o-", label=f"{variant} (mean of {len(demo.seeds)} seeds)")
        exits.fill_between(blocks, curves.min(0), curves.max(0), color=colour, alpha=0.2)
    exits.set(xlabel="exit k (blocks executed)", ylabel="test accuracy", title="exits of ResNet-18")
    exits.legend()
    for seed in demo.seeds:
        curve = results["ws", seed]["early_exit"]
        early.plot(curve["mean_compute"], curve["accuracy"], "C0.-", alpha=0.6,
                   label="early exit (stage cost)" if seed == demo.seeds[0] else None)
        standard = results["standard", seed]
        early.plot(1.0, standard["test_accuracy"], "C1s", label="standard" if seed == demo.seeds[0] else None)
        pruned = results["ws", seed]["pruned"]
        if pruned:
            early.plot(pruned["multiply_adds"] / results["ws", seed]["multiply_adds"], pruned["test_accuracy"], "C2^",
                       label="pruned at the turnpike" if seed == demo.seeds[0] else None)
    early.set(xlabel="compute (multiply-adds / the network's)", ylabel="test accuracy", title="early exit")
    early.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main() -> None:
    demo, resume = arguments()
    if demo.threads:
        import torch
        torch.set_num_threads(demo.threads)
    started = time.perf_counter()
    results = train_all(demo, resume)
    rows = table(demo, results)
    report(rows)
    out = Path(demo.out)
    name = f"gamma{demo.gamma:g}"
    (out / f"summary-{name}.json").write_text(json.dumps({"demo": demo.__dict__, "rows": rows}, indent=2,
                                                         default=list))
    print(f"figure {figure(demo, results, out / f'your_network-{name}.png')}; "
          f"{time.perf_counter() - started:.0f} s in all")


if __name__ == "__main__":
    main()
