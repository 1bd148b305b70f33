"""``turnpike hessian``: shortcut depth and the Hessian from zero to the minimum (Demystifying ResNet, Fig. 4–7)."""
from __future__ import annotations

from pathlib import Path

from ._args import add_run_folder_arguments, float_list, int_list, name_list, resume_notice

#: config fields whose flag is not the field's name (errors name the flag the user typed)
FLAGS = {"data_dir": "--data"}


def add_parser(sub):
    from ..experiments._hessian import FAMILIES, HessianConfig as C   # defaults defined once, in the config

    p = sub.add_parser("hessian", help="Hessian condition numbers of shortcut vs plain networks (Demystifying ResNet)",
                       description="On whitened MNIST (10 principal components, one-hot targets): the initial "
                                   "Hessian condition number against depth (Fig. 4), spectra and index along "
                                   "gradient descent (Fig. 5-6) and the final loss at the best learning rate "
                                   "(Fig. 7), for Xavier and orthogonal linear networks and 2-shortcut networks "
                                   "started near zero.")
    p.add_argument("--depths", type=int_list, default=C.depths, help="weight layers, comma-separated")
    p.add_argument("--runs", type=int, default=C.runs, help="initial draws per family and depth (Fig. 4)")
    p.add_argument("--train-runs", type=int, default=C.train_runs,
                   help="training runs per family, depth and learning rate (Fig. 5-7)")
    p.add_argument("--steps", type=int, default=C.steps, help="gradient-descent steps per training run")
    p.add_argument("--learning-rates", type=float_list, default=C.learning_rates,
                   help="grid searched for the best final loss, comma-separated")
    p.add_argument("--families", type=name_list, default=C.families, help=f"of {', '.join(FAMILIES)}")
    p.add_argument("--path-depth", type=int, default=C.path_depth, help="depth of the training paths (Fig. 5-6)")
    p.add_argument("--dataset", default=C.dataset, choices=["mnist", "fashion-mnist"],
                   help="mnist: the embedded 4,000-image subset; fashion-mnist: Debian's 60,000 images")
    p.add_argument("--data", default=C.data_dir, help="folder of the data set's IDX files")
    p.add_argument("--threads", type=int, default=C.threads, help="torch threads (eigensolver included)")
    p.add_argument("--seed", type=int, default=C.seed, help="seeds every initial draw")
    p.add_argument("--no-plots", action="store_true", help="metrics only, no figures")
    add_run_folder_arguments(p, out="runs/hessian",
                             resume="keep the finished pieces of the run in --out and compute the rest; every "
                                    "setting must match the stored one except --data and --threads")
    return p


def run(args) -> int:
    from ..experiments._hessian import HessianConfig, run_hessian

    config = HessianConfig(depths=tuple(args.depths), runs=args.runs, train_runs=args.train_runs, steps=args.steps,
                           learning_rates=tuple(args.learning_rates), families=tuple(args.families),
                           path_depth=args.path_depth, dataset=args.dataset, data_dir=args.data,
                           threads=args.threads, seed=args.seed)
    resume_notice("hessian", args)
    m = run_hessian(config, Path(args.out), plots=not args.no_plots, resume=args.resume, overwrite=args.overwrite)
    print(f"{m['samples']} samples ({m['data_source']}); least-squares optimum L* = {m['optimal_loss']:.4f}; "
          f"Theorem 2 condition number at zero: {m['theorem2_condition_number']:.4f}")
    print("initial condition number max|λ|/|λ|_(0.1), mean over draws, by depth:")
    for name, rows in m["initial_condition_number"].items():
        print(f"  {name:>11}: " + "  ".join(f"{row['depth']}: {row['mean']:.4g}" for row in rows))
    print(f"final excess loss L − L* after {config.steps} steps at the best learning rate, by depth:")
    for name, rows in m["final_excess_loss"].items():
        print(f"  {name:>11}: " + "  ".join(f"{row['depth']}: {row['excess_loss']:.3g} (lr {row['best_lr']:g})"
                                            for row in rows))
    print(f"{m['wall_time_s']:.0f} s; run folder {args.out}")
    return 0
