"""``turnpike train``: stage costs, turnpike, pruning and early exit for the user's own residual network."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from types import SimpleNamespace

from ._args import resume_notice

#: config fields whose flag is not the field's name (errors name the flag the user typed)
FLAGS = {"data_dir": "--data", "time_limit_s": "--time-limit", "finetune_epochs": "--finetune-epochs",
         "model_options": "--model-option"}


def _option(text: str) -> tuple:
    """KEY=VALUE -> (KEY, VALUE), VALUE read as JSON where it is JSON (16, true, 0.5, "a"), else as a string."""
    key, equals, value = text.partition("=")
    if not equals or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE with KEY a Python name, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def add_parser(sub):
    from ..experiments._train import TrainConfig as C    # defaults defined once, in the config

    p = sub.add_parser("train", help="your residual network with stage costs: exits, turnpike, pruning, early exit",
                       description="Train a residual network (a built-in one, or yours: a factory returning a "
                                   "module with torchvision's ResNet layout or a turnpike.ResidualNetwork) with "
                                   "intermediate-output stage costs through its skip-path exits (or standard "
                                   "training), on an image folder or a built-in data set; report per-exit losses, "
                                   "the turnpike and the pruned network. Defaults are the 2025 paper's recipe.")
    p.add_argument("--variant", default=C.variant, choices=["standard", "ws", "full"],
                   help="exits sharing the network's weights (ws), with their own (full), or standard training "
                        "(default: %(default)s)")
    p.add_argument("--subresnet", type=int, default=C.subresnet, metavar="M",
                   help="train the SubResNet-M architecture of the model from scratch: its first M blocks, the "
                        "remaining skip paths and the head (with --variant standard; for `turnpike depth-bounds`)")
    add_train_arguments(p, out="runs/train", seeds="several seeds, e.g. 1-10: one sub-folder per seed, a "
                                                   "summary table and OUT/seeds.json")
    return p


def add_train_arguments(p, *, out: str, seeds: str) -> None:
    """The options of one run's model, data, recipe, speed and seeds, shared by ``train`` and ``train-study``;
    ``out`` is the default run folder, ``seeds`` what ``--seeds`` does."""
    from ..experiments._train import TrainConfig as C    # defaults defined once, in the config
    from ..models import BUILT_IN_MODELS
    from ._training import add_recipe_arguments

    p.add_argument("--model", default=C.model, metavar="NAME|MODULE:FACTORY|FILE.py:FACTORY",
                   help=f"a built-in model ({', '.join(BUILT_IN_MODELS)}), or a callable returning your "
                        "nn.Module, imported from the current folder or sys.path (default: %(default)s)")
    p.add_argument("--model-option", dest="model_options", type=_option, action="append", default=[],
                   metavar="KEY=VALUE", help="a keyword of the model's factory (repeat; VALUE read as JSON, e.g. "
                                             "base=16, small_stem=true); num_classes and in_channels come from "
                                             "the data where the factory takes them")
    add_recipe_arguments(p, C, out=out, seeds=seeds, data="image folder (one sub-folder per class; train/ and val/ "
                                                          "inside, or --test-fraction), or the files of --dataset")
    p.add_argument("--image-size", type=int, default=C.image_size, help="folder images resized to this square")
    p.add_argument("--image-channels", type=int, default=C.image_channels, choices=[1, 3],
                   help="folder images as RGB (3) or grey (1) (default: 1 if the folder's images are grey, else 3)")
    p.add_argument("--test-fraction", type=float, default=C.test_fraction,
                   help="folder without train/ and val/: the share of each class held out for testing")
    p.add_argument("--flip", action=argparse.BooleanOptionalAction, default=C.flip,
                   help="random horizontal flips of training images (default: yes for CIFAR; no for image folders, "
                        "where a flipped digit, letter or sign is another one (--flip for natural images), digits "
                        "and clothes)")
    p.add_argument("--crop", default=C.crop, choices=["padded", "resized", "none"],
                   help="training crops: of the images padded by 4 pixels (CIFAR's recipe), random-resized (area "
                        "8-100%%, aspect 3/4-4/3, resized back: torchvision's ImageNet recipe, for natural images "
                        "larger than 32 pixels), or none (default: %(default)s)")
    p.add_argument("--weights", default=C.weights, metavar="FILE",
                   help="pretrained weights loaded into the model before training: a file of "
                        "torch.save(model.state_dict()) (torchvision's ResNet files are such), or a checkpoint "
                        "holding one; every tensor of the model must load from it except those under --weights-new")
    p.add_argument("--weights-new", action="append", default=[], metavar="PREFIX",
                   help="tensors of the model (names, or prefixes such as fc) that may stay as initialised when "
                        "--weights has none of their name and shape, e.g. a classifier for other classes (repeat)")
    p.add_argument("--stream", action="store_true",
                   help="read the image folder's files batch by batch (DataLoader workers on a GPU) instead of "
                        "decoding them all into memory first: for folders larger than memory; the same training")


def train_config(args, device, *, seed: int, time_limit, **settings):
    """The :class:`TrainConfig` of the parsed options of :func:`add_train_arguments` (and ``settings``)."""
    from ..experiments._train import TrainConfig
    from ._training import recipe_settings

    return TrainConfig(model=args.model, model_options=dict(args.model_options), image_size=args.image_size,
                       image_channels=args.image_channels, test_fraction=args.test_fraction, flip=args.flip,
                       stream=args.stream, crop=args.crop, weights=args.weights,
                       weights_new=tuple(args.weights_new),
                       **recipe_settings(args, device, seed=seed, time_limit=time_limit), **settings)


def run(args) -> int:
    from .._distributed import is_main_process
    from ._training import exit_status, over_seeds, summarise_seeds

    runs = over_seeds(args, _train)
    if is_main_process() and args.seeds and len(args.seeds) > 1:
        summarise_seeds(runs, Path(args.out))
    return exit_status(runs[-1][1])


def _train(args, device, seed: int, folder: Path, time_limit) -> dict:
    from .._distributed import is_main_process
    from ..experiments._train import run_train
    from ._training import print_epoch, report

    config = train_config(args, device, seed=seed, time_limit=time_limit, variant=args.variant,
                          subresnet=args.subresnet)
    if is_main_process():
        resume_notice("train", SimpleNamespace(resume=args.resume, out=folder))
    metrics = run_train(config, folder, plots=not args.no_plots, resume=args.resume, overwrite=args.overwrite,
                        progress=not args.quiet and is_main_process(),
                        on_epoch=print_epoch if not args.quiet and is_main_process() else None)
    if is_main_process():
        report(metrics, folder)
    return metrics
