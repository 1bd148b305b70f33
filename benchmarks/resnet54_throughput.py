"""Training throughput of ResNet-54 with stage costs: images/s of standard, WS and full steps.

    .venv/bin/python benchmarks/resnet54_throughput.py                       # tiny CPU configuration
    PYTHONPATH=. python benchmarks/resnet54_throughput.py --device cuda --blocks 18 --width 0 \\
        --batch 128,256,512 --amp [--compile max-autotune-no-cudagraphs] [--no-channels-last]

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
standard's (per round and median), and the best batch size.
"""
import argparse
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

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
VARIANTS = ("plain", "standard", "ws", "full")
WEIGHT_DECAY = 1e-4                                      # λ of λ/2‖w‖²: InputPenalty(λ/2)


def synthetic_data(batch: int):
    """CIFAR-shaped uint8 images and labels, 4 batches: (4B, 3, 32, 32), (4B,)."""
    torch.manual_seed(0)
    count = batch * 4
    return torch.randint(0, 256, (count, 3, 32, 32), dtype=torch.uint8), torch.randint(0, 10, (count,))


class PlainBlock(nn.Module):
    """x + F(x), F = BN-ReLU-conv3x3-BN-ReLU-conv3x3; a strided 1x1 conv skip where the width changes."""

    def __init__(self, c_in, c_out, stride):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(c_in), nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn2, self.conv2 = nn.BatchNorm2d(c_out), nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.skip = (nn.Conv2d(c_in, c_out, 1, stride, bias=False) if c_in != c_out
                     else nn.Identity() if stride == 1 else nn.AvgPool2d(1, stride))

    def forward(self, x):
        y = self.conv1(F.relu(self.bn1(x)))
        return self.skip(x) + self.conv2(F.relu(self.bn2(y)))


class PlainPreActResNet(nn.Module):
    """The same network written as a user would: stem, 3 stages of blocks, BN-ReLU-pool-linear head."""

    def __init__(self, widths, blocks):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]),
                                  nn.ReLU(inplace=True))
        layers, c_in = [], widths[0]
        for stage, width in enumerate(widths):
            for i in range(blocks):
                layers.append(PlainBlock(c_in, width, 2 if stage > 0 and i == 0 else 1))
                c_in = width
        self.blocks = nn.Sequential(*layers)
        self.bn, self.fc = nn.BatchNorm2d(c_in), nn.Linear(c_in, 10)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        x = F.relu(self.bn(self.blocks(self.stem(x))))
        return self.fc(x.mean(dim=(2, 3)))


class PlainLoop:
    """The baseline step: gather, augment, normalise, forward, cross-entropy, backward, fused SGD."""

    def __init__(self, batch: int):
        widths = (args.width,) * 3 if args.width else (16, 32, 64)
        torch.manual_seed(0)
        memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
        self.module = PlainPreActResNet(widths, args.blocks).to(device, memory_format=memory_format)
        self.memory_format = memory_format
        images, labels = synthetic_data(batch)
        self.images, self.labels = images.to(device), labels.to(device)
        self.mean = torch.full((1, 3, 1, 1), 0.5, device=device)
        self.std = torch.full((1, 3, 1, 1), 0.25, device=device)
        self.batch = batch
        self.order = torch.randperm(len(labels), device=device)
        fused = {"fused": True} if device.type == "cuda" else {"foreach": True}
        self.optimiser = torch.optim.SGD(self.module.parameters(), lr=0.01, momentum=0.9,
                                         weight_decay=WEIGHT_DECAY, **fused)
        self.forward = (self.module if args.compile is None else torch.compile(self.module, mode=args.compile))
        self.generator = torch.Generator(device=device).manual_seed(0)

    def evaluate(self, phase, step):
        start = (step % 4) * self.batch
        index = self.order[start:start + self.batch]
        images = tp.data.augment(self.images[index], generator=self.generator)
        images = images.float().div_(255).sub_(self.mean).div_(self.std).contiguous(memory_format=self.memory_format)
        self.optimiser.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.amp):
            logits = self.forward(images)
        loss = F.cross_entropy(logits.float(), self.labels[index])
        loss.backward()
        return loss.detach()

    def update(self, step):
        self.optimiser.step()


def backend_for(variant: str, batch: int):
    if variant == "plain":
        return PlainLoop(batch)
    torch.manual_seed(0)
    common = dict(blocks_per_stage=args.blocks, in_channels=3, num_classes=10, exits=variant)
    net = (tp.PreActResNet.homogeneous(width=args.width, **common) if args.width
           else tp.PreActResNet.standard(**common))
    images, labels = synthetic_data(batch)
    labels = labels.numpy()
    loss = tp.CrossEntropy(num_classes=10)
    penalty = tp.InputPenalty(WEIGHT_DECAY / 2)
    stage = penalty if variant == "standard" else 0.02 * loss + penalty
    ocp = tp.OCP(net, images, labels, stage_cost=stage, terminal_cost=loss)
    options = {"normalise": ((0.5,) * 3, (0.25,) * 3), "amp": args.amp, "channels_last": args.channels_last,
               "compile": args.compile, "sync_every": 10 ** 9,
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
