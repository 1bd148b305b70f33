"""Training throughput of ResNet-54 with stage costs: images/s of standard, WS and full steps.

    .venv/bin/python benchmarks/resnet54_throughput.py                       # tiny CPU configuration
    PYTHONPATH=. python benchmarks/resnet54_throughput.py --device cuda --blocks 18 --width 0 \\
        --batch 128,256,512 --amp [--compile max-autotune-no-cudagraphs] [--no-channels-last] [--cuda-graph]

One training step is what ``solve_ocp`` does per batch through the module backend: the batch
gathered from the uint8 data set resident on the device, cropped and flipped there, normalised;
the forward pass (the output only for standard training; all N+1 exits, batched per stage, for
WS and full); objective (3); backward; the SGD step. No step reads a value on the host (J is
read once per round, as ``sync_every`` does in training on a GPU).

The baseline, ``plain``, is the loop a competent PyTorch user writes for the same network
without turnpike: its own pre-activation ResNet module (the same layers and initialisation),
the same device-resident data, augmentation, normalisation, dtype, memory format and autocast,
``F.cross_entropy``, and fused SGD with momentum and weight decay. For each batch size the four
variants are timed in alternating rounds in one run; the script prints the device, images/s per
variant and round, each variant's step time over plain's and the stage-cost variants' over
standard's (per round and median), and the best batch size. With ``--cuda-graph`` every variant's step
is replayed from CUDA graphs: turnpike's ``cuda_graph=True``, and the plain loop captured whole (forward,
backward, optimiser step) by torch's recipe (on a CPU both run eagerly).
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

import turnpike as tp
from turnpike.backends import make_backend

sys.path.insert(0, str(Path(__file__).parent))
from _plain_resnet import MEAN, STD, WEIGHT_DECAY, PlainStep, synthetic_data  # noqa: E402

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--device", default="cpu")
parser.add_argument("--blocks", type=int, default=3, help="blocks per stage (18: ResNet-54)")
parser.add_argument("--width", type=int, default=16, help="homogeneous width; 0 for the standard 16/32/64")
parser.add_argument("--batch", default="64", help="batch sizes, comma-separated (e.g. 128,256,512)")
parser.add_argument("--steps", type=int, default=5, help="timed steps per round")
parser.add_argument("--rounds", type=int, default=3)
parser.add_argument("--amp", action="store_true", help="bf16 autocast")
parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True,
                    help="channels-last memory format, as turnpike resnet54 trains by default")
parser.add_argument("--compile", default=None, help="torch.compile mode of the forward pass (default: eager)")
parser.add_argument("--cuda-graph", action="store_true",
                    help="every variant's step as CUDA graphs (the plain loop by torch's whole-network recipe)")
args = parser.parse_args()
device = torch.device(args.device)
batches = [int(b) for b in args.batch.split(",")]
VARIANTS = ("plain", "standard", "ws", "full")
class PlainLoop(PlainStep):
    """The baseline step (``_plain_resnet.PlainStep``) with this run's options, eager."""

    def __init__(self, batch: int):
        super().__init__((args.width,) * 3 if args.width else (16, 32, 64), args.blocks, batch, device,
                         amp=args.amp, channels_last=args.channels_last, compile_mode=args.compile,
                         graphed=args.cuda_graph)


def backend_for(variant: str, batch: int):
    if variant == "plain":
        return PlainLoop(batch)
    torch.manual_seed(0)
    net = tp.preact_resnet(blocks_per_stage=args.blocks, widths=(args.width,) * 3 if args.width else (16, 32, 64),
                           in_channels=3, num_classes=10, exits=variant)
    images, labels = synthetic_data(batch)
    labels = labels.numpy()
    loss = tp.CrossEntropy(num_classes=10)
    penalty = tp.InputPenalty(WEIGHT_DECAY / 2)
    stage = penalty if variant == "standard" else 0.02 * loss + penalty
    ocp = tp.OCP(net, images, labels, stage_cost=stage, terminal_cost=loss)
    options = {"normalise": ((MEAN,) * 3, (STD,) * 3), "amp": args.amp, "channels_last": args.channels_last,
               "compile": args.compile, "sync_every": 10 ** 9, "cuda_graph": args.cuda_graph,
               "augment": lambda x, generator: tp.data.augment(x, generator=generator)}
    backend = make_backend(ocp, seed=0, batch_size=batch, device=device, settings=options)
    backend.begin_phase(0, backend.methods["sgd"], 10 ** 9, {**backend.methods["sgd"].defaults, "lr": 0.01})
    return backend


def synchronise():
    if device.type == "cuda":
        torch.cuda.synchronize()


def step_time(backend, steps: int, first: int) -> float:
    """Seconds per step over ``steps`` steps; J stays on the device until the round ends."""
    synchronise()
    start = time.perf_counter()
    values = []
    for step in range(first, first + steps):
        values.append(backend.evaluate(0, step))
        backend.update(step)
    synchronise()
    seconds = (time.perf_counter() - start) / steps
    assert torch.isfinite(torch.stack(values)).all(), "a step diverged: lower the learning rate"
    return seconds


def main():
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device {device} ({name}), torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"width {args.width or '16/32/64'}, {args.blocks} blocks per stage, amp {args.amp}, "
          f"channels_last {args.channels_last}, compile {args.compile}, cuda_graph {args.cuda_graph}")
    best = {}
    for batch in batches:
        backends = {variant: backend_for(variant, batch) for variant in VARIANTS}
        for backend in backends.values():       # warm-up: allocations, cuDNN choices, compilation, graph capture
            step_time(backend, 5 if args.cuda_graph else 2, 0)
        times = {variant: [] for variant in VARIANTS}
        for round_ in range(args.rounds):
            for variant, backend in backends.items():
                times[variant].append(step_time(backend, args.steps, 5 + round_ * args.steps))
            print(f"batch {batch} round {round_}: " + ", ".join(
                f"{v} {times[v][-1] * 1e3:.1f} ms ({batch / times[v][-1]:,.0f} images/s)" for v in VARIANTS)
                + "; over plain " + ", ".join(f"{v} {times[v][-1] / times['plain'][-1]:.3f}" for v in VARIANTS[1:]))
        medians = {v: statistics.median(times[v]) for v in VARIANTS}

        def ratio(v, base):
            return statistics.median(a / b for a, b in zip(times[v], times[base]))
        print(f"batch {batch} median: N = {backends['ws'].module.depth}, " + ", ".join(
            f"{v} {batch / medians[v]:,.0f} images/s" for v in VARIANTS)
            + "; step time over plain " + ", ".join(f"{v} {ratio(v, 'plain'):.3f}" for v in VARIANTS[1:])
            + "; stage-cost over standard " + ", ".join(f"{v} {ratio(v, 'standard'):.3f}" for v in VARIANTS[2:]))
        for v in VARIANTS:
            if batch / medians[v] > best.get(v, (0, 0))[1]:
                best[v] = (batch, batch / medians[v])
    print("best batch size: " + ", ".join(f"{v} {b} ({rate:,.0f} images/s)" for v, (b, rate) in best.items()))


if __name__ == "__main__":
    main()
