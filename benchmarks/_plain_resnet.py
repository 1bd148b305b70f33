"""The baseline of the ResNet benchmarks: the pre-activation ResNet and training step a competent PyTorch user
writes without turnpike, eager or captured whole as one CUDA graph (torch's own recipe).

Imported by ``resnet54_throughput.py`` and ``gpu_limit.py`` (which put this folder on ``sys.path``).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

import turnpike as tp

WEIGHT_DECAY = 1e-4                                      # λ of λ/2‖w‖²: InputPenalty(λ/2)
MEAN, STD = 0.5, 0.25                                    # per-channel statistics of the synthetic images


def synthetic_data(batch: int, batches: int = 4, channels: int = 3, size: int = 32):
    """CIFAR-shaped uint8 images and labels of ``batches`` batches: (batches·B, 3, 32, 32), (batches·B,)."""
    torch.manual_seed(0)
    count = batch * batches
    return (torch.randint(0, 256, (count, channels, size, size), dtype=torch.uint8),
            torch.randint(0, 10, (count,)))


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


class PlainStep:
    """The baseline step: gather, augment, normalise, forward, cross-entropy, backward, fused SGD.

    ``graphed`` (CUDA): torch's whole-network recipe, three warm-up steps on a side stream, then forward,
    backward and optimiser step captured as one graph and replayed on static inputs; ``evaluate`` then
    takes the whole step and ``update`` nothing. ``evaluate``/``update`` take the module backend's
    arguments, so one timer serves both.
    """

    def __init__(self, widths, blocks: int, batch: int, device, *, amp: bool, channels_last: bool,
                 graphed: bool = False, compile_mode=None):
        torch.manual_seed(0)
        self.device, self.batch, self.amp = device, batch, amp
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.module = PlainPreActResNet(widths, blocks).to(device, memory_format=self.memory_format)
        images, labels = synthetic_data(batch)
        self.images, self.labels = images.to(device), labels.to(device)
        self.mean = torch.full((1, 3, 1, 1), MEAN, device=device)
        self.std = torch.full((1, 3, 1, 1), STD, device=device)
        self.order = torch.randperm(len(labels), device=device)
        fused = {"fused": True} if device.type == "cuda" else {"foreach": True}
        self.optimiser = torch.optim.SGD(self.module.parameters(), lr=0.01, momentum=0.9,
                                         weight_decay=WEIGHT_DECAY, **fused)
        self.forward = self.module if compile_mode is None else torch.compile(self.module, mode=compile_mode)
        self.generator = torch.Generator(device=device).manual_seed(0)
        self.graphed = graphed and device.type == "cuda"
        self.graph, self.warm, self.static = None, 0, None

    def _batch(self, step):
        start = (step % 4) * self.batch
        index = self.order[start:start + self.batch]
        images = tp.data.augment(self.images[index], generator=self.generator)
        images = images.float().div_(255).sub_(self.mean).div_(self.std).contiguous(memory_format=self.memory_format)
        return images, self.labels[index]

    def _loss(self, images, labels):
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp, cache_enabled=not self.graphed):
            logits = self.forward(images)
        loss = F.cross_entropy(logits.float(), labels)
        loss.backward()
        return loss.detach()

    def evaluate(self, phase, step):
        images, labels = self._batch(step)
        if not self.graphed:
            self.optimiser.zero_grad(set_to_none=True)
            return self._loss(images, labels)
        if self.static is None:
            self.static = (images.clone(), labels.clone())
        self.static[0].copy_(images)
        self.static[1].copy_(labels)
        if self.graph is None and self.warm >= 3:
            self.optimiser.zero_grad(set_to_none=True)       # gradients allocated inside the graph's pool
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.loss = self._loss(*self.static)
                self.optimiser.step()
        if self.graph is not None:
            self.graph.replay()
            return self.loss.clone()
        self.warm += 1
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            self.optimiser.zero_grad(set_to_none=True)
            loss = self._loss(*self.static)
            self.optimiser.step()
        torch.cuda.current_stream().wait_stream(stream)
        return loss

    def update(self, step):
        if not self.graphed:
            self.optimiser.step()
