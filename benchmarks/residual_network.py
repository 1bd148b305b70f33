"""Bringing your own residual network (issue 22): turnpike's training step on torchvision's ResNet-18 layout.

    .venv/bin/python benchmarks/residual_network.py [--base 16 --batch 64 --steps 8 --rounds 8 --threads 2]
    PYTHONPATH=. python benchmarks/residual_network.py --device cuda --base 64 --batch 256 --amp

The network is ``turnpike.models.resnet18(num_classes=10, in_channels=3, base=B, small_stem=True)`` (torchvision's
module layout, BasicBlocks (2, 2, 2, 2), 3x3 stride-1 stem without max-pool for 32x32 images) on synthetic
32x32 float32 images (N(0, 1), "normalised already"; 4 batches, random labels), float32 or bf16 autocast
(``--amp``), channels-last (the default, as ``turnpike resnet54`` trains) or NCHW. The default width ``base``
= 16 (widths 16/32/64/128, 0.70 M parameters) at batch 64 makes one plain or standard step take about 80-130 ms
on 2 CPU cores (threads 2; ws and full about twice that), the whole run about a minute; torchvision's width is
``--base 64`` (11.2 M parameters, 16x the multiply-adds: about 0.6 s a step at batch 32).

Four contenders, each its own copy of the network from the same seed, on the same data on the same device,
SGD lr 0.01, momentum 0.9, weight decay λ = 1e-4 in the optimiser (foreach on a CPU, fused on a GPU):

- ``plain``: the loop a competent PyTorch user writes for the same module: the batch gathered by index from
  a per-epoch permutation, ``model(images)``, ``F.cross_entropy``, ``backward``, ``SGD(weight_decay=λ)``,
  ``loss.item()``.
- ``standard``: ``turnpike.residual_network(model, exits="standard")`` through ``turnpike.solve_ocp(method=
  "sgd")`` with stage cost ``InputPenalty(λ/2)`` only and terminal ``CrossEntropy`` (``resnet54``'s variant
  "standard": only the output is computed; the penalty is the optimiser's weight decay).
- ``ws`` / ``full``: exits "ws" / "full" with stage cost ``γ·CrossEntropy + InputPenalty(λ/2)``, γ = 0.02:
  all N+1 = 9 skip-path exits computed batched per stage every step (objective (3) of the 2025 paper).

Targets of issue 22 (CPU): ws (and full) step time / standard step time ≤ 1.20; standard / plain ≤ 1.05.

How a step is timed, and why it is fair. ``solve_ocp`` calls ``callback(step, J, module)`` once per step,
after that step's forward and backward pass and before its optimiser update (``sync_every=1``: J is read on
the host every step, on a GPU too). The callback records ``time.perf_counter()``; the difference of two
consecutive records is one whole step cycle: the update of step k, then everything ``solve_ocp`` does for
step k+1 (batch, forward, backward, J, its divergence guard's snapshot, its bookkeeping). The plain loop
records the same instant (after ``loss.item()``, before ``optimiser.step()``). So neither the set-up of a
solve (backend, optimiser) nor its end (``ModuleSolution.evaluate`` over the training data, the exits'
recalibration) is inside any step time. Each round runs every contender once, ``--warmup`` + ``--steps`` + 1
steps (a fresh ``solve_ocp`` per round and contender, the same module trained on), in the order plain,
standard, ws, full; the first ``--warmup`` step times of a round (the optimiser's momentum buffers created,
first-touch allocations) are dropped. Everything runs in one process, so the machine's state is shared. The
script prints each contender's min / median step time over all kept steps, images/s at the median, the ratio
of medians and the ratio per round (median step of the round over the baseline's in the same round). Many
short rounds: on the shared 2-core machine the same step's time drifts by up to 1.5x over seconds, and a
contender timed in a slow stretch would otherwise carry it alone.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

import turnpike as tp
from turnpike.models import resnet18

CONTENDERS = ("plain", "standard", "ws", "full")
TARGETS = {"ws": ("standard", 1.20), "full": ("standard", 1.20), "standard": ("plain", 1.05)}
DATA_BATCHES = 4                      # the data set holds this many batches (the permutation is per epoch)


def parse(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=int, default=16, help="width of the stem and stage 1 (torchvision: 64)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=8, help="timed steps per round and contender")
    parser.add_argument("--warmup", type=int, default=2, help="step times dropped at the start of every round")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2, help="torch's intra-op threads (both sides)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", action="store_true", help="bf16 autocast of the forward pass (both sides)")
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True,
                        help="module and batches channels-last (both sides)")
    parser.add_argument("--in-channels", type=int, default=3, choices=(1, 3))
    parser.add_argument("--gamma", type=float, default=0.02, help="γ, the stage loss weight of ws and full")
    parser.add_argument("--weight-decay", type=float, default=1e-4, help="λ of λ/2‖w‖²")
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--contenders", default=",".join(CONTENDERS), help="comma-separated subset, in order")
    args = parser.parse_args(argv)
    args.contenders = tuple(c for c in args.contenders.split(",") if c)
    unknown = set(args.contenders) - set(CONTENDERS)
    if unknown or not args.contenders:
        parser.error(f"--contenders: expected names from {', '.join(CONTENDERS)}, got {args.contenders}")
    return args


def synthetic_data(args, device):
    """(DATA_BATCHES·batch, C, 32, 32) float32 images, normalised already, and their labels, on ``device``."""
    generator = torch.Generator().manual_seed(0)
    count = DATA_BATCHES * args.batch
    images = torch.randn(count, args.in_channels, 32, 32, generator=generator)
    labels = torch.randint(0, 10, (count,), generator=generator)
    return images.to(device), labels.to(device)


def network(args, device):
    with torch.random.fork_rng(devices=[]):       # every contender starts from the same weights
        torch.manual_seed(0)
        model = resnet18(num_classes=10, in_channels=args.in_channels, base=args.base, small_stem=True)
    return model.to(device)


class Plain:
    """The baseline: a hand-written loop over the same module (see the module docstring)."""

    def __init__(self, args, device, images, labels):
        self.args, self.device, self.images, self.labels = args, device, images, labels
        self.memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
        self.model = network(args, device).to(memory_format=self.memory_format)
        fused = {"fused": True} if device.type == "cuda" else {"foreach": True}
        self.optimiser = torch.optim.SGD(self.model.parameters(), lr=args.lr, momentum=0.9,
                                         weight_decay=args.weight_decay, **fused)
        self.generator = torch.Generator().manual_seed(0)
        self.parameters = sum(p.numel() for p in self.model.parameters())

    def round(self, steps: int) -> list:
        """perf_counter() after each of ``steps`` steps' backward pass (before its update)."""
        self.model.train()
        stamps, order = [], None
        for step in range(steps):
            position = step % DATA_BATCHES
            if position == 0:                        # a new epoch: a new permutation
                order = torch.randperm(len(self.labels), generator=self.generator).to(self.device)
                order = order.view(DATA_BATCHES, -1)
            index = order[position]
            images = self.images[index].contiguous(memory_format=self.memory_format)
            labels = self.labels[index]
            self.optimiser.zero_grad(set_to_none=True)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.args.amp):
                logits = self.model(images)
            loss = F.cross_entropy(logits.float(), labels)
            loss.backward()
            value = loss.item()
            assert value == value, "the plain loop diverged: lower --lr"
            stamps.append(time.perf_counter())
            self.optimiser.step()
        return stamps


class Turnpike:
    """``residual_network(model, exits=...)`` trained through ``solve_ocp`` (one solve per round)."""

    def __init__(self, variant: str, args, device, images, labels):
        self.args, self.device, self.variant = args, device, variant
        self.net = tp.residual_network(network(args, device), exits=variant)
        loss = tp.CrossEntropy(num_classes=10)
        penalty = tp.InputPenalty(args.weight_decay / 2)
        stage = penalty if variant == "standard" else args.gamma * loss + penalty
        self.ocp = tp.OCP(self.net, images, labels.cpu().numpy(), stage_cost=stage, terminal_cost=loss)
        self.parameters = self.net.parameter_count()

    def round(self, steps: int) -> list:
        stamps = []

        def record(step, value, module):
            stamps.append(time.perf_counter())

        solution = tp.solve_ocp(self.ocp, method="sgd", steps=steps, batch_size=self.args.batch,
                                options={"lr": self.args.lr, "momentum": 0.9}, threads=self.args.threads,
                                device=self.device, progress=False, callback=record, sync_every=1,
                                amp=self.args.amp, channels_last=self.args.channels_last)
        assert solution.status == "max_steps" and len(stamps) == steps, \
            f"{self.variant}: {solution.status} ({solution.message}): lower --lr"
        return stamps


def describe(device, args) -> str:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    widths = ", ".join(str(args.base * 2 ** q) for q in range(4))
    return (f"device {device} ({name}), torch {torch.__version__}, threads {torch.get_num_threads()}; "
            f"ResNet-18 layout, small stem, base {args.base} (widths {widths}), "
            f"{args.in_channels}x32x32, batch {args.batch}, amp {args.amp}, channels_last {args.channels_last}; "
            f"{args.rounds} rounds x {args.steps} steps (+{args.warmup} warm-up) per contender")


def main(argv=None) -> dict:
    """Run the benchmark and print its table; returns {"times": {contender: [seconds per kept step]},
    "per_round": {contender: [median of each round]}, "ratios": {"ws/standard": ..., ...}}."""
    args = parse(argv)
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return _run(args, torch.device(args.device))
    finally:
        torch.set_num_threads(threads)          # a caller's own setting (the smoke test runs in pytest's process)


def _run(args, device) -> dict:
    images, labels = synthetic_data(args, device)
    contenders = {name: (Plain(args, device, images, labels) if name == "plain"
                         else Turnpike(name, args, device, images, labels)) for name in args.contenders}
    print(describe(device, args))
    times = {name: [] for name in contenders}
    per_round = {name: [] for name in contenders}
    for round_ in range(args.rounds):
        for name, contender in contenders.items():
            stamps = contender.round(args.warmup + args.steps + 1)
            kept = [b - a for a, b in zip(stamps, stamps[1:])][args.warmup:]
            times[name] += kept
            per_round[name].append(statistics.median(kept))
        print(f"round {round_}: " + ", ".join(f"{name} {per_round[name][-1] * 1e3:.1f} ms" for name in contenders))

    print("\n| contender | exits | stage cost | parameters | min ms | median ms | images/s (median) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    stage_costs = {"plain": "(F.cross_entropy, weight decay)", "standard": "λ/2‖w‖²"}
    for name, contender in contenders.items():
        print(f"| {name} | {'-' if name == 'plain' else name} | {stage_costs.get(name, 'γ·CE + λ/2‖w‖²')} | "
              f"{contender.parameters:,} | {min(times[name]) * 1e3:.1f} | {statistics.median(times[name]) * 1e3:.1f} | "
              f"{args.batch / statistics.median(times[name]):,.0f} |")
    ratios = {}
    print()
    for name, (base, target) in TARGETS.items():
        if name not in contenders or base not in contenders:
            continue
        ratio = statistics.median(times[name]) / statistics.median(times[base])
        rounds = [a / b for a, b in zip(per_round[name], per_round[base])]
        ratios[f"{name}/{base}"] = ratio
        verdict = "met" if ratio <= target else "MISSED"
        print(f"{name} / {base}: {ratio:.3f} (ratio of medians; median of the per-round ratios "
              f"{statistics.median(rounds):.3f}: {', '.join(f'{r:.2f}' for r in rounds)}); target <= {target:.2f}: "
              f"{verdict}")
    return {"times": times, "per_round": per_round, "ratios": ratios}


if __name__ == "__main__":
    main()
