"""``turnpike train-study``: the 2025 paper's comparison (standard, WS, full, SubResNet-M) for the model of
``turnpike train``, with its options; runs as ``turnpike resnet54-study`` does."""
from __future__ import annotations

from ._study import FLAGS

__all__ = ["FLAGS", "add_parser", "run"]


def add_parser(sub):
    from ._study import _DESCRIPTION, _SEEDS, add_study_arguments
    from ._train import add_train_arguments

    p = sub.add_parser("train-study", help="the paper's comparison for your network: standard, WS, full and "
                                           "SubResNet-M runs, Table 1, Tables 2-3, figures, early exit",
                       description=_DESCRIPTION.format(paper="") + " The model and data options are "
                                   "`turnpike train`'s.")
    add_study_arguments(p, default_subresnets=[2])
    add_train_arguments(p, out="runs/train-study", seeds=_SEEDS)
    return p


def run(args) -> int:
    from ._study import run_studies
    from ._train import train_config

    return run_studies(args, train_config)
