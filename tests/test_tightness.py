"""Full S-CROWN (``crown-full``, :mod:`snn_robust.bounds.intermediate`): the tightened
membrane intervals hold every membrane of the forward pass, its margins are never looser
than S-IBP's, and it does tighten where S-CROWN can (margins against snnTorch's and
SpikingJelly's forward passes are checked for every method, ``crown-full`` included, in
test_bounds_soundness.py and the adapter tests)."""
from __future__ import annotations

import torch
from helpers import neuron, sample_inside, scale_weights
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import snn_robust as sr
from snn_robust.bounds.ibp import s_ibp
from snn_robust.bounds.intermediate import full_intervals, membrane_bounds
from snn_robust.network import fold_time


def _net(seed: int, arch: str, reset: str, firing: str, alpha: float, th: float, gain: float) -> tuple:
    torch.manual_seed(seed)
    lif = lambda: neuron(alpha, th, reset, firing, False)  # noqa: E731
    if arch == "fc":
        layers = [nn.Flatten(), nn.Linear(12, 10), lif(), nn.Linear(10, 8), lif(), nn.Linear(8, 4), lif()]
        shape = (12,)
    else:
        layers = [nn.Conv2d(2, 4, 3, 2, 1), lif(), nn.Conv2d(4, 3, 3, 1, 1), lif(), nn.Flatten(), nn.Linear(48, 4), lif()]
        shape = (2, 8, 8)
    net = sr.SpikingNetwork(layers)
    scale_weights(net, gain)
    return net, shape


def _membranes(net: sr.SpikingNetwork, x: torch.Tensor) -> list[torch.Tensor]:
    """Every LIF layer's membranes ``[T, B, N...]`` of our forward pass on ``x``."""
    out = []
    for stage in net.stages:
        for layer in stage.spatial:
            x = fold_time(x, layer)
        x, m = stage.lif(x, return_membrane=True)
        out.append(m)
    return out


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    arch=st.sampled_from(["fc", "conv"]),
    reset=st.sampled_from(["zero", "subtract"]),
    firing=st.sampled_from([">", ">="]),
    alpha=st.floats(0.0, 1.0),
    th=st.floats(0.1, 1.0),
    gain=st.floats(0.5, 4.0),
    eps=st.floats(0.0, 0.4),
    steps=st.integers(1, 4),
)
def test_full_intervals_hold_every_membrane(seed, arch, reset, firing, alpha, th, gain, eps, steps):
    """The clipped intervals contain our forward pass's membranes on sampled inputs inside
    the box, and are inside S-IBP's (up to the float rounding of S-IBP's centre/radius
    arithmetic, which is not monotone in the box to the last ulp)."""
    net, shape = _net(seed, arch, reset, firing, alpha, th, gain)
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(3, *shape, generator=g)
    lower, upper = sr.DigitalLinf(eps).bounds(x, steps, g)
    with torch.no_grad():
        ibp = s_ibp(net, lower, upper)
        full = full_intervals(net, lower, upper)
        for (fl, fu), (il, iu) in zip(full.membrane, ibp.membrane):
            assert (fl >= il - 1e-6).all() and (fu <= iu + 1e-6).all()
        for z in sample_inside(lower, upper, 30, g, binary=True):
            for k, m in enumerate(_membranes(net, z)):
                fl, fu = full.membrane[k]
                assert (m >= fl).all() and (m <= fu).all(), f"layer {k}: a membrane outside its full S-CROWN interval"


@settings(max_examples=8, deadline=None)  # each runs the exhaustive best-full (20 optimiser passes)
@given(seed=st.integers(0, 2**31 - 1), reset=st.sampled_from(["zero", "subtract"]), gain=st.floats(0.5, 4.0),
       eps=st.floats(0.0, 0.4))
def test_crown_full_never_looser_than_ibp(seed, reset, gain, eps):
    net, shape = _net(seed, "fc", reset, ">", 0.5, 0.5, gain)
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(4, *shape, generator=g)
    y = torch.randint(0, 4, (4,), generator=g)
    lower, upper = sr.DigitalLinf(eps).bounds(x, 3, g)
    with torch.no_grad():
        ibp = sr.compute_bounds(net, lower, upper, y, method="ibp")
        full = sr.compute_bounds(net, lower, upper, y, method="crown-full")
        best = sr.compute_bounds(net, lower, upper, y, method="best-full", exhaustive=True)
    assert (full >= ibp).all()
    assert (best >= full).all()


def test_full_intervals_tighten_a_wide_net():
    """On a random network with many unstable neurons the backward passes from the
    membranes beat S-IBP's intervals (strictly narrower on average, fewer unstable
    neurons) and the margins follow; a chunked walk over the rows gives the same bounds."""
    torch.manual_seed(0)
    net = sr.SpikingNetwork([nn.Flatten(), nn.Linear(40, 30), sr.LIF(0.25, 0.25), nn.Linear(30, 20),
                             sr.LIF(0.25, 0.25), nn.Linear(20, 5), sr.LIF(0.25, 0.25)])
    g = torch.Generator().manual_seed(0)
    x = torch.rand(8, 40, generator=g)
    y = torch.randint(0, 5, (8,), generator=g)
    lower, upper = sr.DigitalLinf(0.01).bounds(x, 3, g)
    with torch.no_grad():
        ibp = s_ibp(net, lower, upper)
        full = full_intervals(net, lower, upper)
        width = lambda r, k: (r.membrane[k][1] - r.membrane[k][0]).mean()  # noqa: E731
        assert width(full, 1) < width(ibp, 1)
        assert full.stability[1].unstable.sum() < ibp.stability[1].unstable.sum()
        whole = membrane_bounds(net, ibp, lower, upper, 1)
        chunked = membrane_bounds(net, ibp, lower, upper, 1, max_elements=1)  # one row pair at a time
        torch.testing.assert_close(chunked, whole)
        a = sr.compute_bounds(net, lower, upper, y, method="crown-ibp")
        b = sr.compute_bounds(net, lower, upper, y, method="crown-full")
    assert b.sum() > a.sum()
