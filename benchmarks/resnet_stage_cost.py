"""Step time of stage-cost training over standard training of the pre-activation ResNet.

    .venv/bin/python benchmarks/resnet_stage_cost.py                    # small CPU configuration
    .venv/bin/python benchmarks/resnet_stage_cost.py --device cuda --blocks 18 --width 16 --batch 128

One training step is what ``solve_ocp`` does per batch through the module backend: forward
(the output only for standard training; all N+1 exits, batched per stage, with the stage
cost), the objective (3), backward and an SGD step. The three variants (standard, WS,
full) are timed in alternating rounds in one run, and the script prints the stage-cost /
standard ratio per round and its median (targets: 1.25 on a CPU, 1.15 on a GPU).
"""
import argparse
import statistics
import time

import torch

import turnpike as tp
from turnpike.backends import make_backend

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--device", default="cpu")
parser.add_argument("--blocks", type=int, default=6, help="blocks per stage (18: ResNet-54)")
parser.add_argument("--width", type=int, default=16, help="homogeneous width; 0 for the standard 16/32/64")
parser.add_argument("--batch", type=int, default=64)
parser.add_argument("--steps", type=int, default=5, help="timed steps per round")
parser.add_argument("--rounds", type=int, default=3)
parser.add_argument("--amp", action="store_true", help="bf16 autocast")
args = parser.parse_args()
device = torch.device(args.device)


def backend_for(variant: str):
    torch.manual_seed(0)
    common = dict(blocks_per_stage=args.blocks, in_channels=3, num_classes=10, exits=variant)
    net = (tp.PreActResNet.homogeneous(width=args.width, **common) if args.width
           else tp.PreActResNet.standard(**common))
    images = torch.randint(0, 256, (args.batch * 2, 3, 32, 32), dtype=torch.uint8)   # synthetic CIFAR-shaped
    labels = torch.randint(0, 10, (args.batch * 2,)).numpy()
    loss = tp.CrossEntropy(num_classes=10)
    stage = tp.InputPenalty(5e-5) if variant == "standard" else 0.02 * loss + tp.InputPenalty(5e-5)
    ocp = tp.OCP(net, images, labels, stage_cost=stage, terminal_cost=loss)
    backend = make_backend(ocp, seed=0, batch_size=args.batch, engine="auto", dtype="float32", device=device,
                           init_scale=0.1, initial_controls=None, test_data=None,
                           options={"normalise": ((0.5,) * 3, (0.25,) * 3), "amp": args.amp})
    backend.begin_phase(0, backend.methods["sgd"], 10_000, {**backend.methods["sgd"].defaults, "lr": 0.01})
    return backend


def step_time(backend, steps: int) -> float:
    def one(step):
        backend.evaluate(0, step)
        backend.update(step)
    one(0)                                       # warm-up (allocations, cuDNN choices)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for step in range(1, steps + 1):
        one(step)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


backends = {variant: backend_for(variant) for variant in ("standard", "ws", "full")}
print(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}), "
      f"threads {torch.get_num_threads()}, N = {backends['ws'].module.depth}, batch {args.batch}, "
      f"width {args.width or '16/32/64'}, amp {args.amp}")
ratios = {"ws": [], "full": []}
for round_ in range(args.rounds):
    times = {variant: step_time(backend, args.steps) for variant, backend in backends.items()}
    for variant in ratios:
        ratios[variant].append(times[variant] / times["standard"])
    print(f"round {round_}: " + ", ".join(f"{v} {t * 1e3:.1f} ms ({args.batch / t:.0f} images/s)"
                                         for v, t in times.items())
          + f"; ratio ws {ratios['ws'][-1]:.3f}, full {ratios['full'][-1]:.3f}")
print(f"median stage-cost / standard step time: ws {statistics.median(ratios['ws']):.3f}, "
      f"full {statistics.median(ratios['full']):.3f}")
