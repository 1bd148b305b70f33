"""The adapter on torchvision's own ResNets (issue 22's GPU check): recognised, the same parameters and state_dict
names as turnpike's built-in layouts (so ``--weights`` takes torchvision's files), the output exit equal to the
module's own output, and the network pruned at M equal to exit M.

    PYTHONPATH=. python benchmarks/torchvision_check.py --device cuda [--models resnet18,resnet50] [--out FILE]

torchvision cannot be imported beside this machine's CPU torch; the GPU image has it. No weights are downloaded
(``weights=None``): the check is about structure and arithmetic, which the initial weights exercise as well as
trained ones (the BatchNorms are given random statistics first, so that eval mode is not the identity).
Each model: parameter count (against torchvision's published one), state_dict names and shapes against
``turnpike.models``, ``turnpike.residual_network(model, exits="ws")`` with its block check, then on a batch of
224x224 images in float32 with TF32 off: max |exit N − model(x)| and max |subresnet(M)(x) − exit M| for
M = N // 2, relative to the logits' scale. Prints one line per model and writes the rows as JSON (``--out``).
"""
from __future__ import annotations

import argparse
import json
import time

import torch

import turnpike as tp

#: torchvision's published parameter counts (1,000 classes)
PUBLISHED = {"resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032, "resnet101": 44_549_160,
             "resnet152": 60_192_808, "wide_resnet50_2": 68_883_240, "resnext50_32x4d": 25_028_904}


def _randomise_statistics(model: torch.nn.Module, generator: torch.Generator) -> None:
    """Random running statistics and affine parameters for every BatchNorm (fresh ones are the identity)."""
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            channels = module.num_features
            module.running_mean.copy_(0.1 * torch.randn(channels, generator=generator))
            module.running_var.copy_(0.5 + torch.rand(channels, generator=generator))
            module.weight.data.copy_(0.5 + 0.5 * torch.rand(channels, generator=generator))
            module.bias.data.copy_(0.1 * torch.randn(channels, generator=generator))


@torch.no_grad()
def check(name: str, models, device: torch.device, batch: int) -> dict:
    """One model's row (see the module docstring); ``models`` is ``torchvision.models``."""
    generator = torch.Generator().manual_seed(0)
    model = getattr(models, name)(weights=None)
    _randomise_statistics(model, generator)
    ours = getattr(tp.models, name)(num_classes=1000, in_channels=3)
    theirs_shapes = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    our_shapes = {key: tuple(value.shape) for key, value in ours.state_dict().items()}
    row = {"model": name, "parameters": sum(p.numel() for p in model.parameters()),
           "published": PUBLISHED.get(name), "same_state_dict": theirs_shapes == our_shapes}
    started = time.perf_counter()
    network = tp.residual_network(model.to(device), exits="ws").eval()
    row["adapter_s"] = time.perf_counter() - started
    images = torch.randn(batch, 3, 224, 224, generator=generator).to(device)
    exits = network.exit_logits(images)                                     # (N+1, B, 1000)
    scale = float(exits[-1].abs().max())
    row["depth"] = network.depth
    row["output_vs_module"] = float((exits[-1] - model(images)).abs().max()) / scale
    middle = network.depth // 2
    pruned = network.subresnet(middle).eval()
    row["pruned_at"] = middle
    row["pruned_vs_exit"] = float((pruned(images) - exits[middle]).abs().max()) / float(exits[middle].abs().max())
    row["pruned_parameters"] = pruned.parameter_count()
    row["ok"] = (row["parameters"] == row["published"] and row["same_state_dict"]
                 and row["output_vs_module"] < 1e-4 and row["pruned_vs_exit"] < 1e-4)
    return row


def main(argv=None, models=None) -> list:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--models", default="resnet18,resnet50,wide_resnet50_2,resnext50_32x4d")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--out", default=None, help="JSON file for the rows")
    args = parser.parse_args(argv)
    if models is None:
        import torchvision

        models = torchvision.models
        print(f"torchvision {torchvision.__version__}, torch {torch.__version__}, device {args.device}")
    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = False        # float32 arithmetic on both sides of each comparison
    torch.backends.cudnn.allow_tf32 = False
    rows = []
    for name in args.models.split(","):
        row = check(name, models, device, args.batch)
        rows.append(row)
        print(f"{name}: {row['parameters']:,} parameters (published {row['published']:,}), state_dict "
              f"{'the same as' if row['same_state_dict'] else 'DIFFERENT from'} turnpike.models.{name}, N = "
              f"{row['depth']}, |exit N - model| {row['output_vs_module']:.1e}, pruned at {row['pruned_at']} "
              f"({row['pruned_parameters']:,} parameters) |output - exit| {row['pruned_vs_exit']:.1e}: "
              f"{'ok' if row['ok'] else 'FAILED'}")
    if args.out:
        with open(args.out, "w") as stream:
            json.dump(rows, stream, indent=1)
    return rows


if __name__ == "__main__":
    main()
