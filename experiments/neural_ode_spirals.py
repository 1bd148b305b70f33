"""Neural-ODE turnpike on the two spirals, 2024 paper OCP (20) and Prop. 16 (measure turnpike).

    .venv/bin/python experiments/neural_ode_spirals.py [--out runs/node-spirals] [--horizons 5,10,20,40]

Trains the neural ODE over several horizons T and reports μ[Θ_ε,T], the time spent away from the
turnpike, which stays bounded while T grows. The options are those of ``turnpike node-spirals``
(this script is that command); defaults are defined once, in ``turnpike.experiments.NodeSpiralsConfig``.
"""
import sys

from turnpike.cli import main

sys.exit(main(["node-spirals", *sys.argv[1:]]))
