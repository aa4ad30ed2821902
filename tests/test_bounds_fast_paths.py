"""Each optimised path of the bound engine against its plain reference, on inputs that take
the fast branch (checked): the LIF op's backward recurrence (upper line plus the
difference where the coefficient is positive, vanishing differences skipped, a unit
scale skipped), the first layer's concretisation in S-CROWN, the optimised S-CROWN's
early return without unstable neurons, and a single-Linear readout. The spatial
operators' fast paths are in test_spatial_ops.py; best's early exit in
test_best_early_exit.py."""
from __future__ import annotations

import dataclasses

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import snn_robust as sr
from snn_robust.bounds import crown, graph as graph_mod, lif as lif_mod
from snn_robust.bounds.api import margin_spec
from snn_robust.bounds.graph import bound_graph, readout_matrix
from snn_robust.bounds.ibp import s_ibp
from snn_robust.bounds.lif import BoundLIF, Relaxation
from snn_robust.bounds.relaxations import fire_relaxation, reset_relaxation, stability
from snn_robust.bounds.spatial import BoundLinear, BoundOp, _AffineOp
from snn_robust.layers import RateReadout


def _plain_backward(lif: sr.LIF, A, ml, mu, st, adaptive, w: Relaxation, charge_err):
    """The S-CROWN step through a LIF layer written directly from the relaxations: per
    step, the lower line where the coefficient is positive, else the upper one."""
    T, B, S, N = A.shape

    def per_step(x):  # [T, B, N...] -> [T, B, 1, N]
        return x.expand_as(ml).reshape(T, B, 1, N)

    def per_neuron(x):  # a neuron parameter -> [N]
        return x.expand(ml.shape[2:]).reshape(N)

    dl, bl, du, bu = map(per_step, fire_relaxation(ml, mu, st, w.fire_lower, w.fire_upper))
    alpha, scale = per_neuron(lif.alpha), per_neuron(lif.input_scale)
    if lif.reset == "zero":
        r = [per_step(x) for x in reset_relaxation(ml, mu, st, adaptive, w.reset_lower, w.reset_upper)]
    out, bias = torch.zeros_like(A), A.new_zeros(B, S)
    carry_m = carry_s = torch.zeros_like(A[0])
    for t in reversed(range(T)):
        lam_s = A[t] + carry_s
        lam_m = torch.where(lam_s > 0, lam_s * dl[t], lam_s * du[t]) + carry_m
        bias = bias + torch.where(lam_s > 0, lam_s * bl[t], lam_s * bu[t]).sum(-1)
        if charge_err is not None:
            bias = bias - (lam_m.abs() * charge_err[t].reshape(B, 1, N)).sum(-1)
        out[t] = lam_m * scale
        if t == 0:
            break
        if lif.reset == "zero":  # carry alpha z, z between planes in (m, s)
            c = lam_m * alpha
            al, bl_r, cl, au, bu_r, cu = (x[t - 1] for x in r)
            carry_m = torch.where(c > 0, c * al, c * au)
            carry_s = torch.where(c > 0, c * bl_r, c * bu_r)
            bias = bias + torch.where(c > 0, c * cl, c * cu).sum(-1)
        else:  # carry alpha m - kappa th s, exact
            carry_m = lam_m * alpha
            carry_s = -lam_m * per_neuron(lif.kappa) * per_neuron(lif.threshold)
    return out, bias


@pytest.fixture
def lif_branches(monkeypatch):
    """Records every ``Lines`` built by ``lif._lines`` and the scale ``crown_recurrence`` got."""
    seen: dict[str, list] = {"lines": [], "scale": []}
    lines, recurrence = lif_mod._lines, lif_mod.crown_recurrence

    def recording_lines(lower, upper):
        out = lines(lower, upper)
        seen["lines"].append(out)
        return out

    def recording_recurrence(A, fire_slope, fire_const, carry, scale, *rest, **kw):
        seen["scale"].append(scale)
        return recurrence(A, fire_slope, fire_const, carry, scale, *rest, **kw)

    monkeypatch.setattr(lif_mod, "_lines", recording_lines)
    monkeypatch.setattr(lif_mod, "crown_recurrence", recording_recurrence)
    return seen


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seed=st.integers(0, 2**31 - 1),
    reset=st.sampled_from(["zero", "subtract"]),
    decay_reset=st.booleans(),
    per_neuron=st.booleans(),
    unit_scale=st.booleans(),
    mode=st.sampled_from(["paper", "adaptive", "weights"]),
    unstable=st.booleans(),
    charge=st.booleans(),
)
def test_lif_backward_matches_the_plain_recurrence(
    seed, reset, decay_reset, per_neuron, unit_scale, mode, unstable, charge, lif_branches
):
    gen = torch.Generator().manual_seed(seed)
    T, B, S, N = 4, 3, 2, 5
    dt = torch.float64
    if per_neuron:
        alpha, th = torch.rand(N, generator=gen, dtype=dt), 0.2 + torch.rand(N, generator=gen, dtype=dt)
        scale = 1.0 if unit_scale else 0.5 + torch.rand(N, generator=gen, dtype=dt)
    else:
        alpha, th, scale = 0.4, 0.3, (1.0 if unit_scale else 0.7)
    lif = sr.LIF(alpha, th, reset, input_scale=scale, decay_reset=decay_reset).double()
    ml = torch.randn(T, B, N, generator=gen, dtype=dt)
    if unstable:  # intervals across the threshold for some neurons
        mu = ml + 2 * torch.rand(T, B, N, generator=gen, dtype=dt)
    else:  # every neuron stable: all relaxations constant, every line difference vanishes
        ml = torch.where((ml - lif.threshold).abs() < 0.1, ml + 0.2, ml)
        mu = torch.where(ml > lif.threshold, ml + 0.05, torch.minimum(ml + 0.05, lif.threshold - 0.01))
    st_ = stability(ml, mu, lif.threshold)
    weights = Relaxation()
    if mode == "weights":
        weights = Relaxation(*(torch.rand(T, B, N, generator=gen, dtype=dt) for _ in range(4)))
    A = torch.randn(T, B, S, N, generator=gen, dtype=dt)
    err = torch.rand(T, B, N, generator=gen, dtype=dt) * 1e-6 if charge else None

    lif_branches["lines"].clear()
    lif_branches["scale"].clear()
    fast, fast_bias = BoundLIF(lif, "lif").backward(A, (ml, mu), st_, mode == "adaptive", weights, err)
    ref, ref_bias = _plain_backward(lif, A, ml, mu, st_, mode == "adaptive", weights, err)
    torch.testing.assert_close(fast, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(fast_bias, ref_bias, rtol=1e-12, atol=1e-12)

    # the branches taken: the fire lines' difference is skipped exactly when no neuron is
    # unstable; the scale product exactly when the scale is the constant 1
    fire_slope = lif_branches["lines"][0]
    assert (fire_slope.diff is None) == (not bool(st_.unstable.any()))
    assert (lif_branches["scale"] == [None]) == unit_scale


def _box(seed: int, batch: int = 4):
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(3, batch, 1, 4, 4, generator=g) < 0.5).double()
    flip = torch.rand(x.shape, generator=g) < 0.1
    return torch.where(flip, torch.zeros_like(x), x), torch.where(flip, torch.ones_like(x), x), g


@pytest.mark.parametrize("seed", range(3))
def test_first_layer_concretization_matches_the_plain_backward_pass(seed, monkeypatch):
    """S-CROWN stops at the first non-reshaping layer and concretises there
    (``BoundLinear.concretize``: no transpose of that layer, gathered rows, S-IBP's centre
    of the layer reused); the plain
    reference transposes every layer, the Flatten included, and concretises over the input
    box (:meth:`BoundOp.concretize` on the Flatten)."""
    torch.manual_seed(seed)
    net = sr.SpikingNetwork(
        [nn.Flatten(), nn.Linear(16, 10), sr.LIF(0.4, 0.3), nn.Linear(10, 4), sr.LIF(0.4, 0.3, "subtract")]
    ).double()
    with torch.no_grad():
        for p in net.parameters():
            if p.dim() > 1:
                p.mul_(2.0)
    lower, upper, _ = _box(seed)
    spec = margin_spec(torch.tensor([0, 1, 2, 3]), 4, torch.float64)
    ibp = s_ibp(net, lower, upper)
    assert any(bool(s.unstable.any()) for s in ibp.stability)

    calls = []
    concretize = BoundLinear.concretize

    def recording(self, A, l, u, centre=None):
        calls.append(centre is ibp.input_centre)
        return concretize(self, A, l, u, centre)

    monkeypatch.setattr(BoundLinear, "concretize", recording)
    fast = crown.s_crown(net, ibp, lower, upper, spec)
    assert calls == [True]  # the shortcut ran, once, on the first Linear, with S-IBP's centre
    again = crown.s_crown(net, dataclasses.replace(ibp, input_centre=None), lower, upper, spec)
    assert torch.equal(fast, again)  # the reused centre is the product computed again, bit for bit

    class Never:  # no operator is a reshape to skip: the walk goes through the Flatten too
        pass

    monkeypatch.setattr(graph_mod, "BoundFlatten", Never)
    monkeypatch.setattr(BoundLinear, "backward", _AffineOp.backward)
    monkeypatch.setattr(BoundLinear, "concretize", BoundOp.concretize)
    plain = crown.s_crown(net, dataclasses.replace(ibp, input_centre=None), lower, upper, spec)
    torch.testing.assert_close(fast, plain, rtol=1e-10, atol=1e-10)


def test_single_linear_readout_matrix_is_the_chain_one():
    """A readout of one ``nn.Linear`` gives its Parameters as ``(W, b)`` (the shortcut);
    the same layer behind a Flatten goes through the chain's transposes: equal, bit for bit
    (the identity's transposes and ``f(0)`` are exact)."""
    lin = nn.Linear(6, 3)
    like = torch.zeros(1)
    single, chain = RateReadout("linear", lin), RateReadout("linear", [nn.Flatten(), lin])
    W1, b1 = readout_matrix(single, (6,), like)
    W2, b2 = readout_matrix(chain, (6,), like)
    assert W1 is lin.weight and b1 is lin.bias  # the shortcut
    assert W2 is not lin.weight
    assert torch.equal(W1, W2) and torch.equal(b1, b2)


def test_optimized_bound_without_unstable_neurons_skips_the_optimiser(monkeypatch):
    """With no unstable neuron every relaxation is a constant or exact, so
    ``s_crown_optimized`` returns the plain S-CROWN bound without running Adam (checked);
    the reference: S-CROWN under arbitrary relaxation weights, which then change nothing."""
    torch.manual_seed(3)
    net = sr.SpikingNetwork([nn.Flatten(), nn.Linear(16, 8), sr.LIF(0.4, 0.3), nn.Linear(8, 4), sr.LIF(0.4, 0.3)]).double()
    x, _, _ = _box(3)
    ibp = s_ibp(net, x, x)  # a point: every membrane is one float
    assert not any(bool(s.unstable.any()) for s in ibp.stability)
    spec = margin_spec(torch.tensor([0, 1, 2, 3]), 4, torch.float64)

    def no_optimiser(*args, **kwargs):
        raise AssertionError("the optimiser ran")

    monkeypatch.setattr(crown.torch.optim, "Adam", no_optimiser)
    fast = crown.s_crown_optimized(net, ibp, x, x, spec)
    gen = torch.Generator().manual_seed(0)
    weights = [
        Relaxation(*(torch.rand(m.shape, generator=gen, dtype=m.dtype) for _ in range(stage.neuron.relaxation_weights)))
        for stage, (m, _) in zip(bound_graph(net), ibp.membrane)
    ]
    torch.testing.assert_close(fast, crown.s_crown(net, ibp, x, x, spec, relaxations=weights), rtol=0, atol=0)
