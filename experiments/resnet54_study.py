"""The 2025 stage-cost paper's comparison in one resumable study: Table 1, Tables 2–3, Figs. 2–5, early exit.

    .venv/bin/python experiments/resnet54_study.py --dataset fashion-mnist --arch homogeneous [--epochs 30]
    .venv/bin/python experiments/resnet54_study.py ... --time-limit 540 --resume     # in jobs of a wall-clock limit

Trains ResNet-N with standard training, with the stage cost (WS and full exits) and SubResNet-M from
scratch (``--subresnets 12``), one folder each under ``--out``, on the paper's recipe unless told
otherwise (every option of ``turnpike resnet54`` applies), then writes ``study.md``: Table 1 with the
paper's numbers beside where a column matches, and Tables 2–3 (Theorems 1–2). This script is
``turnpike resnet54-study``; see docs/resnet54.md.
"""
import sys

from turnpike.cli import main

sys.exit(main(["resnet54-study", *sys.argv[1:]]))
