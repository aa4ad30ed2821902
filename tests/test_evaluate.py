"""Evaluation: clean, attack and certified error on known answers and on a tiny trained SNN."""
from __future__ import annotations

import json

import pytest
import torch
from tiny_task import T, make_images, make_spikes, trained_net
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import snn_robust as sr
from snn_robust.coding import DirectCoding, RateCoding, SpikeFrames
from snn_robust.attacks import EOTPGD, GreedyFlip, SpikeCompatibleAttack, SpikeCompatibleDigitalAttack
from snn_robust.evaluate import (AttackResult, ErrorResult, attack_error, certified_boxes, certified_error, clean_error,
                                 is_correct)


@pytest.fixture(scope="module")
def net(one_thread):
    return trained_net()


@pytest.fixture(scope="module")
def images():
    return make_images(48, seed=20)


@pytest.fixture(scope="module")
def hard_images(images):
    """Low-contrast images: the model errs on about a third of them, differently per coding."""
    x, y = images
    return x * 0.3 + 0.35, y


@pytest.fixture(scope="module")
def spikes():
    """Sample-major spike data ``[N, T, 1, 8, 8]``, as datasets hold them."""
    x, y = make_spikes(48, seed=21)
    return x.transpose(0, 1).contiguous(), y


def constant_net(winner: int = 0) -> sr.SpikingNetwork:
    """Output neuron ``winner`` fires at every step whatever the input; the other never."""
    linear = nn.Linear(64, 2)
    with torch.no_grad():
        linear.weight.zero_()
        linear.bias.fill_(-1.0)
        linear.bias[winner] = 1.0
    return sr.SpikingNetwork([nn.Flatten(), linear, sr.LIF()])


def test_is_correct_counts_ties_as_errors():
    rates = torch.tensor([[0.5, 0.2], [0.3, 0.3], [0.0, 0.0], [0.1, 0.9]])
    labels = torch.tensor([0, 0, 1, 1])
    assert is_correct(rates, labels).tolist() == [True, False, False, True]


# -- known answers ------------------------------------------------------------------------
def test_constant_network_known_errors(images, spikes):
    net = constant_net(winner=0)
    x, y = images
    expected = (y != 0).float().mean().item()
    clean = clean_error(net, (x, y), seeds=(0, 1), progress=False)
    assert clean.error == pytest.approx(expected) and clean.std == 0.0
    certified = certified_error(net, (x, y), sr.DigitalLinf(0.3), steps=3, seeds=(0,), progress=False)
    assert certified.error == pytest.approx(expected)
    attacked = attack_error(net, (x, y), EOTPGD(0.3, n_iter=3), [0.3], seeds=(0,), progress=False)
    assert attacked.errors[0].error == pytest.approx(expected)
    s, ys = spikes
    spike_attacked = attack_error(net, (s, ys), GreedyFlip(0.1, n_iter=3), [0.1], seeds=(0,), progress=False)
    assert spike_attacked.clean.error == pytest.approx((ys != 0).float().mean().item())
    assert spike_attacked.errors[0].error == pytest.approx(spike_attacked.clean.error)


def test_zero_eps_spike_certificate_equals_clean_error(net, spikes):
    """With no unstable input the bounds are exact, so verified == correct."""
    clean = clean_error(net, spikes, coding="spike", progress=False)
    certified = certified_error(net, spikes, sr.SpikeL0(0.0), steps=T, seeds=(0,), progress=False)
    assert certified.error == pytest.approx(clean.error)


def test_zero_eps_spike_attack_equals_clean_error(net, spikes):
    result = attack_error(net, spikes, SpikeCompatibleAttack(0.1), [0.0], seeds=(0,), progress=False)
    assert result.errors[0].error == pytest.approx(result.clean.error)


# -- ordering and pairing -----------------------------------------------------------------
@pytest.mark.parametrize("attack", [EOTPGD(0.1, n_iter=4, samples=2), SpikeCompatibleDigitalAttack(0.1, n_iter=4)],
                         ids=["EOTPGD", "SpikeCompatibleDigital"])
def test_attack_error_is_never_below_clean_error_per_seed(net, hard_images, attack):
    result = attack_error(net, hard_images, attack, [0.0, 0.1, 0.3], seeds=(0, 1), eval_samples=2, progress=False)
    assert result.eps == [0.0, 0.1, 0.3]
    assert min(result.clean.per_seed) > 0.1, "the check below needs clean errors"
    for res in result.errors:
        for adv, clean in zip(res.per_seed, result.clean.per_seed):
            assert adv >= clean
    assert result.errors[-1].error >= result.clean.error + 0.3


def test_clean_encodings_match_between_clean_and_attack_error(net, hard_images):
    """Per seed, attack_error's clean side sees the same encodings as clean_error."""
    clean = clean_error(net, hard_images, seeds=(3, 4, 5), eval_samples=2, batch_size=16, progress=False)
    assert len(set(clean.per_seed)) > 1, "seeds should give different encodings and errors"
    attacked = attack_error(net, hard_images, EOTPGD(0.05, n_iter=2), [0.05], seeds=(3, 4, 5), eval_samples=2,
                            batch_size=16, progress=False)
    assert attacked.clean.per_seed == clean.per_seed


def test_certified_error_is_at_least_clean_error_and_grows_with_eps(net, spikes):
    clean = clean_error(net, spikes, coding="spike", progress=False).error
    small = certified_error(net, spikes, sr.SpikeL0(0.02), steps=T, seeds=(0, 1), progress=False)
    large = certified_error(net, spikes, sr.SpikeL0(0.3), steps=T, seeds=(0, 1), progress=False)
    assert clean <= small.error <= large.error
    assert large.error == 1.0
    assert small.details == {"perturbation": "SpikeL0", "eps": 0.02, "steps": T, "method": "best"}


def test_rate_coded_results_are_mean_and_std_over_seeds(net, hard_images):
    x, y = hard_images
    result = certified_error(net, hard_images, sr.DigitalLinf(0.03), steps=3, seeds=(0, 1, 2), progress=False)
    assert result.seeds == [0, 1, 2] and len(result.per_seed) == 3
    assert result.error == pytest.approx(sum(result.per_seed) / 3)
    assert result.std == pytest.approx(torch.tensor(result.per_seed, dtype=torch.float64).std().item())
    assert result.num_samples == x.shape[0]


def test_certified_boxes_are_the_boxes_certified_error_bounds(net, hard_images):
    """Another verifier run on certified_boxes' boxes sees the same coding maps as the
    reported certified error: recomputing it from them gives the same count, per seed."""
    perturbation = sr.DigitalLinf(0.03)
    for seed in (0, 2):
        reported = certified_error(net, hard_images, perturbation, steps=3, method="ibp", seeds=(seed,),
                                   batch_size=20, progress=False)
        unverified, n = 0, 0
        for lower, upper, y in certified_boxes(net, hard_images, perturbation, 3, seed, batch_size=20):
            assert lower.shape[:2] == (3, y.shape[0]) and bool((lower <= upper).all())
            unverified += int((~(sr.compute_bounds(net, lower, upper, labels=y, method="ibp") > 0).all(1)).sum())
            n += y.shape[0]
        assert n == hard_images[1].shape[0]
        assert reported.per_seed == [unverified / n] and 0 < unverified < n
    # another seed, other maps
    a = next(certified_boxes(net, hard_images, perturbation, 3, 0))
    b = next(certified_boxes(net, hard_images, perturbation, 3, 1))
    assert not torch.equal(a[0], b[0])
    # bad arguments raise at the call, before any batch is drawn
    with pytest.raises(ValueError, match="batch_size"):
        certified_boxes(net, hard_images, perturbation, 3, 0, batch_size=0)
    with pytest.raises(TypeError, match="Perturbation"):
        certified_boxes(net, hard_images, 0.03, 3, 0)


# -- data handling, determinism, serialisation ---------------------------------------------
def test_tensors_and_dataloader_agree(net, hard_images, spikes):
    x, y = hard_images
    loader = DataLoader(TensorDataset(x, y), batch_size=16)
    a = clean_error(net, (x, y), batch_size=16, progress=False)
    b = clean_error(net, loader, progress=False)
    assert a.per_seed == b.per_seed and a.error > 0
    s, ys = spikes
    c = certified_error(net, DataLoader(TensorDataset(s, ys), batch_size=10), sr.SpikeL0(0.1), steps=T,
                        seeds=(0,), progress=False)
    d = certified_error(net, (s, ys), sr.SpikeL0(0.1), steps=T, seeds=(0,), batch_size=10, progress=False)
    assert c.per_seed == d.per_seed and 0 < c.error < 1


def test_max_samples_and_batching(net, hard_images):
    x, y = hard_images
    first = clean_error(net, (x[:20], y[:20]), seeds=(0,), batch_size=7, progress=False)
    limited = clean_error(net, (x, y), seeds=(0,), batch_size=7, max_samples=20, progress=False)
    loader = clean_error(net, DataLoader(TensorDataset(x, y), batch_size=7), seeds=(0,), max_samples=20,
                         progress=False)
    assert first.num_samples == limited.num_samples == loader.num_samples == 20
    assert first.per_seed == limited.per_seed == loader.per_seed
    assert first.error > 0


def test_evaluation_is_deterministic_under_seeds(net, images, spikes):
    runs = [attack_error(net, images, SpikeCompatibleDigitalAttack(0.1, n_iter=3), [0.1], seeds=(5,),
                         progress=False) for _ in range(2)]
    assert runs[0].to_dict() == runs[1].to_dict()
    runs = [attack_error(net, spikes, SpikeCompatibleAttack(0.05, n_iter=4), [0.05], seeds=(5,),
                         progress=False) for _ in range(2)]
    assert runs[0].to_dict() == runs[1].to_dict()


def test_coding_objects_and_their_names_agree(net, hard_images, spikes):
    """A coding object gives the result of its name (converted once at the boundary); spike
    frames with ``steps`` score the first ``steps`` frames of each recording."""
    assert clean_error(net, hard_images, coding=RateCoding(T), seeds=(0, 1), progress=False) == clean_error(
        net, hard_images, coding="rate", time_steps=T, seeds=(0, 1), progress=False)
    assert clean_error(net, spikes, coding=SpikeFrames(), progress=False) == clean_error(
        net, spikes, coding="spike", progress=False)
    first = clean_error(net, (spikes[0][:, :3], spikes[1]), coding="spike", progress=False)
    short = clean_error(net, spikes, coding=SpikeFrames(3), progress=False)
    assert short.error == first.error and short.details["coding"] == "spike" and short.details["time_steps"] == 3
    assert first.details["time_steps"] is None
    with pytest.raises(ValueError, match="input_coding='direct'"):
        clean_error(net, hard_images, coding=DirectCoding(T), progress=False)


def test_results_serialise_to_json(net, images, spikes):
    result = attack_error(net, spikes, GreedyFlip(0.05, n_iter=3), [0.02, 0.05], seeds=(0, 1), progress=False)
    assert isinstance(result, AttackResult) and isinstance(result.clean, ErrorResult)
    back = json.loads(json.dumps(result.to_dict()))
    assert back["attack"]["name"] == "GreedyFlip" and back["eps"] == [0.02, 0.05]
    assert "eps" not in back["attack"]  # the template's 0.05 is not a budget of its own
    assert back["clean"]["seeds"] == []  # spike inputs: the clean evaluation is deterministic
    assert back["errors"][1]["seeds"] == [0, 1]
    clean = clean_error(net, images, seeds=(0,), progress=False)
    assert json.loads(json.dumps(clean.to_dict()))["details"]["coding"] == "rate"


def test_progress_bars_can_be_silenced(net, images, capsys):
    clean_error(net, images, seeds=(0,), progress=False)
    certified_error(net, images, sr.DigitalLinf(0.01), steps=2, seeds=(0,), progress=False)
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""


def test_bad_arguments_raise_clear_errors(net, images, spikes):
    with pytest.raises(ValueError, match="coding"):
        clean_error(net, images, coding="poisson", progress=False)
    with pytest.raises(TypeError, match="pair of tensors"):
        clean_error(net, 3, progress=False)
    with pytest.raises(ValueError, match="inputs but"):
        clean_error(net, (images[0], images[1][:5]), progress=False)
    with pytest.raises(ValueError, match="input_coding"):
        clean_error(net, images, coding="direct", progress=False)
    with pytest.raises(TypeError, match="Attack"):
        attack_error(net, images, "pgd", [0.1], progress=False)
    with pytest.raises(TypeError, match="Perturbation"):
        certified_error(net, images, 0.1, progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        clean_error(net, images, batch_size=0, progress=False)
    with pytest.raises(ValueError, match="sample-major"):
        clean_error(net, (spikes[0][:, 0, 0, 0], spikes[1]), coding="spike", progress=False)


def test_direct_coded_network_is_evaluated_once_and_attacked_with_pgd(images):
    net = trained_net(coding="direct", steps=100)
    clean = clean_error(net, images, coding="direct", seeds=(0, 1), progress=False)
    assert clean.seeds == [] and len(clean.per_seed) == 1 and clean.error <= 0.1
    exact = certified_error(net, images, sr.DirectLinf(0.0), steps=4, progress=False)
    assert exact.seeds == [] and exact.error == pytest.approx(
        clean_error(net, images, coding="direct", time_steps=4, progress=False).error)
    pgd = EOTPGD(0.3, n_iter=10, samples=1, surrogate=sr.Rectangular(half_width=2.0))
    attacked = attack_error(net, images, pgd, [0.3], seeds=(0,), progress=False)
    assert attacked.clean.error == pytest.approx(clean.error)
    assert attacked.errors[0].error >= clean.error + 0.3
    with pytest.raises(ValueError, match="EOTPGD"):
        attack_error(net, images, SpikeCompatibleDigitalAttack(0.1), [0.1], seeds=(0,), progress=False)
