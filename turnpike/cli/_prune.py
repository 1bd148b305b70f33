"""``turnpike prune``: a run's network cut at its turnpike, exported for inference with torch alone."""
from __future__ import annotations

#: parameters behind the flags (errors name the flag the user typed)
FLAGS = {"folder": "RUN", "data_dir": "--data"}


def add_parser(sub):
    p = sub.add_parser("prune", help="export a run's network pruned at its turnpike (torch.export, torch alone)",
                       description="Cut the network of a `turnpike resnet54` or `turnpike train` run folder at exit "
                                   "M (its turnpike layer, or --depth M): the stem, the first M blocks, the "
                                   "remaining skip paths with exit M's statistics and the head, exported "
                                   "with torch.export (any batch size), checked on the run's "
                                   "test set against exit M, with a JSON file saying how to prepare images. "
                                   "Load it with torch.export.load(FILE).module().")
    p.add_argument("run", help="run folder of the trained network")
    p.add_argument("--depth", type=int, default=None, metavar="M", help="exit to cut at (default: the turnpike)")
    p.add_argument("--out", default=None, help="file to write (default: RUN/pruned-M.pt2, and RUN/pruned-M.json)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--data", default=None, metavar="DIR",
                   help="the run's data folder, if it moved since the run (checked to hold the same data)")
    p.add_argument("--allow-unfinished", action="store_true",
                   help="export the network of a run stopped before its last epoch (time limit, signal) as it is")
    return p


def run(args) -> int:
    from ..experiments._export import export_pruned

    summary = export_pruned(args.run, depth=args.depth, out=args.out, device=args.device,
                            allow_unfinished=args.allow_unfinished, data_dir=args.data)
    if summary["unfinished"]:
        print(f"{args.run}: {summary['unfinished']}")
    print(f"pruned at {summary['depth']} of {summary['network_depth']} blocks: {summary['parameters']:,} parameters, "
          f"{summary['multiply_adds']:,} multiply-adds per image; test accuracy "
          f"{summary['test_accuracy']:.4f} (the run's exit {summary['depth']}: {summary['run_exit_test_accuracy']:.4f})")
    print(f"written {summary['file']} (load: torch.export.load(FILE).module()(images)) and its preparation "
          f"{summary['file'].rsplit('.', 1)[0]}.json")
    return 0
