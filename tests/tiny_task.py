"""A tiny, easy task and a small SNN trained on it, shared by the attack and evaluation tests.

Two classes of 8x8 images: a bright horizontal bar (class 0) or a bright vertical bar
(class 1) at a random position, on a dim noisy background. Rate coded with T = 10 steps,
a 64-32-2 LIF network learns it in a couple of hundred SGD steps (about a second).
"""
from __future__ import annotations

import functools

import torch
from torch import nn

import snn_robust as sr

T = 10


def make_images(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` images ``[n, 1, 8, 8]`` in ``[0, 1]`` and their labels ``[n]``."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=gen)
    pos = torch.randint(1, 7, (n,), generator=gen)
    img = 0.1 * torch.rand(n, 8, 8, generator=gen)
    idx = torch.arange(8)
    rows = (idx[None, :, None] == pos[:, None, None]).expand(n, 8, 8)
    cols = (idx[None, None, :] == pos[:, None, None]).expand(n, 8, 8)
    bar = torch.where(y[:, None, None] == 0, rows, cols)
    img = torch.where(bar, torch.full_like(img, 0.9), img)
    return img.unsqueeze(1), y


def make_spikes(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Fixed spike trains of the task, time-major ``[T, n, 1, 8, 8]``, and labels."""
    x, y = make_images(n, seed)
    return sr.bernoulli_encode(x, T, torch.Generator().manual_seed(seed + 1)), y


@functools.lru_cache(maxsize=None)
def _trained_state(seed: int, steps: int, coding: str) -> dict:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    net = build(coding)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    for i in range(steps):
        x, y = make_images(64, seed=10_000 + i)
        inputs = x.unsqueeze(0).expand(T, *x.shape) if coding == "direct" else sr.bernoulli_encode(x, T, gen)
        rates = net(inputs)
        loss = nn.functional.cross_entropy(5 * rates, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def build(coding: str = "spike") -> sr.SpikingNetwork:
    layers = [nn.Flatten(), nn.Linear(64, 32), sr.LIF(), nn.Linear(32, 2), sr.LIF()]
    return sr.SpikingNetwork(layers, input_coding=coding)


def trained_net(seed: int = 0, steps: int = 200, coding: str = "spike") -> sr.SpikingNetwork:
    """A fresh copy of the trained network (training runs once per process and setting);
    ``coding="direct"`` trains a direct-coded network (the image as current at every step)."""
    net = build(coding)
    net.load_state_dict(_trained_state(seed, steps, coding))
    return net
