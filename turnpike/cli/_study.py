"""``turnpike resnet54-study`` and ``turnpike train-study``: the 2025 paper's comparison (standard, WS, full,
SubResNet-M) in one command, for its pre-activation ResNet or for any residual network."""
from __future__ import annotations

import sys
from pathlib import Path

from ._args import int_list, name_list

#: config fields whose flag is not the field's name (errors name the flag the user typed)
FLAGS = {"data_dir": "--data", "time_limit_s": "--time-limit", "finetune_epochs": "--finetune-epochs",
         "model_options": "--model-option"}

_DESCRIPTION = ("Train the runs of the 2025 paper's comparison on one data set and recipe, one folder each under OUT "
                "(standard, ws, full, subresnet-M), then write Table 1{paper}, Tables 2-3 (Theorems 1-2), the "
                "comparison figures and the early-exit curves (OUT/study.md, OUT/study.json). --time-limit bounds "
                "the whole study; --resume keeps the finished runs and continues the stopped one.")
_SEEDS = "one study per seed, e.g. 1-10 (OUT/seed-S), and Table 1 over the seeds (OUT/seeds.md)"


def add_parser(sub):
    from ._resnet54 import add_training_arguments

    p = sub.add_parser("resnet54-study", help="the paper's comparison: standard, WS, full and SubResNet-M runs, "
                                              "Table 1, Tables 2-3, Figs. 2-5, early exit",
                       description=_DESCRIPTION.format(paper=" with the paper's numbers beside where a column "
                                                             "matches"))
    add_study_arguments(p, default_subresnets=[12])
    add_training_arguments(p, out="runs/resnet54-study", seeds=_SEEDS)
    return p


def add_study_arguments(p, *, default_subresnets: list) -> None:
    p.add_argument("--variants", type=name_list, default=["standard", "ws", "full"],
                   help="ResNet-N variants to train, comma-separated (default standard,ws,full)")
    p.add_argument("--subresnets", type=int_list, default=default_subresnets, metavar="M",
                   help="SubResNet depths trained from scratch and pruned to, e.g. 12 or 6,12 (default "
                        f"{','.join(map(str, default_subresnets))})")


def run(args) -> int:
    from ._resnet54 import training_config

    return run_studies(args, training_config)


def run_studies(args, make_config) -> int:
    """The study of each seed, with ``make_config(args, device, seed=, time_limit=)`` its base config, and Table 1
    over the seeds; the exit status of the last."""
    from functools import partial

    from .._distributed import is_main_process
    from .._runs import write_json, write_text
    from ..experiments._study import seeds_summary
    from ._training import exit_status, over_seeds

    studies = dict(over_seeds(args, partial(_study, make_config)))
    if is_main_process() and len(studies) > 1 and all(s["status"] == "finished" for s in studies.values()):
        summary = seeds_summary(studies)
        write_json(Path(args.out) / "seeds.json", summary)
        write_text(Path(args.out) / "seeds.md", summary["markdown"])
        print("\n" + summary["markdown"])
    return exit_status(list(studies.values())[-1])


def _study(make_config, args, device, seed: int, out: Path, time_limit) -> dict:
    """One seed's study; prints each run's report, then the study's tables (rank 0)."""
    from .._distributed import is_main_process
    from ..experiments._study import run_study
    from ._training import report

    main_process = is_main_process()

    def on_run(name, metrics, folder):
        if main_process:
            print(f"\n== {folder}")
            report(metrics, folder)

    study = run_study(make_config(args, device, seed=seed, time_limit=time_limit), out, variants=args.variants, subresnets=args.subresnets, resume=args.resume,
                      overwrite=args.overwrite, plots=not args.no_plots, progress=not args.quiet and main_process,
                      on_run=on_run)
    if not main_process:
        return study
    if study["status"] in ("time_limit", "interrupted"):
        print(f"\n{study['message']}: the same command with --resume continues", file=sys.stderr)
    else:
        print("\n" + (out / "study.md").read_text())
        for figure in study["figures"]:
            print(f"figure {figure}")
    return study
