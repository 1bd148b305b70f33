"""``turnpike early-exit``: accuracy against blocks executed of a trained stage-cost ResNet, with timing."""
from __future__ import annotations

from pathlib import Path

from ._args import float_list

#: parameters behind the flags (errors name the flag the user typed)
FLAGS = {"batch_size": "--batch-size", "threshold": "--thresholds", "thresholds": "--thresholds", "folder": "RUN",
         "data_dir": "--data"}


def add_parser(sub):
    p = sub.add_parser("early-exit", help="early-exit inference of a trained run: accuracy vs blocks",
                       description="Run the test set of a `turnpike resnet54` or `turnpike train` run folder "
                                   "through its network with "
                                   "early exit (each image stops at the first exit whose softmax confidence "
                                   "exceeds τ) for several τ; report accuracy, mean blocks executed and images/s, "
                                   "with the run's pruned SubResNet and other runs (--compare) as points.")
    p.add_argument("run", help="run folder of the network (trained with the stage cost for useful exits)")
    p.add_argument("--compare", nargs="*", default=[], help="other run folders drawn as points (depth, test accuracy)")
    p.add_argument("--thresholds", type=float_list, default=[0.0, 0.5, 0.8, 0.9, 0.95, 0.99, 1.0],
                   help="confidence thresholds τ in [0, 1], comma-separated (default 0,0.5,0.8,0.9,0.95,0.99,1)")
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--data", default=None, metavar="DIR",
                   help="the run's data folder, if it moved since the run (checked to hold the same data)")
    p.add_argument("--allow-unfinished", action="store_true",
                   help="use runs stopped before their last epoch (time limit, signal) as they are, labelled so")
    return p


def run(args) -> int:

    from .._runs import check_writable_folder, read_json, write_json
    from ..experiments._recipe import EvaluationBatches
    from ..experiments._run_reading import check_finished, load_run_data, load_run_network, run_config
    from ..systems._early_exit import SPEED_REPEATS, early_exit_curve

    folder = Path(args.run)
    # everything read and checked before the curve is computed: a bad input fails in a second
    metrics = read_json(folder / "metrics.json", "the metrics of a finished `turnpike resnet54` or `train` run")
    others = [(Path(other).name, read_json(Path(other) / "metrics.json", "the metrics of a finished run"))
              for other in args.compare]
    labels = {str(path): check_finished(path, m, allow_unfinished=args.allow_unfinished)
              for path, m in [(folder, metrics)] + [(Path(o), m) for (_, m), o in zip(others, args.compare)]}
    check_writable_folder("RUN", folder)
    network = load_run_network(folder, device=args.device)
    config = run_config(folder, data_dir=args.data)
    data = load_run_data(folder, config)
    # in the network's own memory format (load_run_network), from memory or read from the files batch by batch
    batches = EvaluationBatches(data, args.device, channels_last=config.channels_last, batch_size=args.batch_size)
    curve = early_exit_curve(network, batches, None, args.thresholds, measure_speed=True)
    print(f"{metrics['dataset']} {metrics['variant']} (N = {metrics['depth']}), {data.split_size('test')} test images, "
          f"device {args.device}")
    for name, label in labels.items():
        if label:
            print(f"{name}: {label}")
    print(f"{'τ':>6} {'accuracy':>9} {'blocks':>7} {'compute':>8} {'images/s':>9} {'range':>15}   (compute: "
          f"multiply-adds over the plain network's; images/s: median of {SPEED_REPEATS} timed passes, range: "
          f"slowest-fastest)")
    for row in zip(curve["thresholds"], curve["accuracy"], curve["mean_blocks"], curve["mean_compute"],
                   curve["images_per_s"], curve["images_per_s_range"]):
        print(f"{row[0]:>6g} {row[1]:>9.4f} {row[2]:>7.2f} {row[3]:>8.3f} {row[4]:>9.0f} "
              f"{f'{row[5][0]:.0f}-{row[5][1]:.0f}':>15}")
    write_json(folder / "early_exit.json", {**curve, "device": args.device, "unfinished": labels[str(folder)]})
    if not args.no_plots:
        from ..experiments._conv_plots import early_exit_figure
        cost = network.exit_costs(*data.image_size)["network"]
        pruned = metrics.get("pruned")
        if pruned and "multiply_adds" not in pruned:        # a run folder written before runs stored it
            pruned["multiply_adds"] = network.subresnet(pruned["depth"]).exit_costs(*data.image_size)["network"]
        print(f"figure {early_exit_figure(curve, metrics, others, folder / 'early_exit.png', network_cost=cost)}")
    return 0
