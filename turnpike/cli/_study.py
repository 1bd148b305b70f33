"""``turnpike resnet54-study``: the 2025 paper's comparison (standard, WS, full, SubResNet-M) in one command."""
from __future__ import annotations

import sys
from pathlib import Path

from ._args import int_list


def _names(text: str) -> list:
    return [name.strip() for name in text.split(",") if name.strip()]


def add_parser(sub):
    from ._resnet54 import add_training_arguments

    p = sub.add_parser("resnet54-study", help="the paper's comparison: standard, WS, full and SubResNet-M runs, "
                                              "Table 1, Tables 2-3, Figs. 2-5, early exit",
                       description="Train the runs of the 2025 paper's comparison on one data set and recipe, one "
                                   "folder each under OUT (standard, ws, full, subresnet-M), then write Table 1 "
                                   "with the paper's numbers beside where a column matches, Tables 2-3 "
                                   "(Theorems 1-2), the comparison figures and the early-exit curves "
                                   "(OUT/study.md, OUT/study.json). --time-limit bounds the whole study; "
                                   "--resume keeps the finished runs and continues the stopped one.")
    p.add_argument("--variants", type=_names, default=["standard", "ws", "full"],
                   help="ResNet-N variants to train, comma-separated (default standard,ws,full)")
    p.add_argument("--subresnets", type=int_list, default=[12], metavar="M",
                   help="SubResNet depths trained from scratch and pruned to, e.g. 12 or 6,12 (default 12)")
    add_training_arguments(p)
    p.add_argument("--seeds", type=int_list, default=None,
                   help="one study per seed, e.g. 1-10 (OUT/seed-S), and Table 1 over the seeds (OUT/seeds.md)")
    p.add_argument("--out", default="runs/resnet54-study")
    return p


def run(args) -> int:
    import time

    from .._distributed import finish_distributed, init_distributed, is_main_process
    from .._runs import write_json
    from ..experiments._resnet54_study import run_resnet54_study, seeds_summary
    from ._resnet54 import report, training_config

    device = init_distributed(args.device)
    main_process = is_main_process()
    seeds = args.seeds or [args.seed]
    deadline = None if args.time_limit is None else time.perf_counter() + args.time_limit

    def on_run(name, metrics, folder):
        if main_process:
            print(f"\n== {folder}")
            report(metrics, folder)

    studies = {}
    try:
        for seed in seeds:             # one time limit for all seeds
            left = None if deadline is None else max(0.0, deadline - time.perf_counter())
            out = Path(args.out) if args.seeds is None else Path(args.out) / f"seed-{seed}"
            study = run_resnet54_study(training_config(args, device, seed=seed, time_limit=left), out,
                                       variants=args.variants, subresnets=args.subresnets, resume=args.resume,
                                       plots=not args.no_plots, progress=not args.quiet and main_process,
                                       on_run=on_run)
            if study["status"] == "time_limit":
                if main_process:
                    print(f"\n{study['message']}: the same command with --resume continues", file=sys.stderr)
                break
            studies[seed] = study
            if main_process:
                print("\n" + (out / "study.md").read_text())
                for figure in study["figures"]:
                    print(f"figure {figure}")
    except BaseException:
        finish_distributed(wait=False)      # no barrier: the other ranks may never arrive
        raise
    finish_distributed()
    if main_process and args.seeds is not None and len(studies) == len(seeds):
        summary = seeds_summary(studies)
        write_json(Path(args.out) / "seeds.json", summary)
        (Path(args.out) / "seeds.md").write_text(summary["markdown"])
        print("\n" + summary["markdown"])
    return 0
