"""Shortcut depth and the Hessian at zero, Demystifying-ResNet paper (Sec. 5, Fig. 4-7, App. B).

    .venv/bin/python experiments/shortcut_hessian.py [--out runs/hessian] [--depths 2,4,8,16,32] [--runs 5]

Whitened MNIST (10 principal components, one-hot targets): initial Hessian condition numbers of
Xavier and orthogonal linear networks and of 2-shortcut networks started near zero against depth,
the spectrum and index along gradient descent, and the final loss at the best learning rate. The
options are those of ``turnpike hessian`` (this script is that command); the closed forms of
Theorem 2 it is checked against are in ``theory/shortcut-hessian.md``.
"""
import sys

from turnpike.cli import main

sys.exit(main(["hessian", *sys.argv[1:]]))
