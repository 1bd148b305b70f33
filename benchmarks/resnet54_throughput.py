"""Training throughput of ResNet-54 with stage costs: images/s of standard, WS and full steps.

    .venv/bin/python benchmarks/resnet54_throughput.py                       # tiny CPU configuration
    PYTHONPATH=. python benchmarks/resnet54_throughput.py --device cuda --blocks 18 --width 0 \\
        --batch 128,256,512 --amp [--compile max-autotune-no-cudagraphs] [--no-channels-last]

One training step is what ``solve_ocp`` does per batch through the module backend: the batch
gathered from the uint8 data set resident on the device, cropped and flipped there, normalised;
the forward pass (the output only for standard training; all N+1 exits, batched per stage, for
WS and full); objective (3); backward; the SGD step. No step reads a value on the host (J is
read once per round, as ``sync_every`` does in training on a GPU). For each batch size the three
variants are timed in alternating rounds in one run; the script prints the device, images/s per
variant and round, the stage-cost / standard step-time ratio per round and its median, and the
best batch size.
"""
import argparse
import statistics
import time

import torch

import turnpike as tp
from turnpike.backends import make_backend

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
args = parser.parse_args()
device = torch.device(args.device)
batches = [int(b) for b in args.batch.split(",")]
VARIANTS = ("standard", "ws", "full")


def backend_for(variant: str, batch: int):
    torch.manual_seed(0)
    common = dict(blocks_per_stage=args.blocks, in_channels=3, num_classes=10, exits=variant)
    net = (tp.PreActResNet.homogeneous(width=args.width, **common) if args.width
           else tp.PreActResNet.standard(**common))
    count = batch * 4                                    # synthetic CIFAR-shaped uint8 data, 4 batches
    images = torch.randint(0, 256, (count, 3, 32, 32), dtype=torch.uint8)
    labels = torch.randint(0, 10, (count,)).numpy()
    loss = tp.CrossEntropy(num_classes=10)
    stage = tp.InputPenalty(5e-5) if variant == "standard" else 0.02 * loss + tp.InputPenalty(5e-5)
    ocp = tp.OCP(net, images, labels, stage_cost=stage, terminal_cost=loss)
    options = {"normalise": ((0.5,) * 3, (0.25,) * 3), "amp": args.amp, "channels_last": args.channels_last,
               "compile": args.compile, "sync_every": 10 ** 9,
               "augment": lambda x, generator: tp.data.augment(x, generator=generator)}
    backend = make_backend(ocp, seed=0, batch_size=batch, engine="auto", dtype="float32", device=device,
                           init_scale=0.1, initial_controls=None, test_data=None, options=options)
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


name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
print(f"device {device} ({name}), torch {torch.__version__}, threads {torch.get_num_threads()}, "
      f"width {args.width or '16/32/64'}, {args.blocks} blocks per stage, amp {args.amp}, "
      f"channels_last {args.channels_last}, compile {args.compile}")
best = {}
for batch in batches:
    backends = {variant: backend_for(variant, batch) for variant in VARIANTS}
    for backend in backends.values():                  # warm-up: allocations, cuDNN choices, compilation
        step_time(backend, 2, 0)
    times = {variant: [] for variant in VARIANTS}
    for round_ in range(args.rounds):
        for variant, backend in backends.items():
            times[variant].append(step_time(backend, args.steps, 2 + round_ * args.steps))
        print(f"batch {batch} round {round_}: " + ", ".join(
            f"{v} {times[v][-1] * 1e3:.1f} ms ({batch / times[v][-1]:,.0f} images/s)" for v in VARIANTS)
            + "; ratio " + ", ".join(f"{v} {times[v][-1] / times['standard'][-1]:.3f}" for v in VARIANTS[1:]))
    medians = {v: statistics.median(times[v]) for v in VARIANTS}
    print(f"batch {batch} median: N = {backends['ws'].module.depth}, " + ", ".join(
        f"{v} {batch / medians[v]:,.0f} images/s" for v in VARIANTS) + "; stage-cost / standard step time "
        + ", ".join(f"{v} {statistics.median(a / b for a, b in zip(times[v], times['standard'])):.3f}"
                    for v in VARIANTS[1:]))
    for v in VARIANTS:
        if batch / medians[v] > best.get(v, (0, 0))[1]:
            best[v] = (batch, batch / medians[v])
print("best batch size: " + ", ".join(f"{v} {b} ({rate:,.0f} images/s)" for v, (b, rate) in best.items()))
