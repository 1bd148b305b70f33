"""What every training command's CLI shares (``train``, ``resnet54`` and their studies): the recipe's options,
the loop over seeds inside a process group, the exit status, the report of a run and the summary over seeds."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ._args import int_list, int_list_or_none, non_negative_float, positive_float


def add_recipe_arguments(p, C, *, out: str, seeds: str, data: str) -> None:
    """The options every training command shares (:class:`TrainingRecipe`'s fields, defaults from the
    command's config class ``C``): data, recipe, speed, seeds, run folder; ``data`` says what --data is."""
    from .._distributed import PROCESS_GROUP_TIMEOUT_S
    from ..backends import COMPILE_MODES

    p.add_argument("--dataset", default=C.dataset, choices=list(C.datasets))
    p.add_argument("--data", default=C.data_dir, help=data)
    p.add_argument("--epochs", type=int, default=C.epochs)
    p.add_argument("--milestones", type=int_list_or_none, default=None,
                   help="lr ÷ 10 after these epochs, each before --epochs, comma-separated ('' for none: a constant "
                        f"lr) (default: {','.join(map(str, C.milestones))})")
    p.add_argument("--lr-schedule", default=C.lr_schedule, choices=["multistep", "cosine"],
                   help="multistep: lr ÷ 10 after each of --milestones; cosine: from --lr down to 0 over the epochs")
    p.add_argument("--warmup-epochs", type=int, default=C.warmup_epochs,
                   help="linear warm-up of the lr over the first epochs")
    p.add_argument("--lr", type=float, default=C.lr)
    p.add_argument("--weight-decay", type=float, default=C.weight_decay, help="λ of λ/2‖w‖²")
    p.add_argument("--train-subset", type=int, default=C.train_subset)
    p.add_argument("--test-subset", type=int, default=C.test_subset)
    p.add_argument("--batch-size", type=int, default=C.batch_size)
    p.add_argument("--gamma", type=float, default=C.gamma, help="stage-cost weight γ")
    p.add_argument("--eps-fraction", type=float, default=C.eps_fraction,
                   help="turnpike rule: ε = this × (L_0 − min_k L_k) on the train exit losses (default %(default)s)")
    p.add_argument("--finetune-epochs", type=int, default=C.finetune_epochs, metavar="E",
                   help="train the SubResNet pruned at the turnpike E more epochs at the last lr (default %(default)s)")
    p.add_argument("--device", default=C.device)
    p.add_argument("--amp", action="store_true", help="bf16 autocast (GPU; on a CPU it is slower, and says so)")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=C.channels_last,
                   help="channels-last memory format of the network and batches (default: %(default)s)")
    p.add_argument("--compile", default=C.compile, choices=COMPILE_MODES, metavar="MODE",
                   help="torch.compile the training forward pass with this mode (%(choices)s; default: eager)")
    p.add_argument("--cuda-graph", action="store_true",
                   help="take each training step as two CUDA graphs replayed on static buffers (CUDA devices: one "
                        "launch instead of thousands; elsewhere the same step runs eagerly; not under torchrun)")
    p.add_argument("--sync-batchnorm", action="store_true",
                   help="under torchrun: normalise by the statistics of the whole batch over all ranks (default: "
                        "each rank's share, as plain DistributedDataParallel)")
    p.add_argument("--tensorboard", action="store_true",
                   help="also write the per-epoch scalars to OUT/tensorboard (needs the tensorboard package)")
    p.add_argument("--seed", type=int, default=C.seed)
    p.add_argument("--seeds", type=int_list, default=None, help=seeds)
    p.add_argument("--out", default=out)
    p.add_argument("--process-group-timeout", type=positive_float, default=PROCESS_GROUP_TIMEOUT_S,
                   metavar="SECONDS",
                   help="under torchrun: a rank that waits this long for a stalled one fails the job "
                        f"(default {PROCESS_GROUP_TIMEOUT_S:g})")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its checkpoint; every setting must match the stored one "
                        "except --time-limit, --device, --data, --tensorboard, --compile, --cuda-graph (and train's "
                        "--weights and --weights-new: the checkpoint replaces the weights, no file is read); with no run in --out, a new one starts (and the "
                        "command says so)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run in --out (its run files are removed first; other files stay); without it "
                        "or --resume, a folder that holds a run is refused")
    p.add_argument("--time-limit", type=non_negative_float, default=C.time_limit_s, metavar="SECONDS",
                   help="stop the training, or the fine-tuning after it, at the first epoch end after this many "
                        "seconds, just after the checkpoint (metrics of the network so far are written; "
                        "--resume continues)")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no per-epoch lines")


def recipe_settings(args, device, *, seed: int, time_limit) -> dict:
    """The :class:`TrainingRecipe` fields of the parsed options of :func:`add_recipe_arguments`; milestones typed
    at or beyond --epochs are refused (the default ones are the paper's, whatever the epochs)."""
    typed = args.milestones
    if typed and args.lr_schedule == "cosine":
        raise ValueError(f"--milestones: expected none with --lr-schedule cosine, got {','.join(map(str, typed))}")
    if typed is not None and any(m >= args.epochs for m in typed):
        raise ValueError(f"--milestones: expected epochs before --epochs {args.epochs}, got "
                         f"{','.join(map(str, typed))}")
    milestones = {} if typed is None else {"milestones": typed}
    return dict(dataset=args.dataset, data_dir=args.data, epochs=args.epochs, **milestones, lr=args.lr,
                lr_schedule=args.lr_schedule, warmup_epochs=args.warmup_epochs,
                weight_decay=args.weight_decay, train_subset=args.train_subset, test_subset=args.test_subset,
                batch_size=args.batch_size, gamma=args.gamma, eps_fraction=args.eps_fraction, device=device,
                amp=args.amp, channels_last=args.channels_last, compile=args.compile, cuda_graph=args.cuda_graph,
                sync_batchnorm=args.sync_batchnorm, tensorboard=args.tensorboard, time_limit_s=time_limit,
                finetune_epochs=args.finetune_epochs, seed=seed)


def exit_status(result: dict) -> int:
    """0, or 128 + the signal's number when a signal stopped the run (130 Ctrl-C, 143 SIGTERM), as a
    shell reports a process the signal ended: a scheduler sees the run did not finish."""
    import signal

    if result.get("status") == "interrupted" and result.get("signal"):
        return 128 + int(signal.Signals[result["signal"]])
    return 0


def resume_command() -> str:
    """The command line of this call with --resume: what continues a stopped run."""
    import shlex

    arguments = [a for a in sys.argv[1:] if a not in ("--resume", "--overwrite")]
    return " ".join(shlex.quote(a) for a in ["turnpike", *arguments, "--resume"])


def over_seeds(args, train) -> list:
    """``train(args, device, seed, folder, time_limit)`` for --seed or each of --seeds (``OUT/seed-S``), inside
    the process group torchrun describes, with one time limit for all seeds: stops after a result whose
    status is ``time_limit``. Returns ``[(seed, result)]``."""
    from .._distributed import finish_distributed, init_distributed

    # under torchrun (WORLD_SIZE > 1): join the process group, one GPU per rank
    device = init_distributed(args.device, timeout_s=args.process_group_timeout)
    if args.amp and str(device) == "cpu":
        print(f"turnpike {args.command}: note: --amp on a CPU: bf16 autocast is applied, usually slower than "
              "float32 there and less accurate", file=sys.stderr)
    if args.cuda_graph and not str(device).startswith("cuda"):
        print(f"turnpike {args.command}: note: --cuda-graph on {device}: CUDA graphs need a CUDA device; the "
              "graph-ready step runs eagerly (the same result)", file=sys.stderr)
    seeds = args.seeds if args.seeds else [args.seed]
    deadline = None if args.time_limit is None else time.perf_counter() + args.time_limit
    results = []
    try:
        for seed in seeds:
            folder = Path(args.out) if len(seeds) == 1 else Path(args.out) / f"seed-{seed}"
            left = None if deadline is None else max(0.0, deadline - time.perf_counter())
            results.append((seed, train(args, device, seed, folder, left)))
            if results[-1][1]["status"] in ("time_limit", "interrupted"):
                break
    except BaseException:
        finish_distributed(wait=False)      # no barrier: the other ranks may never arrive
        raise
    finish_distributed()
    return results


def summarise_seeds(runs: list, out: Path) -> None:
    """One line per seed and the spread: test accuracy, turnpike, pruned (and fine-tuned) accuracy."""
    from .._runs import write_json

    rows = []
    for seed, m in runs:
        pruned = m["pruned"] or {}
        rows.append({"seed": seed, "status": m["status"], "test_accuracy": m["test_accuracy"],
                     "turnpike_layer": m["turnpike_layer"], "depth": m["depth"],
                     "pruned_test_accuracy": pruned.get("test_accuracy"),
                     "finetuned_test_accuracy": pruned.get("finetuned", {}).get("test_accuracy")})
    print(f"\n{'seed':>5} {'test':>7} {'turnpike':>9} {'pruned':>7} {'tuned':>7}")
    for r in rows:
        print(f"{r['seed']:>5} {r['test_accuracy']:>7.4f} {r['turnpike_layer']!s:>9} "
              + " ".join(f"{r[k]:>7.4f}" if r[k] is not None else f"{'-':>7}"
                         for k in ("pruned_test_accuracy", "finetuned_test_accuracy")))
    full = [r["test_accuracy"] for r in rows]
    print(f"{len(rows)} seeds: test accuracy {min(full):.4f}-{max(full):.4f} (mean {sum(full) / len(full):.4f})")
    for key, name in (("pruned_test_accuracy", "pruned at the turnpike"), ("finetuned_test_accuracy", "fine-tuned")):
        gaps = [100 * (r["test_accuracy"] - r[key]) for r in rows if r[key] is not None]
        if gaps:
            print(f"{name}: {min(gaps):.2f} to {max(gaps):.2f} points below the full network "
                  f"(within one point on {sum(g <= 1.0 for g in gaps)} of {len(gaps)})")
    write_json(out / "seeds.json", {"runs": rows})


def print_epoch(line: dict) -> None:
    """One line a training epoch: its mean objective, the output's test loss and accuracy, lr and time (beside
    the progress bar, which stays below it)."""
    from tqdm import tqdm

    test = (f", test loss {line['test_loss']:.4f}, test accuracy {line['test_accuracy']:.4f}"
            if "test_loss" in line else "")
    tqdm.write(f"epoch {line['epoch']}/{line['epochs']}: J {line['objective']:.4f}{test}, lr {line['lr']:.3g}, "
               f"{line['epoch_time_s']:.1f} s")


def report(m: dict, out) -> None:
    model = f"{m['model']} " if m.get("model") else ""
    print(f"\n{m['dataset']} {model}{m['variant']}: N = {m['depth']}, {m['parameters']:,} parameters, "
          f"{m['train_time_s']:.1f} s ({m['images_per_s']:.0f} images/s), run folder {out}")
    if m.get("channels") is not None:
        colour = "1 channel (grey)" if m["channels"] == 1 else f"{m['channels']} channels"
        print(f"images: {colour}, {'random flips' if m.get('flips') else 'no flips'} in training")
    print(f"test accuracy {m['test_accuracy']:.4f} (train {m['train_accuracy']:.4f}); exit test accuracy "
          f"k=0: {m['exit_test_accuracy'][0]:.3f}, k=N: {m['exit_test_accuracy'][-1]:.3f}")
    if m.get("weights"):
        w = m["weights"]
        kept = "; ".join(f"{name} ({why})" for name, why in list(w["kept"].items())[:4]) + \
            (f"; {len(w['kept']) - 4} more" if len(w["kept"]) > 4 else "")
        print(f"started from {w['source']}: {w['loaded']} tensors loaded" + (f", kept as initialised: {kept}"
                                                                             if kept else ""))
    print(f"turnpike layer {m['turnpike_layer']} (ε = {m['eps']:.4f} on the train exit-loss gap)")
    if m["pruned"]:
        p = m["pruned"]
        print(f"pruned SubResNet-{p['depth']}: test accuracy {p['test_accuracy']:.4f}, {p['parameters']:,} parameters")
        if "finetuned" in p:
            f = p["finetuned"]
            epochs = f"{f['epochs']} epoch" + ("s" if f["epochs"] != 1 else "")
            print(f"  after {epochs} of fine-tuning (lr {f['lr']:g}): test accuracy {f['test_accuracy']:.4f}")
    if m["status"] == "time_limit" and "finetuned" in (m["pruned"] or {}):
        print(m["message"], file=sys.stderr)
    elif m["status"] == "time_limit":
        print(f"stopped at the time limit after {m['epochs_done']} of {m['epochs']} epochs; the same command "
              f"with --resume continues", file=sys.stderr)
    elif m["status"] == "interrupted":
        print(f"{m['message']}\nresume with: {resume_command()}", file=sys.stderr)
    elif m["status"] not in ("converged", "max_steps"):
        print(f"warning: {m['message']}", file=sys.stderr)
