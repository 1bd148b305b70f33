"""``turnpike node-spirals``: the two spirals as a neural ODE, the measure turnpike over horizons T."""
from __future__ import annotations

import sys
import time
from pathlib import Path


def _float_list(text: str) -> list[float]:
    return [float(part) for part in text.split(",") if part.strip()]


def _int_list(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def add_parser(sub):
    p = sub.add_parser("node-spirals", help="the two spirals as a neural ODE: measure turnpike (2024 paper, Sec. 5)",
                       description="Train the neural ODE of architecture (26) on the two spirals for several "
                                   "horizons T (OCP (20)) and report the time spent away from the turnpike, "
                                   "μ[Θ_ε,T] (Prop. 16).")
    p.add_argument("--out", default="runs/node-spirals", help="run folder (default: runs/node-spirals)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--horizons", type=_float_list, default=None, help="horizons T, comma-separated "
                                                                        "(default 5,10,20,40)")
    p.add_argument("--interval", type=float, default=None,
                   help="length h of a control interval; K = T/h intervals (default 0.5)")
    p.add_argument("--ode-method", default=None, help="torchdiffeq method (default dopri5; e.g. rk4, euler)")
    p.add_argument("--substeps", type=int, default=None, help="fixed-grid methods: steps per interval (default 1)")
    p.add_argument("--rtol", type=float, default=None, help="adaptive methods: relative tolerance (default 1e-4)")
    p.add_argument("--atol", type=float, default=None, help="adaptive methods: absolute tolerance (default 1e-6)")
    p.add_argument("--adjoint", action="store_true", help="gradients by odeint_adjoint (memory, not speed)")
    p.add_argument("--parametrisation", default=None,
                   help="piecewise_constant (default) or piecewise_linear controls")
    p.add_argument("--steps", type=_int_list, default=None, help="Adam and L-BFGS steps (default 100,100)")
    p.add_argument("--lr", type=float, default=None, help="Adam learning rate (default 0.02)")
    p.add_argument("--no-plots", action="store_true", help="write no figures")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def _config(args):
    from ..experiments._node import NodeSpiralsConfig

    fields = {"seed": args.seed, "adjoint": args.adjoint}
    for name, value in (("horizons", args.horizons), ("interval", args.interval), ("ode_method", args.ode_method),
                        ("substeps", args.substeps), ("rtol", args.rtol), ("atol", args.atol),
                        ("parametrisation", args.parametrisation)):
        if value is not None:
            fields[name] = tuple(value) if isinstance(value, list) else value
    if args.steps is not None:
        fields["steps"] = tuple(args.steps)
    if args.lr is not None:
        fields["options"] = ({"lr": args.lr}, {})
    return NodeSpiralsConfig(**fields)


HEADER = f"{'T':>6} {'K':>4} {'train':>6} {'test':>6} {'μ[Θ_ε,T]':>9} {'T-μ':>7} {'t_tp':>6} {'time s':>7}"


def _row(m) -> str:
    tp = "-" if m["turnpike_time"] is None else f"{m['turnpike_time']:.2f}"
    return (f"{m['horizon']:>6g} {m['depth']:>4} {m['train_accuracy']:>6.3f} {m['test_accuracy']:>6.3f} "
            f"{m['theta_measure']:>9.3f} {m['time_near_turnpike']:>7.2f} {tp:>6} {m['train_time_s']:>7.1f}")


def run(args) -> int:
    from ..experiments._node import run_node_spirals

    config = _config(args)
    out = Path(args.out)
    started = time.perf_counter()
    print(HEADER)

    def report(horizon, m):
        print(_row(m), flush=True)
        if m["status"] not in ("converged", "max_steps"):
            print(f"warning (T={horizon:g}): {m['message']}", file=sys.stderr)

    metrics = run_node_spirals(config, out, plots=not args.no_plots, progress=not args.quiet, callback=report)
    print(f"\nε = {metrics['eps']:.4f} (= {config.eps_fraction} × initial RMS distance to X*_y); "
          f"max μ[Θ_ε,T] = {metrics['max_theta_measure']:.3f} over T = "
          f"{', '.join(f'{t:g}' for t in config.horizons)}; {time.perf_counter() - started:.1f} s, "
          f"run folder {out}")
    return 0
