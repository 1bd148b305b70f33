"""``turnpike node-spirals``: the two spirals as a neural ODE, the measure turnpike over horizons T."""
from __future__ import annotations

import sys
import time
from pathlib import Path

from ._args import add_run_folder_arguments, float_list, int_list, positive_float

#: library names behind the flags (errors name the flag the user typed): the ODE scheme is `method`
FLAGS = {"method": "--ode-method", "horizon": "--horizons", "horizons": "--horizons"}


def _comma_list(values) -> str:
    return ",".join(f"{v:g}" for v in values)


def add_parser(sub):
    from ..experiments._node import NodeSpiralsConfig as C   # defaults defined once, in the config

    # steps and options default to None in the config, which resolves them per method: show the result
    schedule = C()
    adam_lr = schedule.options[schedule.method.index("adam")]["lr"]
    p = sub.add_parser("node-spirals", help="the two spirals as a neural ODE: measure turnpike (2024 paper, Sec. 5)",
                       description="Train the neural ODE of architecture (26) on the two spirals for several "
                                   "horizons T (OCP (20)) and report the time spent away from the turnpike, "
                                   "μ[Θ_ε,T] (Prop. 16).")
    p.add_argument("--seed", type=int, default=C.seed, help="random seed (default %(default)s)")
    p.add_argument("--horizons", type=float_list, default=C.horizons,
                   help=f"horizons T, comma-separated (default {_comma_list(C.horizons)})")
    p.add_argument("--interval", type=positive_float, default=C.interval,
                   help="length h of a control interval; K = T/h intervals (default %(default)s)")
    p.add_argument("--ode-method", default=C.ode_method,
                   help="ODE scheme (default %(default)s, trained through its exact adjoint; euler, midpoint "
                        "too; adaptive dopri5, bosh3, ... through torchdiffeq)")
    p.add_argument("--substeps", type=int, default=C.substeps,
                   help="fixed-grid methods: steps per interval (default %(default)s)")
    p.add_argument("--rtol", type=positive_float, default=C.rtol,
                   help="adaptive methods: relative tolerance (default %(default)s)")
    p.add_argument("--atol", type=positive_float, default=C.atol,
                   help="adaptive methods: absolute tolerance (default %(default)s)")
    p.add_argument("--step-bound", type=float, default=C.step_bound,
                   help="fixed-grid methods: substeps keep h·Lip(F) below this (default %(default)s; 0: off)")
    p.add_argument("--no-warm-start", dest="warm_start", action="store_false", default=C.warm_start,
                   help="start every horizon from random controls (default: from the previous horizon)")
    p.add_argument("--warm-method", default=",".join(C.warm_method or C().method),
                   help="methods of the warm-started horizons, comma-separated among the schedule's "
                        "(default %(default)s; 'all': the whole schedule)")
    p.add_argument("--starts", type=int, default=C.starts,
                   help="random starts of the first horizon, the lowest J kept (default %(default)s)")
    p.add_argument("--check-method", default=C.check_method,
                   help="adaptive reference solver of the a-posteriori check at rtol 1e-8 "
                        "(default %(default)s; 'none': no check)")
    p.add_argument("--adjoint", action="store_true", default=C.adjoint,
                   help="gradients by odeint_adjoint (memory, not speed)")
    p.add_argument("--parametrisation", default=C.parametrisation,
                   help="piecewise_constant or piecewise_linear controls (default %(default)s)")
    p.add_argument("--steps", type=int_list, default=None,
                   help=f"Adam and L-BFGS steps (default {_comma_list(schedule.steps)})")
    p.add_argument("--lr", type=float, default=None,
                   help=f"Adam learning rate (default {adam_lr:g})")
    p.add_argument("--no-plots", action="store_true", help="write no figures")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_run_folder_arguments(p, out="runs/node-spirals", resume=None)
    return p


def _config(args):
    from ..backends import with_learning_rate
    from ..experiments._node import NodeSpiralsConfig

    fields = {"seed": args.seed, "horizons": tuple(args.horizons), "interval": args.interval,
              "ode_method": args.ode_method, "substeps": args.substeps, "rtol": args.rtol, "atol": args.atol,
              "adjoint": args.adjoint, "parametrisation": args.parametrisation,
              "step_bound": args.step_bound or None, "warm_start": args.warm_start, "starts": args.starts,
              "warm_method": None if args.warm_method == "all" else tuple(
                  part.strip() for part in args.warm_method.split(",") if part.strip()),
              "check_method": None if args.check_method == "none" else args.check_method}
    if args.steps is not None:
        fields["steps"] = tuple(args.steps)
    if args.lr is not None:
        default = NodeSpiralsConfig()
        fields["options"] = with_learning_rate(default.method, default.options, args.lr)
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
        check = m.get("a_posteriori")
        if check is not None and check["max_state_difference"] > 1e-2:
            print(f"warning (T={horizon:g}): the trained scheme's states differ from {check['method']}'s by "
                  f"{check['max_state_difference']:.2g}; lower --step-bound or raise --substeps", file=sys.stderr)
        if m["status"] not in ("converged", "max_steps"):
            print(f"warning (T={horizon:g}): {m['message']}", file=sys.stderr)

    metrics = run_node_spirals(config, out, plots=not args.no_plots, progress=not args.quiet, callback=report,
                               overwrite=args.overwrite)
    print(f"\nε = {metrics['eps']:.4f} (= {config.eps_fraction} × initial RMS distance to X*_y); "
          f"max μ[Θ_ε,T] = {metrics['max_theta_measure']:.3f} over T = "
          f"{', '.join(f'{t:g}' for t in config.horizons)}; {time.perf_counter() - started:.1f} s, "
          f"run folder {out}")
    return 0
