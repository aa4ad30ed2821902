"""snn_robust.coding: the coding objects, the old names, and the sets / attacks that use them."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

import snn_robust as sr
from snn_robust.coding import (
    CODING_NAMES,
    DirectCoding,
    RateCoding,
    SpikeFrames,
    as_coding,
    bernoulli_encode,
    image_coding,
    time_major,
)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _net(coding: str) -> sr.SpikingNetwork:
    return sr.SpikingNetwork([nn.Flatten(), nn.Linear(6, 3), sr.LIF()], input_coding=coding)


@given(seed=st.integers(0, 2**31), steps=st.integers(1, 5), batch=st.integers(1, 4))
def test_rate_coding_is_bernoulli_of_the_image(seed, steps, batch):
    """Eq. 4: the same draws as bernoulli_encode, binary, shaped [T, B, X...], and each
    element's spike is [x > rand_t] with rand_t uniform: x = 0 never, x = 1 always fires."""
    x = torch.rand(batch, 2, 3, generator=_gen(seed))
    x[0, 0, 0], x[-1, -1, -1] = 0.0, 1.0
    out = RateCoding(steps).encode(x, _gen(seed + 1))
    assert out.shape == (steps, batch, 2, 3)
    assert torch.equal(out, bernoulli_encode(x, steps, _gen(seed + 1)))
    assert ((out == 0) | (out == 1)).all()
    assert (out[:, 0, 0, 0] == 0).all() and (out[:, -1, -1, -1] == 1).all()


@given(seed=st.integers(0, 2**31), frames=st.integers(1, 5), steps=st.one_of(st.none(), st.integers(1, 5)))
def test_spike_frames_take_the_first_steps_of_time_major_frames(seed, frames, steps):
    data = (torch.rand(3, frames, 2, generator=_gen(seed)) > 0.5).float()  # sample-major, as datasets hold it
    coding = SpikeFrames(steps)
    batch = coding.batch(data)
    assert torch.equal(batch, data.transpose(0, 1)) and torch.equal(time_major(batch), data)
    if steps is not None and steps > frames:
        with pytest.raises(ValueError, match="exceeds"):
            coding.encode(batch)
        return
    assert torch.equal(coding.encode(batch), batch[: frames if steps is None else steps])


@given(seed=st.integers(0, 2**31), steps=st.integers(1, 5))
def test_direct_coding_repeats_the_input(seed, steps):
    x = torch.randn(2, 4, generator=_gen(seed))
    out = DirectCoding(steps).encode(x)
    assert out.shape == (steps, 2, 4) and all(torch.equal(out[t], x) for t in range(steps))
    assert torch.equal(DirectCoding(steps).batch(x), x)


@given(seed=st.integers(0, 2**31), steps=st.integers(1, 4), eps=st.floats(0.0, 1.0))
def test_perturbation_encodings_are_their_codings_and_lie_in_their_bounds(seed, steps, eps):
    """Each set encodes through its coding object, and the clean encoding drawn with the same
    generator state lies between the set's bounds (the sampled certificate covers it)."""
    images = torch.rand(3, 2, 3, generator=_gen(seed))
    frames = (torch.rand(steps + 1, 3, 6, generator=_gen(seed)) > 0.5).float()
    for pert, x, coding in ((sr.DigitalLinf(eps), images, RateCoding(steps)),
                            (sr.DirectLinf(eps), images, DirectCoding(steps)),
                            (sr.SpikeL0(eps), frames, SpikeFrames(steps))):
        assert pert.coding(steps) == coding and pert.input_coding == coding.first_layer
        clean = pert.encode(x, steps, _gen(seed + 1))
        assert torch.equal(clean, coding.encode(x, _gen(seed + 1)))
        lower, upper = pert.bounds(x, steps, _gen(seed + 1))
        assert (lower <= clean).all() and (clean <= upper).all()


def test_names_convert_once_and_objects_pass_through():
    assert CODING_NAMES == ("rate", "spike", "direct")
    assert as_coding("rate", 7) == RateCoding(7) and as_coding("direct", 3) == DirectCoding(3)
    assert as_coding("spike", 7) == SpikeFrames()
    coding = SpikeFrames(2)
    assert as_coding(coding, 9) is coding
    with pytest.raises(ValueError, match="coding must be one of"):
        as_coding("poisson")
    with pytest.raises(ValueError, match="coding must be one of"):
        as_coding(3)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [0, -1, 2.0, True, "3"])
def test_steps_are_checked_by_name(bad):
    for cls in (RateCoding, DirectCoding, SpikeFrames):
        with pytest.raises(ValueError, match=f"{cls.__name__}: steps"):
            cls(bad)


def test_codings_are_frozen_and_hashable():
    coding = RateCoding(4)
    with pytest.raises(AttributeError):
        coding.steps = 5  # type: ignore[misc]
    assert len({RateCoding(4), RateCoding(4), DirectCoding(4)}) == 2


def test_network_first_layer_must_match():
    spike_net, direct_net = _net("spike"), _net("direct")
    assert image_coding(spike_net, 5) == RateCoding(5) and image_coding(direct_net, 5) == DirectCoding(5)
    RateCoding().check_network(spike_net)
    SpikeFrames().check_network(spike_net)
    DirectCoding().check_network(direct_net)
    with pytest.raises(ValueError, match="coding 'direct' needs a network with input_coding='direct'"):
        DirectCoding().check_network(spike_net)
    with pytest.raises(ValueError, match="coding 'rate' needs a network with input_coding='spike'"):
        RateCoding().check_network(direct_net)


def test_time_major_refuses_a_batch_without_a_time_axis():
    with pytest.raises(ValueError, match="sample-major"):
        time_major(torch.zeros(4, 3))


def test_attacks_name_the_coding_their_inputs_are_scored_under():
    spike_net, direct_net = _net("spike"), _net("direct")
    for attack in (sr.EOTPGD(0.1), sr.SpikeCompatibleDigitalAttack(0.1)):
        assert attack.coding(spike_net, 4) == RateCoding(4) and attack.coding(direct_net, 4) == DirectCoding(4)
    for attack in (sr.GreedyFlip(0.1), sr.SpikeCompatibleAttack(0.1)):
        assert attack.coding(spike_net, 4) == SpikeFrames() and attack.input_kind == "spike"
