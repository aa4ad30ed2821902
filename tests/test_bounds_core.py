"""Bounds checked by hand, exactness without perturbation, tightness order, the loss, errors."""
from __future__ import annotations

import itertools

import pytest
import torch
from helpers import scale_weights
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import snn_robust as sr
from snn_robust.bounds import s_ibp
from snn_robust.bounds.api import margin_spec


def _tiny(reset: str) -> sr.SpikingNetwork:
    lin = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[0.5, 0.3]]))
    return sr.SpikingNetwork([lin, sr.LIF(alpha=0.5, threshold=0.6, reset=reset)], input_coding="spike")


# step 1: input [1, 0] or [1, 1]; step 2: any of the four binary inputs
LOWER = torch.tensor([[[1.0, 0.0]], [[0.0, 0.0]]])
UPPER = torch.tensor([[[1.0, 1.0]], [[1.0, 1.0]]])


@pytest.mark.parametrize(
    "reset,hand_ml,hand_mu",
    [
        # m1 in [0.5, 0.8] (unstable); hard reset: z1 in [0, 0.6] so m2 in [0, 0.8 + 0.5 * 0.6]
        ("zero", [0.5, 0.0], [0.8, 1.1]),
        # soft reset: c1 = 0.5 m1 - 0.6 s1 in [0.5*0.6 - 0.6, 0.5*0.6] = [-0.3, 0.3]
        ("subtract", [0.5, -0.3], [0.8, 1.1]),
    ],
)
def test_s_ibp_by_hand_and_by_enumeration(reset, hand_ml, hand_mu):
    net = _tiny(reset)
    with torch.no_grad():
        ml, mu = s_ibp(net, LOWER, UPPER).membrane[0]
    torch.testing.assert_close(ml.flatten(), torch.tensor(hand_ml), atol=1e-4, rtol=0)
    torch.testing.assert_close(mu.flatten(), torch.tensor(hand_mu), atol=1e-4, rtol=0)

    # the exact reachable membranes, by enumerating every binary input inside the box
    free = (LOWER != UPPER).nonzero().tolist()
    reached = []
    for bits in itertools.product([0.0, 1.0], repeat=len(free)):
        x = LOWER.clone()
        for (t, b, i), v in zip(free, bits):
            x[t, b, i] = v
        with torch.no_grad():
            _, m = net.stages[0].lif(net.layers[0](x), return_membrane=True)
        reached.append(m.flatten())
    reached = torch.stack(reached)
    assert (reached.min(0).values >= ml.flatten() - 1e-6).all()
    assert (reached.max(0).values <= mu.flatten() + 1e-6).all()
    # step 1 has no history: S-IBP is exact there, up to its rounding-error widening (~1e-6)
    assert reached[:, 0].min() == pytest.approx(ml.flatten()[0].item(), abs=1e-5)
    assert reached[:, 0].max() == pytest.approx(mu.flatten()[0].item(), abs=1e-5)


def _random_net(seed: int, reset: str = "zero", firing: str = ">") -> sr.SpikingNetwork:
    torch.manual_seed(seed)
    net = sr.SpikingNetwork(
        [nn.Flatten(), nn.Linear(16, 12), sr.LIF(0.4, 0.3, reset, firing), nn.Linear(12, 4), sr.LIF(0.4, 0.3, reset, firing)]
    )
    scale_weights(net, 2.0)
    return net


@pytest.mark.parametrize("reset", ["zero", "subtract"])
def test_bounds_exact_without_perturbation(reset):
    """With ``lower == upper`` and no neuron near its threshold, every method returns the
    true margin."""
    checked = 0
    for seed in range(10):
        net = _random_net(seed, reset)
        g = torch.Generator().manual_seed(seed)
        x = (torch.rand(4, 3, 16, generator=g) < 0.5).float()
        y = torch.randint(0, 4, (3,), generator=g)
        with torch.no_grad():
            if any(st.unstable.any() for st in s_ibp(net, x, x).stability):
                continue  # a membrane inside the threshold band: not an exactness case
            true = (margin_spec(y, 4) * net(x).unsqueeze(1)).sum(-1)
            for method in sr.METHODS:
                torch.testing.assert_close(sr.compute_bounds(net, x, x, y, method=method), true, atol=1e-5, rtol=0)
        checked += 1
    assert checked >= 8


def test_best_is_at_least_every_method():
    for seed in range(5):
        net = _random_net(seed)
        g = torch.Generator().manual_seed(seed)
        lower, upper = sr.DigitalLinf(0.1).bounds(torch.rand(6, 16, generator=g), 3, g)
        y = torch.randint(0, 4, (6,), generator=g)
        with torch.no_grad():
            # exhaustive: the early exit keeps the cheap maximum on samples it already verifies
            got = {m: sr.compute_bounds(net, lower, upper, y, method=m, exhaustive=True) for m in sr.METHODS}
        for m in sr.METHODS:
            assert (got["best"] >= got[m]).all(), m


def _trained_net(seed: int) -> sr.SpikingNetwork:
    """A small network after a few Adam steps on a random task (clean cross-entropy
    through the surrogate, then S-IBP certified loss): trained weights rather than
    random ones."""
    net = _random_net(seed)
    g = torch.Generator().manual_seed(seed)
    x, y = torch.rand(64, 16, generator=g), torch.randint(0, 4, (64,), generator=g)
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    for step in range(30):
        opt.zero_grad()
        clean = torch.nn.functional.cross_entropy(net(sr.bernoulli_encode(x, 5, g)) * 5, y)
        loss = clean if step < 20 else clean + sr.certified_loss(net, x, y, sr.DigitalLinf(0.05), steps=3,
                                                                 method="ibp", generator=g)
        loss.backward()
        opt.step()
    return net


_TRAINED = {}


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), eps=st.floats(0.0, 0.5), steps=st.integers(1, 5), trained=st.booleans(),
       reset=st.sampled_from(["zero", "subtract"]), firing=st.sampled_from([">", ">="]))
def test_crown_ibp_never_looser_than_ibp(seed, eps, steps, trained, reset, firing):
    """The default ``crown-ibp`` is at least S-IBP on every margin and every rate bound,
    on random and on (briefly) trained weights, while the paper's relaxation is not."""
    if trained:
        key = seed % 3
        if key not in _TRAINED:
            _TRAINED[key] = _trained_net(key)
        net = _TRAINED[key]
    else:
        net = _random_net(seed % 1000, reset, firing)
    g = torch.Generator().manual_seed(seed)
    lower, upper = sr.DigitalLinf(eps).bounds(torch.rand(8, 16, generator=g), steps, g)
    y = torch.randint(0, 4, (8,), generator=g)
    with torch.no_grad():
        ibp = sr.compute_bounds(net, lower, upper, y, method="ibp")
        crown = sr.compute_bounds(net, lower, upper, y, method="crown-ibp")
        assert (crown >= ibp).all(), (crown - ibp).min()
        (ibp_l, ibp_u), (cr_l, cr_u) = (sr.compute_bounds(net, lower, upper, method=m) for m in ("ibp", "crown-ibp"))
        assert (cr_l >= ibp_l).all() and (cr_u <= ibp_u).all()


def test_paper_relaxation_can_be_looser_than_ibp_and_crown_ibp_is_not():
    """The reason for the default: the paper's S-CROWN falls below S-IBP on many margins
    once eps grows; ``crown-ibp`` keeps S-IBP there and is tighter elsewhere."""
    looser = tighter = 0
    for seed in range(3):
        net = _random_net(seed)
        g = torch.Generator().manual_seed(seed)
        lower, upper = sr.DigitalLinf(0.2).bounds(torch.rand(32, 16, generator=g), 3, g)
        y = torch.randint(0, 4, (32,), generator=g)
        with torch.no_grad():
            got = {m: sr.compute_bounds(net, lower, upper, y, method=m) for m in ("ibp", "crown-ibp", "crown-ibp-paper")}
        looser += int((got["crown-ibp-paper"] < got["ibp"]).sum())
        tighter += int((got["crown-ibp"] > got["ibp"]).sum())
        assert (got["crown-ibp"] >= torch.maximum(got["ibp"], got["crown-ibp-paper"])).all()
    assert looser > 10 and tighter > 0


def test_rate_bounds_ordered_and_in_unit_interval():
    net = _random_net(0)
    g = torch.Generator().manual_seed(0)
    lower, upper = sr.DigitalLinf(0.2).bounds(torch.rand(5, 16, generator=g), 3, g)
    lb, ub = sr.compute_bounds(net, lower, upper, method="best")
    assert lb.shape == ub.shape == (5, 4)
    assert (lb <= ub).all() and (lb >= 0).all() and (ub <= 1).all()


def test_bounds_are_differentiable_in_the_weights():
    net = _random_net(1)
    g = torch.Generator().manual_seed(1)
    lower, upper = sr.DigitalLinf(0.1).bounds(torch.rand(4, 16, generator=g), 3, g)
    y = torch.randint(0, 4, (4,), generator=g)
    for method in sr.METHODS:
        net.zero_grad()
        sr.compute_bounds(net, lower, upper, y, method=method).sum().backward()
        assert net.layers[1].weight.grad is not None and net.layers[1].weight.grad.abs().sum() > 0, method


@pytest.mark.parametrize("method", ["ibp", "crown-ibp"])
def test_certified_loss_decreases_under_sgd(method):
    torch.manual_seed(0)
    net = sr.SpikingNetwork([nn.Linear(20, 24), sr.LIF(0.25, 0.25), nn.Linear(24, 3), sr.LIF(0.25, 0.25)])
    scale_weights(net, 1.5)
    x = torch.rand(32, 20)
    y = torch.randint(0, 3, (32,))
    pert = sr.DigitalLinf(0.05)
    opt = torch.optim.SGD(net.parameters(), lr=0.5, momentum=0.9)

    def loss_at_fixed_sample():
        return sr.certified_loss(net, x, y, pert, steps=3, method=method, generator=torch.Generator().manual_seed(7))

    with torch.no_grad():
        start = loss_at_fixed_sample().item()
    for _ in range(30):
        opt.zero_grad()
        loss = loss_at_fixed_sample()
        loss.backward()
        opt.step()
    with torch.no_grad():
        end = loss_at_fixed_sample().item()
    assert end < start - 0.05, (start, end)


def test_bound_logits_places_zero_at_label():
    margins = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    labels = torch.tensor([0, 2])
    logits = sr.bound_logits(margins, labels)
    torch.testing.assert_close(logits, torch.tensor([[0.0, -1.0, -2.0], [-3.0, -4.0, 0.0]]))


# -- errors: clear, never a silent wrong bound --------------------------------------------

def _box():
    lower = torch.zeros(2, 3, 16)
    return lower, lower.clone()


def test_error_shape_mismatch():
    lower, _ = _box()
    with pytest.raises(ValueError, match="same shape"):
        sr.compute_bounds(_random_net(0), lower, torch.zeros(2, 3, 15))


def test_error_not_time_major():
    with pytest.raises(ValueError, match="time-major"):
        sr.compute_bounds(_random_net(0), torch.zeros(3, 16), torch.zeros(3, 16))


def test_error_lower_above_upper():
    lower, upper = _box()
    lower[0, 0, 0] = 1.0
    with pytest.raises(ValueError, match="lower > upper"):
        sr.compute_bounds(_random_net(0), lower, upper)


def test_error_non_binary_spike_bounds():
    lower, upper = _box()
    upper[0, 0, 0] = 0.5
    with pytest.raises(ValueError, match="binary"):
        sr.compute_bounds(_random_net(0), lower, upper)


def test_error_labels_out_of_range():
    lower, upper = _box()
    with pytest.raises(ValueError, match="labels must lie in"):
        sr.compute_bounds(_random_net(0), lower, upper, labels=torch.tensor([0, 1, 4]))
    with pytest.raises(ValueError, match="labels must be an integer tensor"):
        sr.compute_bounds(_random_net(0), lower, upper, labels=torch.tensor([0.0, 1.0, 2.0]))


def test_error_unknown_method():
    lower, upper = _box()
    with pytest.raises(ValueError, match="method must be one of"):
        sr.compute_bounds(_random_net(0), lower, upper, method="crown")


@pytest.mark.parametrize("make", [lambda: sr.DigitalLinf(-0.1), lambda: sr.DigitalLinf(1.5), lambda: sr.SpikeL0(2.0),
                                  lambda: sr.DirectLinf(float("nan"))])
def test_error_eps_out_of_range(make):
    with pytest.raises(ValueError, match="eps must lie in"):
        make()


def test_error_unsupported_layer_named_with_position():
    with pytest.raises(sr.UnsupportedLayerError, match=r"layer 1 \(ReLU\)"):
        sr.SpikingNetwork([nn.Linear(4, 4), nn.ReLU(), sr.LIF()])
    with pytest.raises(sr.UnsupportedLayerError, match=r"layer features\.2 \(BatchNorm1d\)"):
        sr.SpikingNetwork([nn.Linear(4, 4), sr.LIF(), nn.BatchNorm1d(4), sr.LIF()],
                          names=["features.0", "features.1", "features.2", "features.3"])


def test_error_network_must_end_in_lif():
    with pytest.raises(ValueError, match="must end in a LIF layer"):
        sr.SpikingNetwork([nn.Linear(4, 4), sr.LIF(), nn.Linear(4, 2)])


def test_error_bad_neuron_parameters():
    with pytest.raises(ValueError, match="alpha must lie in"):
        sr.SpikingNetwork([nn.Linear(4, 4), sr.LIF(alpha=1.5)])
    with pytest.raises(ValueError, match="threshold must be > 0"):
        sr.SpikingNetwork([nn.Linear(4, 4), sr.LIF(threshold=0.0)])
    with pytest.raises(ValueError, match="reset must be one of"):
        sr.LIF(reset="none")


def test_error_digital_input_out_of_unit_range():
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        sr.DigitalLinf(0.1).bounds(torch.full((2, 4), 1.5), 3)


# -- exact in floating point, no certified ties ---------------------------------------------

def _wide_conv(seed: int) -> sr.SpikingNetwork:
    """64-channel convolutions (fan-in 576, where an any-order rounding bound is ~1e-4)."""
    torch.manual_seed(seed)
    return sr.SpikingNetwork([
        nn.Conv2d(2, 64, 3, 1, 1), sr.LIF(0.25, 0.25),
        nn.Conv2d(64, 64, 3, 2, 1), nn.AvgPool2d(2), sr.LIF(0.25, 0.1),
        nn.Flatten(), nn.Linear(256, 10), sr.LIF(0.25, 0.1, firing=">="),
    ])


@pytest.mark.parametrize("model", ["fc-zero", "fc-subtract-ge", "wide-conv", "paper-fc", "paper-conv"])
def test_every_method_exact_without_perturbation(model):
    """``lower == upper``: every method returns exactly the forward's margins and rates
    (up to the float spelling of ``k / T'``), also where membranes lie within an any-order
    rounding bound of the threshold."""
    from snn_robust.models import paper_model

    g = torch.Generator().manual_seed(0)
    if model.startswith("paper"):
        torch.manual_seed(0)
        net, shape, B, steps = paper_model(model[6:], "mnist"), (1, 28, 28), 2, 3
    elif model == "wide-conv":
        net, shape, B, steps = _wide_conv(0), (2, 8, 8), 4, 4
    else:
        net = _random_net(0, *(("zero", ">") if model == "fc-zero" else ("subtract", ">=")))
        shape, B, steps = (16,), 6, 5
    x = sr.bernoulli_encode(torch.rand(B, *shape, generator=g), steps, g)
    y = torch.randint(0, 10 if shape != (16,) else 4, (B,), generator=g)
    methods = [m for m in sr.METHODS if not (model == "paper-conv" and m in ("crown-ibp-optimized", "best"))]
    with torch.no_grad():
        rates = net(x)
        true = (margin_spec(y, rates.shape[1]) * rates.unsqueeze(1)).sum(-1)
        for method in methods:
            torch.testing.assert_close(sr.compute_bounds(net, x, x, y, method=method), true, atol=1e-6, rtol=0)
            lb, ub = sr.compute_bounds(net, x, x, method=method)
            torch.testing.assert_close(lb, rates, atol=1e-6, rtol=0)
            torch.testing.assert_close(ub, rates, atol=1e-6, rtol=0)


def _dyadic_net(gen: torch.Generator, reset: str, firing: str) -> sr.SpikingNetwork:
    """Weights, biases and neuron parameters on a coarse dyadic grid: sums are exact in
    any order, so membranes land exactly on thresholds and margins tie exactly."""
    lin1, lin2 = nn.Linear(6, 6), nn.Linear(6, 3)
    with torch.no_grad():
        for lin in (lin1, lin2):
            lin.weight.copy_(torch.randint(-2, 3, lin.weight.shape, generator=gen) * 0.25)
            lin.bias.copy_(torch.randint(-1, 2, lin.bias.shape, generator=gen) * 0.25)
    return sr.SpikingNetwork([lin1, sr.LIF(0.5, 0.25, reset, firing), lin2, sr.LIF(0.5, 0.25, reset, firing)])


@pytest.mark.slow
@pytest.mark.parametrize("reset,firing", [("zero", ">"), ("zero", ">="), ("subtract", ">")])
def test_no_certified_ties(reset, firing):
    """A random search over small nets and inputs inside the bounds never finds a
    certified sample (every margin bound > 0) with a reachable margin <= 0; margin bounds
    sit on the ``1/T'`` grid. The search does meet reachable ties and certified samples.
    (S-IBP is checked through ``crown-ibp``, which is never below it.)"""
    from helpers import sample_inside

    ties = certified = 0
    for seed in range(16):
        gen = torch.Generator().manual_seed(seed)
        net = _dyadic_net(gen, reset, firing)
        steps = 1 + seed % 4
        lower, upper = sr.DigitalLinf(0.15).bounds(torch.rand(4, 6, generator=gen), steps, gen)
        y = torch.randint(0, 3, (4,), generator=gen)
        with torch.no_grad():
            bounds = {m: sr.compute_bounds(net, lower, upper, y, method=m) for m in ("crown-ibp", "best")}
            reached = torch.stack([(margin_spec(y, 3) * net(x).unsqueeze(1)).sum(-1)
                                   for x in sample_inside(lower, upper, 30, gen, binary=True)])
        ties += int((reached == 0).any(0).any(1).sum())
        for m, lb in bounds.items():
            assert torch.equal(lb * steps, (lb * steps).round()), f"{m}: off the 1/T' grid"
            sure = (lb > 0).all(1)
            certified += int(sure.sum())
            assert (reached[:, sure] > 0).all(), f"{m}: certified a sample with a reachable tie"
    assert ties > 0 and certified > 0


def test_any_order_error_model_is_sound_and_wider():
    """``"any-order"`` widens every membrane by its any-order rounding bound: sound, and
    never tighter than the default model."""
    from helpers import assert_sound

    from snn_robust.bounds.rounding import set_error_model

    net = _wide_conv(1)
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(3, 2, 8, 8, generator=gen)
    y = torch.randint(0, 10, (3,), generator=gen)
    lower, upper = sr.DigitalLinf(0.05).bounds(x, 3, gen)
    point = sr.bernoulli_encode(x, 3, gen)
    with torch.no_grad():
        default = [s_ibp(net, a, b).membrane[0] for a, b in ((lower, upper), (point, point))]
    previous = set_error_model("any-order")
    try:
        with torch.no_grad():
            wide = [s_ibp(net, a, b).membrane[0] for a, b in ((lower, upper), (point, point))]
        for (wl, wu), (dl, du) in zip(wide, default):
            assert (wl <= dl).all() and (wu >= du).all()
        assert torch.equal(default[1][0], default[1][1]) and (wide[1][1] > wide[1][0]).all()
        assert_sound(net, net, lower, upper, y, samples=20, gen=gen,
                     methods=("ibp", "crown-ibp", "crown-ibp-paper", "crown-ibp-adaptive"))
    finally:
        set_error_model(previous)
