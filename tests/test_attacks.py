"""Attacks: budgets, effectiveness on a trained model, consistency with certificates, determinism."""
from __future__ import annotations

import json

import pytest
import torch
from tiny_task import T, make_images, make_spikes, trained_net
from torch import nn

import snn_robust as sr
from snn_robust.attacks import (
    EOTPGD,
    GreedyFlip,
    SpikeCompatibleAttack,
    SpikeCompatibleDigitalAttack,
    attack_surrogate,
    spike_compatible_direction,
)
from snn_robust.evaluate import attack_error, is_correct

DIGITAL = [
    EOTPGD(0.1, n_iter=8, samples=2),
    SpikeCompatibleDigitalAttack(0.1, n_iter=8),
]
SPIKE = [
    SpikeCompatibleAttack(0.05, n_iter=8),
    SpikeCompatibleAttack(0.06, n_iter=8, iter_fraction=0.01),  # the CONV setting, eps / 6
    GreedyFlip(0.05, n_iter=6),
    GreedyFlip(0.05, n_iter=4, flips_per_iter=3, early_stop=False),
]


def ids(attacks):
    return [f"{type(a).__name__}-{i}" for i, a in enumerate(attacks)]


@pytest.fixture(scope="module")
def net(one_thread):
    return trained_net()


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def per_sample(x: torch.Tensor) -> torch.Tensor:
    """``[T, B, X...] -> [B, T * prod(X)]``."""
    return x.transpose(0, 1).reshape(x.shape[1], -1)


# -- budgets ------------------------------------------------------------------------------
@pytest.mark.parametrize("attack", DIGITAL, ids=ids(DIGITAL))
@pytest.mark.parametrize("eps", [0.03, 0.3])
def test_digital_attack_stays_in_linf_ball_and_unit_box(net, attack, eps):
    x, y = make_images(24, seed=1)
    x[:4] = 0.0  # images at the box's corners: the clip to [0, 1] matters there
    x[4:8] = 1.0
    attack = attack.with_eps(eps)
    iterates = []
    x_adv = attack.attack(net, x, y, gen(), callback=lambda i, xi: iterates.append(xi.clone()))
    assert len(iterates) == attack.n_iter
    for xi in iterates + [x_adv]:
        assert xi.shape == x.shape
        assert (xi - x).abs().max() <= eps + 1e-6
        assert xi.min() >= 0 and xi.max() <= 1
    assert (x_adv - x).abs().max() > 0  # it did move


@pytest.mark.parametrize("attack", SPIKE, ids=ids(SPIKE))
def test_spike_attack_respects_total_and_per_iteration_l0_budget(net, attack):
    x, y = make_spikes(24, seed=2)
    D = x[:, 0].numel()
    k_total = int(attack.eps * D + 1e-9)
    k_iter = attack.budgets(D)[1]
    iterates = []
    x_adv = attack.attack(net, x, y, gen(), callback=lambda i, xi: iterates.append((i, xi.clone())))
    assert iterates, "the callback was never called"
    prev = x
    for i, xi in iterates:
        if i == 0:
            prev = x  # every run (GreedyFlip: one per surrogate) starts from the clean input
        assert ((xi == 0) | (xi == 1)).all()
        assert per_sample(xi != prev).sum(1).max() <= k_iter, f"iteration {i} changed too many elements"
        assert per_sample(xi != x).sum(1).max() <= k_total, f"iteration {i} left the total budget"
        prev = xi
    assert ((x_adv == 0) | (x_adv == 1)).all()
    changed = per_sample(x_adv != x).sum(1)
    assert changed.max() <= k_total and changed.max() > 0


@pytest.mark.parametrize("attack", SPIKE, ids=ids(SPIKE))
def test_spike_attack_only_flips_inside_the_box(net, attack):
    x, y = make_spikes(16, seed=3)
    lower, upper = sr.SpikeL0(0.05).bounds(x, T, gen(7))
    x_adv = attack.with_eps(1.0).attack(net, x, y, gen(), box=(lower, upper))
    assert ((x_adv >= lower) & (x_adv <= upper)).all()
    assert (x_adv != x).any()


def test_spike_budget_rounds_down():
    attack = SpikeCompatibleAttack(0.3)  # 0.3 * 10 is 2.999... in floating point
    assert attack.budgets(10) == (3, 1, 1)
    assert SpikeCompatibleAttack(0.3, iter_fraction=0.05).budgets(10) == (3, 0, 0)
    assert GreedyFlip(0.3, n_iter=2).budgets(10) == (3, 2)


def test_zero_budget_returns_the_clean_input(net):
    x, y = make_spikes(8, seed=4)
    for attack in (SpikeCompatibleAttack(0.0, n_iter=3), GreedyFlip(0.0, n_iter=3)):
        assert torch.equal(attack.attack(net, x, y, gen()), x)
    images, labels = make_images(8, seed=4)
    assert torch.equal(EOTPGD(0.0, n_iter=3).attack(net, images, labels, gen()), images)


# -- the spike-compatible step ------------------------------------------------------------
def test_spike_compatible_direction_keeps_only_possible_flips():
    g = torch.Generator().manual_seed(0)
    spikes = torch.rand(6, 50, generator=g).bernoulli(generator=g)
    grad = torch.randn(6, 50, generator=g)
    grad[5] = 0.0
    d = spike_compatible_direction(spikes, grad, g)
    assert set(d.unique().tolist()) <= {-1.0, 0.0, 1.0}
    assert ((d == 1) <= ((spikes == 0) & (grad > 0))).all()
    assert ((d == -1) <= ((spikes == 1) & (grad < 0))).all()
    assert (d[5] == 0).all()  # vanished gradient: no step
    # the element with the largest |g| is sampled with probability 1
    top = grad.abs().argmax(1)[:5]
    possible = ((spikes == 0) & (grad > 0)) | ((spikes == 1) & (grad < 0))
    rows = torch.arange(5)
    assert (d[rows, top] != 0)[possible[rows, top]].all()


def test_spike_compatible_direction_respects_admissible_mask():
    g = torch.Generator().manual_seed(1)
    spikes = torch.zeros(3, 40)
    grad = torch.rand(3, 40, generator=g)
    admissible = torch.zeros(3, 40, dtype=torch.bool)
    admissible[:, :5] = True
    d = spike_compatible_direction(spikes, grad, g, admissible)
    assert (d[:, 5:] == 0).all() and (d[:, :5] != 0).any()


def test_vanished_gradient_triggers_random_flips(net):
    """A network whose input has no gradient path through the surrogate window still gets
    flipped at the controlled rate."""
    silent = sr.SpikingNetwork([nn.Flatten(), nn.Linear(64, 2), sr.LIF(threshold=100.0)])
    x, y = make_spikes(4, seed=5)
    attack = SpikeCompatibleAttack(0.05, n_iter=3, random_fraction=0.01, early_stop=False)
    x_adv = attack.attack(silent, x, y, gen())
    changed = per_sample(x_adv != x).sum(1)
    assert (changed == 3 * int(0.01 * 640)).all()


# -- effectiveness ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "attack, eps",
    [
        (EOTPGD(0.2, n_iter=10, samples=2), 0.2),
        (SpikeCompatibleDigitalAttack(0.2, n_iter=10), 0.2),
        (SpikeCompatibleAttack(0.15, n_iter=20), 0.15),
        (GreedyFlip(0.06, n_iter=10), 0.06),
    ],
    ids=lambda v: type(v).__name__ if not isinstance(v, float) else str(v),
)
def test_attack_raises_error_well_above_clean(net, attack, eps):
    if attack.input_kind == "digital":
        data = make_images(64, seed=6)
    else:
        spikes, labels = make_spikes(64, seed=6)
        data = (spikes.transpose(0, 1), labels)  # evaluation data are sample-major
    result = attack_error(net, data, attack, [eps], seeds=(0,), progress=False)
    clean = result.clean.error
    assert clean <= 0.1, "the tiny model did not learn its task"
    assert result.errors[0].error >= clean + 0.3


def test_wide_attack_surrogate_finds_more_than_the_training_window(net):
    spikes, labels = make_spikes(64, seed=6)
    data = (spikes.transpose(0, 1), labels)
    narrow = attack_error(net, data, GreedyFlip(0.05, surrogates=(None,)), [0.05], seeds=(0,), progress=False)
    both = attack_error(net, data, GreedyFlip(0.05), [0.05], seeds=(0,), progress=False)
    assert both.errors[0].error >= narrow.errors[0].error + 0.2


def test_attack_surrogate_is_restored_and_leaves_spikes_alone(net):
    x, y = make_spikes(8, seed=7)
    before = [m.surrogate for m in net.modules() if isinstance(m, sr.LIF)]
    rates = net(x)
    wide = sr.Rectangular(half_width=3.0)
    with pytest.raises(RuntimeError):
        with attack_surrogate(net, wide):
            assert all(m.surrogate is wide for m in net.modules() if isinstance(m, sr.LIF))
            assert torch.equal(net(x), rates)
            raise RuntimeError("boom")
    assert [m.surrogate for m in net.modules() if isinstance(m, sr.LIF)] == before


# -- consistency with certificates ---------------------------------------------------------
def test_verified_spike_samples_survive_attacks_confined_to_the_bounds(net):
    x, y = make_spikes(64, seed=8)
    lower, upper = sr.SpikeL0(0.1).bounds(x, T, gen(3))
    verified = (sr.compute_bounds(net, lower, upper, y, method="best") > 0).all(1)
    assert verified.sum() >= 5 and (~verified).sum() >= 5, "pick an eps with both outcomes"
    broken_unverified = 0
    for attack in (SpikeCompatibleAttack(1.0, n_iter=20, iter_fraction=0.05), GreedyFlip(1.0, n_iter=30, flips_per_iter=4)):
        x_adv = attack.attack(net, x, y, gen(), box=(lower, upper))
        assert ((x_adv >= lower) & (x_adv <= upper)).all()
        correct = is_correct(net(x_adv), y)
        assert correct[verified].all(), f"{type(attack).__name__} broke a verified sample"
        broken_unverified += int((~correct[~verified]).sum())
    assert broken_unverified > 0, "the attacks never succeeded: the check above would be vacuous"


def test_verified_digital_samples_survive_attacks_within_eps_on_the_same_maps(net):
    """DigitalLinf bounds cover every image within eps coded with the same random maps; an
    adversarial image coded with those maps must not break a verified sample."""
    eps = 0.07
    x, y = make_images(64, seed=9)
    lower, upper = sr.DigitalLinf(eps).bounds(x, T, gen(3))
    verified = (sr.compute_bounds(net, lower, upper, y, method="best") > 0).all(1)
    assert verified.sum() >= 5 and (~verified).sum() >= 5, "pick an eps with both outcomes"
    broken_unverified = 0
    for attack in (EOTPGD(eps, n_iter=10, samples=2), SpikeCompatibleDigitalAttack(eps, n_iter=10)):
        x_adv = attack.attack(net, x, y, gen())
        spikes = sr.bernoulli_encode(x_adv, T, gen(3))  # the maps the bounds were built with
        assert ((spikes >= lower) & (spikes <= upper)).all()
        correct = is_correct(net(spikes), y)
        assert correct[verified].all(), f"{type(attack).__name__} broke a verified sample"
        broken_unverified += int((~correct[~verified]).sum())
    assert broken_unverified > 0, "the attacks never succeeded: the check above would be vacuous"


# -- determinism, configuration, validation ------------------------------------------------
@pytest.mark.parametrize("attack", DIGITAL + SPIKE, ids=ids(DIGITAL + SPIKE))
def test_same_seed_same_result(net, attack):
    if attack.input_kind == "digital":
        x, y = make_images(16, seed=10)
    else:
        x, y = make_spikes(16, seed=10)
    a = attack.attack(net, x, y, gen(42))
    b = attack.attack(net, x, y, gen(42))
    assert torch.equal(a, b)


def test_config_is_json_and_with_eps_keeps_the_rest():
    attack = GreedyFlip(0.05, n_iter=7)
    cfg = json.loads(json.dumps(attack.config()))
    assert cfg["name"] == "GreedyFlip" and cfg["n_iter"] == 7
    moved = attack.with_eps(0.2)
    assert moved.eps == 0.2 and moved.n_iter == 7
    assert SpikeCompatibleAttack(0.12).with_eps(0.06).step_fraction == pytest.approx(0.03)


def test_bad_inputs_raise_clear_errors(net):
    x, y = make_spikes(4, seed=11)
    images, labels = make_images(4, seed=11)
    with pytest.raises(ValueError, match="binary"):
        SpikeCompatibleAttack(0.1).attack(net, x * 0.5, y)
    with pytest.raises(ValueError, match=r"\[T, B, X...\]"):
        GreedyFlip(0.1).attack(net, images[:, 0, 0], labels)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        EOTPGD(0.1).attack(net, images + 1.0, labels)
    with pytest.raises(ValueError, match="labels"):
        EOTPGD(0.1).attack(net, images, labels.float())
    with pytest.raises(ValueError, match="box"):
        GreedyFlip(0.1).attack(net, x, y, box=(x[:2], x[:2]))
    lower, upper = sr.SpikeL0(0.1).bounds(x, T, gen())
    with pytest.raises(ValueError, match="outside the box"):
        GreedyFlip(0.1).attack(net, 1 - x, y, box=(lower, upper))
    with pytest.raises(ValueError, match="eps"):
        EOTPGD(1.5)
    with pytest.raises(ValueError, match="loss"):
        SpikeCompatibleAttack(0.1, loss="mse")
    with pytest.raises(ValueError, match="n_iter"):
        GreedyFlip(0.1, n_iter=0)
    for bad in (0, -0.1, float("inf")):
        for cls in (EOTPGD, SpikeCompatibleDigitalAttack):
            with pytest.raises(ValueError, match=f"{cls.__name__}: step_size"):
                cls(0.1, step_size=bad)
    with pytest.raises(TypeError, match="step_size"):
        SpikeCompatibleDigitalAttack(0.1, step_size=None)  # only EOTPGD derives a default from None
    assert EOTPGD(0.1, step_size=None).step_size is None
    with pytest.raises(ValueError, match="time_steps"):
        EOTPGD(0.1, time_steps=0)
