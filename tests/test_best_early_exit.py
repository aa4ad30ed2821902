"""``best``'s early exit against the exhaustive ``best`` (the plain reference path): the
optimised S-CROWN runs only on samples the cheap methods leave unverified."""
from __future__ import annotations

import torch
from helpers import scale_weights
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import snn_robust as sr


def _net(seed: int, reset: str, scale: float) -> sr.SpikingNetwork:
    torch.manual_seed(seed)
    net = sr.SpikingNetwork(
        [nn.Flatten(), nn.Linear(16, 12), sr.LIF(0.4, 0.3, reset), nn.Linear(12, 4), sr.LIF(0.4, 0.3, reset)]
    )
    scale_weights(net, scale)
    return net.double()


def _box(seed: int, eps: float, batch: int = 8):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, 16, generator=g, dtype=torch.float64)
    lower, upper = sr.DigitalLinf(eps).bounds(x, 3, g)
    return lower, upper, torch.randint(0, 4, (batch,), generator=g)


@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    reset=st.sampled_from(["zero", "subtract"]),
    scale=st.floats(0.5, 3.0),
    eps=st.sampled_from([0.0, 0.02, 0.1, 0.3]),
)
def test_early_exit_matches_exhaustive(seed, reset, scale, eps):
    net = _net(seed, reset, scale)
    lower, upper, y = _box(seed, eps)
    with torch.no_grad():
        fast = sr.compute_bounds(net, lower, upper, y, method="best")
        full = sr.compute_bounds(net, lower, upper, y, method="best", exhaustive=True)
        cheap = torch.stack(
            [sr.compute_bounds(net, lower, upper, y, method=m) for m in ("ibp", "crown-ibp", "crown-ibp-adaptive")]
        ).max(0).values
    verified = (fast > 0).all(1)
    assert torch.equal(verified, (full > 0).all(1))
    # samples the cheap methods verify: their maximum, never above the exhaustive best (both
    # sound lower bounds); every other sample (the optimised pass may verify it): exactly the
    # exhaustive margins
    cheap_verified = (cheap > 0).all(1)
    assert torch.equal(fast[~cheap_verified], full[~cheap_verified])
    assert torch.equal(fast[cheap_verified], cheap[cheap_verified])
    assert (fast <= full).all()


def test_early_exit_exercises_both_branches_and_is_sound():
    """A batch where some samples are verified by the cheap methods and some are not, so
    the optimised S-CROWN runs on a strict subset; margins hold on sampled inputs."""
    for seed in range(40):
        net = _net(seed, "zero", 2.0)
        lower, upper, y = _box(seed, 0.05, batch=16)
        with torch.no_grad():
            fast = sr.compute_bounds(net, lower, upper, y, method="best")
        verified = (fast > 0).all(1)
        if 0 < int(verified.sum()) < len(y):
            break
    else:
        raise AssertionError("no seed gave a mixed batch")
    g = torch.Generator().manual_seed(1)
    for _ in range(50):
        x = torch.where(torch.rand(lower.shape, generator=g, dtype=lower.dtype) < 0.5, lower, upper)
        with torch.no_grad():
            rates = net(x)
        true = rates.gather(1, y[:, None]) - rates
        true = true[torch.arange(4)[None, :] != y[:, None]].reshape(len(y), 3)
        assert (true >= fast - 1e-9).all()


def test_early_exit_is_differentiable():
    net = _net(3, "zero", 2.0)
    lower, upper, y = _box(3, 0.05, batch=16)
    lb = sr.compute_bounds(net, lower, upper, y, method="best")
    lb.sum().backward()
    grads = [p.grad for p in net.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
