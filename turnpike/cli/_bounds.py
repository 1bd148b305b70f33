"""``turnpike depth-bounds``: Tables 2–3 of the 2025 paper (Theorems 1–2) from resnet54 or train run folders."""
from __future__ import annotations

from pathlib import Path


def add_parser(sub):
    p = sub.add_parser("depth-bounds", help="Theorems 1-2 (2025 paper, Tables 2-3) from resnet54 or train run folders",
                       description="Compare a ResNet-N trained with the stage cost (a `turnpike resnet54` or "
                                   "`turnpike train` run folder of --variant ws or full) with SubResNets trained "
                                   "from scratch by the same command (`--variant standard --subresnet M` run "
                                   "folders): the objective bound of Theorem 1 and the average-loss bound of "
                                   "Theorem 2, measured.")
    p.add_argument("network", help="run folder of the stage-cost ResNet-N")
    p.add_argument("subresnets", nargs="+", help="run folders of SubResNet-M runs")
    p.add_argument("--out", default=None, help="JSON file for the rows (default: NETWORK/depth_bounds.json)")
    return p


def run(args) -> int:
    from .._runs import check_writable_file, write_json
    from ..experiments._depth_bounds import depth_bounds_from_runs

    result = depth_bounds_from_runs(args.network, args.subresnets)      # (reads the run folders: fast)
    out = check_writable_file("--out", Path(args.out) if args.out else Path(args.network) / "depth_bounds.json")
    write_json(out, result)
    name = f"ResNet-{result['depth']}" if result["model"] is None else f"{result['model']} (N = {result['depth']})"
    print(f"{name} with stage cost γ = {result['gamma']:g}, weight decay λ = "
          f"{result['weight_decay']:g} on the residual branches\n")
    print(result["table"])
    broken = [row["sub_depth"] for row in result["rows"] if not row["holds"]]
    if broken:
        print(f"\nbound exceeded for M = {broken}: the trained ResNet-N is not a global optimum there "
              f"(the theorems assume one)")
    print(f"\nrows written to {out}")
    return 0
