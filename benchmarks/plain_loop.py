"""The baseline the toolkit is measured against: a plain hand-written PyTorch loop.

Architecture (26) of the 2024 paper on the two spirals (N = 30, h = 8, tanh then
identity), soft cross-entropy stage cost on every layer, r‖u‖² input penalty,
terminal weight γ = 3, Adam lr 0.01 on the full batch, weights initialised at scale
0.1 — the loop a researcher would write from the paper, with autograd.
"""
from __future__ import annotations

import math
import time

import torch


class PlainResNet(torch.nn.Module):
    def __init__(self, depth=30, state_dim=2, hidden_dim=8, scale=0.1):
        super().__init__()
        self.inner = torch.nn.ModuleList(torch.nn.Linear(state_dim, hidden_dim) for _ in range(depth))
        self.outer = torch.nn.ModuleList(torch.nn.Linear(hidden_dim, state_dim) for _ in range(depth))
        with torch.no_grad():
            for layer in [*self.inner, *self.outer]:
                layer.weight.normal_(0.0, scale / math.sqrt(layer.in_features))
                layer.bias.zero_()

    def forward(self, x):
        states = [x]
        for inner, outer in zip(self.inner, self.outer):
            x = x + outer(torch.tanh(inner(x)))
            states.append(x)
        return states


def soft_cross_entropy(x, labels, p_d=0.95, num_classes=2):
    off = (1 - p_d) / (num_classes - 1)
    targets = torch.full((x.shape[0], num_classes), off, dtype=x.dtype)
    targets[torch.arange(x.shape[0]), labels] = p_d
    entropy = -(targets * targets.log()).sum(1)
    return (-(targets * torch.log_softmax(x, 1)).sum(1) - entropy).mean()


def train_plain(inputs, labels, *, steps=3000, lr=0.01, r=0.005, gamma=3.0, seed=0, dtype=torch.float64):
    """Returns (model, seconds, final train accuracy)."""
    torch.manual_seed(seed)
    x = torch.as_tensor(inputs, dtype=dtype)
    y = torch.as_tensor(labels)
    model = PlainResNet().to(dtype)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    start = time.perf_counter()
    for _ in range(steps):
        optimiser.zero_grad()
        states = model(x)
        loss = sum(soft_cross_entropy(s, y) for s in states[:-1]) + gamma * soft_cross_entropy(states[-1], y)
        loss = loss + r * sum((p * p).sum() for p in model.parameters())
        loss.backward()
        optimiser.step()
    seconds = time.perf_counter() - start
    with torch.no_grad():
        accuracy = (model(x)[-1].argmax(1) == y).double().mean().item()
    return model, seconds, accuracy
