"""Pieces shared by the adapter tests: input boxes and the soundness check of every
bound method against a framework's own forward pass."""
from __future__ import annotations

import torch
from helpers import sample_inside

import snn_robust as sr
from snn_robust.bounds.api import margin_spec

def input_box(x: torch.Tensor, unstable: int, gen: torch.Generator):
    """Binary bounds around the spike input ``x`` ``[T, B, ...]``: ``unstable`` random
    elements per step and sample may be 0 or 1, the rest keep their value."""
    T, B = x.shape[:2]
    flat = x.reshape(T, B, -1)
    picks = torch.rand(flat.shape, generator=gen).argsort(-1)[..., :unstable]
    mask = torch.zeros_like(flat, dtype=torch.bool).scatter_(-1, picks, True)
    return flat.masked_fill(mask, 0.0).reshape(x.shape), flat.masked_fill(mask, 1.0).reshape(x.shape)


def check_sound(forward, net, lower, upper, labels, samples: int, gen, methods=sr.METHODS, binary=True, tol=1e-5):
    """The margin bounds and the rate bounds of each method hold for ``forward`` (the
    framework model's own forward pass, returning rates ``[B, C]``) on inputs sampled
    inside the box (both corners included). Returns the margin bounds per method."""
    with torch.no_grad():
        margins = {m: sr.compute_bounds(net, lower, upper, labels, method=m) for m in methods}
        rates = {m: sr.compute_bounds(net, lower, upper, method=m) for m in methods}
        spec = margin_spec(labels, next(iter(rates.values()))[0].shape[1])
        for x in sample_inside(lower, upper, samples, gen, binary):
            r = forward(x)
            true_margin = (spec * r.unsqueeze(1)).sum(-1)
            for m, lb in margins.items():
                gap = (lb - true_margin).max().item()
                assert gap <= tol, f"{m}: a margin bound exceeds the framework's true margin by {gap}"
            for m, (lb, ub) in rates.items():
                assert (r >= lb - tol).all() and (r <= ub + tol).all(), f"{m}: a framework rate lies outside its bounds"
    return margins
