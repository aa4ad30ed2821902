"""Shared pieces of the core tests: random networks and the sampling soundness check."""
from __future__ import annotations

import torch
from torch import nn

import snn_robust as sr
from snn_robust.bounds.api import margin_spec


def scale_weights(net: nn.Module, factor: float) -> None:
    with torch.no_grad():
        for p in net.parameters():
            if p.dim() > 1:
                p.mul_(factor)


def neuron(draw_alpha: float, draw_th: float, reset: str, firing: str, decay_reset: bool, shape=None, gen=None) -> sr.LIF:
    """A LIF layer; with ``shape``, per-neuron alpha and threshold around the drawn values."""
    if shape is None:
        return sr.LIF(draw_alpha, draw_th, reset, firing, decay_reset=decay_reset)
    alpha = (draw_alpha * torch.rand(shape, generator=gen)).clamp(0, 1)
    th = draw_th * (0.5 + torch.rand(shape, generator=gen))
    return sr.LIF(alpha, th, reset, firing, decay_reset=decay_reset)


def sample_inside(lower: torch.Tensor, upper: torch.Tensor, n: int, gen: torch.Generator, binary: bool):
    """Concrete inputs inside ``[lower, upper]``: both corners, then random points."""
    yield lower
    yield upper
    for _ in range(n):
        if binary:
            yield torch.where(torch.rand(lower.shape, generator=gen).to(lower.device) < 0.5, lower, upper)
        else:
            w = torch.rand(lower.shape, generator=gen).to(lower.device)  # a CPU generator drives GPU boxes too
            yield lower + w * (upper - lower)


def assert_sound(forward, net: sr.SpikingNetwork, lower, upper, labels, samples: int, gen, binary=True, tol=1e-5,
                 methods=sr.METHODS):
    """Every method's margin and rate bounds hold for ``forward`` (a model's own forward
    pass returning rates ``[B, C]``: our simulation, or snnTorch's / SpikingJelly's) on
    inputs sampled inside the box (both corners included). Returns the margin bounds."""
    with torch.no_grad():
        margins = {m: sr.compute_bounds(net, lower, upper, labels, method=m) for m in methods}
        rates = {m: sr.compute_bounds(net, lower, upper, method=m) for m in methods}
        C = rates["ibp"][0].shape[1]
        spec = margin_spec(labels, C)
        for x in sample_inside(lower, upper, samples, gen, binary):
            r = forward(x)
            true_margin = (spec * r.unsqueeze(1)).sum(-1)
            for m, lb in margins.items():
                gap = (lb - true_margin).max().item()
                assert gap <= tol, f"{m}: margin bound exceeds a true margin by {gap}"
            for m, (lb, ub) in rates.items():
                assert (r >= lb - tol).all() and (r <= ub + tol).all(), f"{m}: rate outside its bounds"
    return margins
