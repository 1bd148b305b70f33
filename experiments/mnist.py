"""MNIST / Fashion-MNIST turnpike, 2024 paper Sec. 6 (Fig. 5): a 60-layer ResNet (26) with the
soft cross-entropy stage cost against baselines of depth 10..60 without it.

    .venv/bin/python experiments/mnist.py [--dataset fashion-mnist] [--epochs 10] [--out runs/mnist]

The options are those of ``turnpike mnist`` (this script is that command); defaults are defined
once, in ``turnpike.experiments.MnistConfig``.
"""
import sys

from turnpike.cli import main

sys.exit(main(["mnist", *sys.argv[1:]]))
