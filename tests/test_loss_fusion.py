"""Loss fusion (bounds/loss_fusion.py): the one-row bound of the cross-entropy.

Compared with: the true cross-entropy of the network's own forward pass on inputs sampled
inside the box (the fused bound must be above it: soundness), and the loss of S-IBP's margin
bounds ``CE(-[0, lb_ibp], y)`` (the fused bound must be below or equal it, by construction).
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import neuron, sample_inside, scale_weights
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import snn_robust as sr
from snn_robust.bounds.adapter_ops import RateReadout
from snn_robust.bounds.loss_fusion import FUSED_METHODS, fused_ce_bound, fused_ce_from_bounds
from snn_robust.loss import bound_logits


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), spread=st.floats(0.0, 30.0), classes=st.integers(2, 12))
def test_linear_bound_of_log_sum_exp_holds_on_the_box(seed, spread, classes):
    gen = torch.Generator().manual_seed(seed)
    B, S = 4, classes - 1
    a = (torch.rand(B, S, generator=gen, dtype=torch.float64) - 0.5) * spread
    b = (torch.rand(B, S, generator=gen, dtype=torch.float64) - 0.5) * spread
    l, u = torch.minimum(a, b), torch.maximum(a, b)
    l[:, 0] = u[:, 0]  # a degenerate interval (slope = derivative)
    lse_u, c, cu = fused_ce_from_bounds(l, u)
    assert (c >= 0).all()
    zero = torch.zeros(B, 1, dtype=l.dtype)
    torch.testing.assert_close(lse_u, torch.logsumexp(torch.cat([zero, u], 1), 1))
    for _ in range(20):
        d = l + torch.rand(B, S, generator=gen, dtype=l.dtype) * (u - l)
        true = torch.logsumexp(torch.cat([zero, d], 1), 1)
        bound = lse_u + (c * d).sum(1) - cu
        assert (true <= bound + 1e-9 * (1 + true.abs())).all()
        assert (bound <= lse_u + 1e-9 * (1 + lse_u.abs())).all()


def _net(seed: int, gain: float, alpha: float, th: float, reset: str, firing: str, readout: str | None):
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    out = 6 if readout == "voting" else 5
    layers = [nn.Flatten(), nn.Linear(12, 9), neuron(alpha, th, reset, firing, False),
              nn.Linear(9, out), neuron(alpha, th, reset, firing, False)]
    ro = None
    if readout == "linear":
        ro = RateReadout("linear", nn.Linear(5, 4))
    elif readout == "voting":
        ro = RateReadout("voting", group=2)
    net = sr.SpikingNetwork(layers, readout=ro)
    scale_weights(net, gain)
    return net, gen


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    gain=st.floats(0.5, 4.0),
    alpha=st.floats(0.0, 1.0),
    th=st.floats(0.05, 1.0),
    reset=st.sampled_from(["zero", "subtract"]),
    firing=st.sampled_from([">", ">="]),
    readout=st.sampled_from([None, "linear", "voting"]),
    eps=st.floats(0.0, 0.5),
    steps=st.integers(1, 4),
    scale=st.sampled_from([1.0, 5.0]),
)
def test_fused_bound_is_sound_and_below_the_ibp_loss(seed, gain, alpha, th, reset, firing, readout, eps, steps, scale):
    net, gen = _net(seed, gain, alpha, th, reset, firing, readout)
    B = 3
    C = net.num_classes
    x = torch.rand(B, 3, 4, generator=gen)
    labels = torch.randint(0, C, (B,), generator=gen)
    lower, upper = sr.DigitalLinf(eps).bounds(x, steps, gen)
    with torch.no_grad():
        fused = {m: fused_ce_bound(net, lower, upper, labels, method=m, scale=scale) for m in FUSED_METHODS}
        margins = sr.compute_bounds(net, lower, upper, labels, method="ibp")
        ibp_loss = F.cross_entropy(bound_logits(margins, labels) * scale, labels, reduction="none")
        for m, value in fused.items():
            assert value.shape == (B,)
            assert (value <= ibp_loss + 1e-5).all(), m
        torch.testing.assert_close(fused["ibp"], ibp_loss, rtol=1e-5, atol=1e-5)
        for xs in sample_inside(lower, upper, 30, gen, binary=True):
            true = F.cross_entropy(net(xs) * scale, labels, reduction="none")
            for m, value in fused.items():
                gap = (true - value).max().item()
                assert gap <= 1e-5, f"{m}: true CE above the fused bound by {gap}"


def test_fused_bound_beats_ibp_and_trains():
    """On a net where S-CROWN wins, the fused row is below S-IBP's loss, and the gradient
    reaches every parameter through the single backward pass."""
    net, gen = _net(3, 1.0, 0.25, 0.25, "zero", ">", None)
    x = torch.rand(8, 3, 4, generator=gen)
    labels = torch.randint(0, 5, (8,), generator=gen)
    lower, upper = sr.DigitalLinf(0.05).bounds(x, 3, gen)
    fused = fused_ce_bound(net, lower, upper, labels, method="crown-ibp")
    ibp = fused_ce_bound(net, lower, upper, labels, method="ibp")
    assert (fused < ibp - 1e-4).any()
    fused.mean().backward()
    grads = [p.grad for p in net.parameters() if p.dim() > 1]
    assert all(g is not None and torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)


def test_certified_loss_with_fusion_is_the_mean_of_the_fused_bound():
    net, gen = _net(5, 2.0, 0.25, 0.25, "zero", ">", None)
    x = torch.rand(4, 3, 4, generator=gen)
    labels = torch.randint(0, 5, (4,), generator=gen)
    pert = sr.DigitalLinf(0.1)
    loss = sr.certified_loss(net, x, labels, pert, steps=2, method="crown-ibp", fusion=True, unstable_weight=0.0,
                             generator=torch.Generator().manual_seed(1))
    lower, upper = pert.bounds(x, 2, torch.Generator().manual_seed(1))
    # certified_loss's default bound_scale (2) reaches the fused bound
    torch.testing.assert_close(loss, fused_ce_bound(net, lower, upper, labels, method="crown-ibp", scale=2.0).mean())
    scaled = sr.certified_loss(net, x, labels, pert, steps=2, method="crown-ibp", fusion=True, bound_scale=5.0,
                               unstable_weight=0.0, reduction="none", generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(scaled, fused_ce_bound(net, lower, upper, labels, method="crown-ibp", scale=5.0))
    with pytest.raises(ValueError, match="neither return_margins"):
        sr.certified_loss(net, x, labels, pert, fusion=True, return_margins=True)


def test_bad_arguments_are_refused_by_name():
    net, gen = _net(1, 1.0, 0.25, 0.25, "zero", ">", None)
    lower, upper = sr.DigitalLinf(0.1).bounds(torch.rand(2, 3, 4, generator=gen), 2, gen)
    labels = torch.zeros(2, dtype=torch.long)
    with pytest.raises(ValueError, match="loss fusion supports method"):
        fused_ce_bound(net, lower, upper, labels, method="best")
    with pytest.raises(ValueError, match="scale must be a positive finite number"):
        fused_ce_bound(net, lower, upper, labels, scale=0.0)
    with pytest.raises(ValueError, match="loss fusion needs labels"):
        fused_ce_bound(net, lower, upper, None)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\]"):
        fused_ce_bound(net, lower, upper, torch.full((2,), 7))
