"""``turnpike resnet54``: the 2025 paper's pre-activation ResNet-54 with intermediate-output stage costs, the
training CLI (``_training.py``) specialised to its network's options."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from ._args import resume_notice
from ._training import (add_recipe_arguments, exit_status, over_seeds, print_epoch, recipe_settings, report,
                        summarise_seeds)

#: config fields whose flag is not the field's name (errors name the flag the user typed)
FLAGS = {"data_dir": "--data", "time_limit_s": "--time-limit", "finetune_epochs": "--finetune-epochs"}


def add_parser(sub):
    from ..experiments._resnet54 import ResNet54Config as C   # defaults defined once, in the config

    p = sub.add_parser("resnet54", help="ResNet-54 with stage costs through the exits (2025 paper)",
                       description="Train a pre-activation ResNet (standard, WS or full stage-cost variant, or a "
                                   "SubResNet-M from scratch) and report per-exit losses, the turnpike and the "
                                   "pruned SubResNet. Defaults are the paper's recipe.")
    p.add_argument("--variant", default=C.variant, choices=["standard", "ws", "full"])
    p.add_argument("--subresnet", type=int, default=C.subresnet, metavar="M",
                   help="train the SubResNet-M architecture from scratch (with --variant standard)")
    add_training_arguments(p, out="runs/resnet54", seeds="several seeds, e.g. 1-10: one sub-folder per seed, a "
                                                       "summary table and OUT/seeds.json")
    return p


def add_training_arguments(p, *, out: str, seeds: str) -> None:
    """The options of one run's data, network, recipe, speed and seeds, shared by ``resnet54`` and
    ``resnet54-study``; ``out`` is the default run folder, ``seeds`` what ``--seeds`` does."""
    from ..experiments._resnet54 import ResNet54Config as C

    p.add_argument("--arch", default=C.arch, choices=["standard", "homogeneous"])
    p.add_argument("--width", type=int, default=C.width, help="homogeneous width (default 64 CIFAR, 32 MNIST)")
    p.add_argument("--blocks-per-stage", type=int, default=C.blocks_per_stage)
    add_recipe_arguments(p, C, out=out, seeds=seeds,
                         data="folder of the data set's files (CIFAR: pickle batches)")


def training_config(args, device, *, seed: int, time_limit, **settings):
    """The :class:`ResNet54Config` of the parsed training options (and ``settings``, e.g. the variant)."""
    from ..experiments._resnet54 import ResNet54Config

    return ResNet54Config(arch=args.arch, width=args.width, blocks_per_stage=args.blocks_per_stage,
                          **recipe_settings(args, device, seed=seed, time_limit=time_limit), **settings)


def run(args) -> int:
    from .._distributed import is_main_process

    runs = over_seeds(args, _train)
    if is_main_process() and args.seeds and len(args.seeds) > 1:       # also when a time limit cut the seeds short
        summarise_seeds(runs, Path(args.out))
    return exit_status(runs[-1][1])


def _train(args, device, seed: int, folder: Path, time_limit) -> dict:
    from .._distributed import is_main_process
    from ..experiments._resnet54 import run_resnet54

    config = training_config(args, device, seed=seed, time_limit=time_limit, variant=args.variant,
                             subresnet=args.subresnet)
    if is_main_process():
        resume_notice("resnet54", SimpleNamespace(resume=args.resume, out=folder))
    metrics = run_resnet54(config, folder, plots=not args.no_plots, resume=args.resume, overwrite=args.overwrite,
                           progress=not args.quiet and is_main_process(),
                           on_epoch=print_epoch if not args.quiet and is_main_process() else None)
    if is_main_process():
        report(metrics, folder)
    return metrics
