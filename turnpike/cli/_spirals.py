"""`turnpike spirals`: the two-spirals turnpike of the 2024 paper (Sec. 6)."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from ._args import add_run_folder_arguments, int_list, name_list, positive_float


def _spirals_parser(sub):
    from ..backends import METHODS
    from ..experiments._spirals import SPIRALS_OPTIONS, SpiralsConfig as C   # defaults defined once, in the config

    # steps and options default to None in the config, which resolves them per method: show the result
    schedule = C()
    p = sub.add_parser("spirals", help="the two-spirals turnpike (2024 paper, Sec. 6)",
                       description="Train architecture (26) on the two spirals with and without the "
                                   "soft cross-entropy stage cost and report the turnpike.")
    p.add_argument("--seed", type=int, default=C.seed, help="random seed (default %(default)s)")
    p.add_argument("--seeds", type=int_list, default=None,
                   help="several seeds, e.g. 0-9 or 0,3,5: one sub-folder per seed and a summary table")
    p.add_argument("--depth", type=int, default=None, help=f"number of residual layers N (default {C.depth})")
    p.add_argument("--method", type=name_list, default=None,
                   help=f"optimiser(s), comma-separated and run in turn (default {','.join(schedule.method)}; "
                        f"choices: {', '.join(sorted(METHODS))})")
    p.add_argument("--steps", "--epochs", dest="steps", type=int_list, default=None,
                   help=f"steps per method, comma-separated (default {','.join(map(str, schedule.steps))})")
    p.add_argument("--lr", type=float, default=None,
                   help=f"learning rate of adam/sgd (default {SPIRALS_OPTIONS['adam']['lr']:g})")
    p.add_argument("--turns", type=positive_float, default=None, help=f"revolutions of each spiral (default {C.turns:g})")
    p.add_argument("--no-baseline", action="store_true", help="skip the run without stage cost")
    p.add_argument("--no-plots", action="store_true", help="write no figures")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_run_folder_arguments(p, out="runs/spirals", resume=None)
    return p


def _config(args, seed):
    from ..backends import with_learning_rate
    from ..experiments._spirals import SPIRALS_OPTIONS, SpiralsConfig

    fields = {"seed": seed, "baseline": not args.no_baseline}
    if args.depth is not None:
        fields["depth"] = args.depth
    if args.turns is not None:
        fields["turns"] = args.turns
    method = SpiralsConfig.method
    if args.method is not None:
        # steps and options left unset take the config's per-method defaults (one definition)
        method = fields["method"] = tuple(args.method)
    if args.steps is not None:
        fields["steps"] = tuple(args.steps)
    if args.lr is not None:
        fields["options"] = with_learning_rate(method, [SPIRALS_OPTIONS.get(m, {}) for m in method], args.lr)
    return SpiralsConfig(**fields)


def _fmt(value, spec=".3f"):
    return "-" if value is None else format(value, spec)


def _row(name, m):
    pruned = m.get("pruned") or {}
    return (f"{name:<22} {_fmt(m['train_accuracy'])} {_fmt(m['test_accuracy'])} "
            f"{str(m['turnpike_layer']):>9} {m['num_layers_in_Q_eps']:>5} {_fmt(m['control_norm_ratio'], '.3f'):>7} "
            f"{str(pruned.get('depth', '-')):>6} {_fmt(pruned.get('test_accuracy')):>7} {m['train_time_s']:>7.2f}")


HEADER = (f"{'run':<22} {'train':>5} {'test':>5} {'turnpike':>9} {'#Q_e':>5} {'|u| tp':>7} "
          f"{'pruned':>6} {'p.test':>7} {'time s':>7}")


def _spirals(args) -> int:
    from ..experiments._spirals import claim_spirals_folder, run_spirals

    seeds = args.seeds if args.seeds is not None else [args.seed]
    out = Path(args.out)
    folders = {seed: out if len(seeds) == 1 else out / f"seed-{seed}" for seed in seeds}
    configs = {seed: _config(args, seed) for seed in seeds}
    for seed in seeds:              # every folder checked before the first seed trains
        claim_spirals_folder(folders[seed], configs[seed], command="spirals", overwrite=args.overwrite)
    rows = []
    for seed in seeds:
        folder, config = folders[seed], configs[seed]
        started = time.perf_counter()
        metrics = run_spirals(config, folder, plots=not args.no_plots, progress=not args.quiet)
        rows.append((seed, metrics))
        print(f"\nseed {seed}: ε = {metrics['eps']:.4f} (= {config.eps_fraction} × initial RMS distance "
              f"to X*_y), {time.perf_counter() - started:.1f} s, run folder {folder}")
        print(HEADER)
        print(_row("with stage cost", metrics))
        if "baseline" in metrics:
            print(_row("baseline (no stage cost)", metrics["baseline"]))
        if metrics["status"] not in ("converged", "max_steps"):
            print(f"warning: {metrics['message']}", file=sys.stderr)
    if len(seeds) > 1:
        layers = [m["turnpike_layer"] for _, m in rows]
        train = np.array([m["train_accuracy"] for _, m in rows])
        test = np.array([m["test_accuracy"] for _, m in rows])
        reached = [x for x in layers if x is not None]
        print(f"\n{len(seeds)} seeds: train accuracy 100% on {int((train == 1).sum())}, "
              f"test accuracy mean {test.mean():.3f} (min {test.min():.3f}), turnpike layer "
              f"{'median ' + str(int(np.median(reached))) + ', max ' + str(max(reached)) if reached else 'never'}"
              f" ({len(reached)}/{len(seeds)} reached)")
    return 0


def add_parser(sub):
    return _spirals_parser(sub)


def run(args):
    return _spirals(args)
