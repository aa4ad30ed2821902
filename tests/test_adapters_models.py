"""Adapters on models written the way the snnTorch tutorials and SpikingJelly examples
write them: class-based models read by running them once (``example_input``),
BatchNorm, adaptive pooling, Flatten spellings, Dropout.

Each model is checked for: conversion; bit-exact spikes of every neuron layer against the
model's own forward (read with forward hooks, on an input other than the example);
soundness of every bound method against the model's own forward on inputs sampled
inside the bounds; gradients of the certified loss on every parameter of the user's
model. Shapes are tiny; widths only as large as the examples' fixed layer sizes need.
"""
from __future__ import annotations

from copy import deepcopy

import pytest
import torch
import torch.nn.functional as F
from helpers import assert_sound
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import snn_robust as sr
from snn_robust.bounds.graph import bound_op, readout_matrix
from snn_robust.layers import RateReadout, StepBatchNorm

snn = pytest.importorskip("snntorch")
pytest.importorskip("spikingjelly")
from snntorch import surrogate as snn_surrogate  # noqa: E402
from snntorch import utils as snn_utils  # noqa: E402
from spikingjelly.activation_based import functional, layer, neuron, surrogate  # noqa: E402

SJ_NODES = (neuron.IFNode, neuron.LIFNode, neuron.ParametricLIFNode)


# -- reading the user's model ---------------------------------------------------------------
def own_trains(model: nn.Module, run, neuron_types) -> list[torch.Tensor]:
    """Every neuron's spike train ``[T, B, N...]`` in the model's own forward ``run()``
    (hooks on the neurons, in order of first call; one call per step or one per run)."""
    seen: dict[int, list[torch.Tensor]] = {}
    order: list[int] = []

    def hook(mod, args, out):
        if id(mod) not in seen:
            seen[id(mod)] = []
            order.append(id(mod))
        seen[id(mod)].append(out[0] if isinstance(out, tuple) else out)

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, neuron_types)]
    try:
        with torch.no_grad():
            run()
    finally:
        for h in handles:
            h.remove()
    return [seen[k][0] if len(seen[k]) == 1 and seen[k][0].dim() >= 3 and not _per_step(model) else torch.stack(seen[k]) for k in order]


def _per_step(model: nn.Module) -> bool:
    return not any(getattr(m, "step_mode", "s") == "m" for m in model.modules())


def assert_same_spikes(ours: list[torch.Tensor], theirs: list[torch.Tensor]) -> None:
    assert len(ours) == len(theirs)
    for k, (a, b) in enumerate(zip(ours, theirs)):
        assert a.shape == b.shape, (k, a.shape, b.shape)
        assert torch.equal(a, b.to(a.dtype)), f"layer {k}: {int((a != b).sum())} spikes differ"


def assert_every_parameter_gets_gradient(model: nn.Module, loss: torch.Tensor) -> None:
    model.zero_grad()
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"{name} got a zero gradient"


def boost(model: nn.Module, factor: float) -> None:
    """Larger weights, so that the tiny models spike (and the bounds have unstable neurons)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                m.weight.mul_(factor)


def randomize_batchnorm(model: nn.Module, gen: torch.Generator) -> None:
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=gen))
                m.bias.copy_(torch.rand(m.bias.shape, generator=gen) - 0.3)
                m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=gen) * 0.2)
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=gen))


# -- snnTorch tutorial 5: class-based, init_hidden=False, a step loop, direct input --------
NUM_INPUTS, NUM_HIDDEN, NUM_OUTPUTS, NUM_STEPS, BETA = 12, 10, 4, 5, 0.95


class Tutorial5Net(nn.Module):
    """snnTorch tutorial 5's ``Net`` (sizes shrunk)."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(NUM_INPUTS, NUM_HIDDEN)
        self.lif1 = snn.Leaky(beta=BETA)
        self.fc2 = nn.Linear(NUM_HIDDEN, NUM_OUTPUTS)
        self.lif2 = snn.Leaky(beta=BETA)

    def forward(self, x):
        mem1 = self.lif1.init_leaky()
        mem2 = self.lif2.init_leaky()
        spk2_rec = []
        mem2_rec = []
        for step in range(NUM_STEPS):
            cur1 = self.fc1(x)
            spk1, mem1 = self.lif1(cur1, mem1)
            cur2 = self.fc2(spk1)
            spk2, mem2 = self.lif2(cur2, mem2)
            spk2_rec.append(spk2)
            mem2_rec.append(mem2)
        return torch.stack(spk2_rec, dim=0), torch.stack(mem2_rec, dim=0)


def test_tutorial5_net_converts_exactly_bounds_soundly_and_trains():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    model = Tutorial5Net()
    boost(model, 3.0)
    example = torch.rand(2, NUM_INPUTS, generator=gen)
    net = sr.from_snntorch(model, example_input=example)
    assert net.input_coding == "direct" and net.layer_names == ["model.fc1", "model.lif1", "model.fc2", "model.lif2"]
    assert {id(p) for p in net.parameters()} >= {id(p) for p in model.parameters()}

    x = torch.rand(3, NUM_INPUTS, generator=gen)
    seq = x.expand(NUM_STEPS, *x.shape)
    assert_same_spikes(net.simulate(seq), own_trains(model, lambda: model(x), snn.Leaky))

    labels = torch.tensor([0, 1, 3])
    lower, upper = seq - 0.05, seq + 0.05
    # the model takes one analog input for all steps: its first step's sample is a point of the box
    assert_sound(lambda z: model(z[0])[0].mean(0), net, lower, upper, labels, samples=12, gen=gen, binary=False)

    loss = sr.certified_loss(net, x, labels, sr.DirectLinf(0.05), steps=NUM_STEPS)
    assert_every_parameter_gets_gradient(model, loss)


def test_tutorial5_net_given_no_example_asks_for_one():
    with pytest.raises(sr.UnsupportedLayerError, match=r"model \(Tutorial5Net\) is not an nn.Sequential.*example_input"):
        sr.from_snntorch(Tutorial5Net())


def test_class_model_with_an_unsupported_neuron_names_it_before_asking_for_an_example():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(4, 3)
            self.syn1 = snn.Synaptic(alpha=0.9, beta=0.8)

    with pytest.raises(sr.UnsupportedLayerError, match=r"model\.syn1 \(snntorch\.Synaptic\)"):
        sr.from_snntorch(Net())


# -- snnTorch: class-based CNN, init_hidden=True, BatchNorm, Flatten(1, 3), Dropout --------
class ConvBNNet(nn.Module):
    """A class-based snnTorch CNN with BatchNorm (as the SAE tutorial's encoder), spike
    input ``[T, B, 1, 8, 8]`` run step by step, the last ``Leaky`` with ``output=True``."""

    def __init__(self):
        super().__init__()
        spike_grad = snn_surrogate.fast_sigmoid(slope=25)
        self.conv1 = nn.Conv2d(1, 3, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(3)
        self.lif1 = snn.Leaky(beta=0.8, spike_grad=spike_grad, init_hidden=True)
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.flat = nn.Flatten(1, 3)
        self.drop = nn.Dropout(0.25)
        self.fc = nn.Linear(3 * 4 * 4, 4)
        self.bn2 = nn.BatchNorm1d(4)
        self.lif2 = snn.Leaky(beta=0.8, spike_grad=spike_grad, init_hidden=True, output=True)

    def forward(self, x):
        snn_utils.reset(self)
        spk_rec = []
        for step in range(x.size(0)):
            cur1 = self.bn1(self.conv1(x[step]))
            spk1 = self.lif1(cur1)
            cur2 = self.bn2(self.fc(self.drop(self.flat(self.pool(spk1)))))
            spk2, mem2 = self.lif2(cur2)
            spk_rec.append(spk2)
        return torch.stack(spk_rec)


def test_snntorch_conv_batchnorm_net_eval_converts_exactly_bounds_soundly_and_trains():
    torch.manual_seed(1)
    gen = torch.Generator().manual_seed(1)
    model = ConvBNNet()
    boost(model, 2.0)
    randomize_batchnorm(model, gen)
    model.eval()
    example = torch.rand(4, 2, 1, 8, 8, generator=gen).bernoulli(generator=gen)
    net = sr.from_snntorch(model, example_input=example)
    assert net.input_coding == "spike"
    assert [type(layer).__name__ for layer in net.layers] == [
        "Conv2d", "StepBatchNorm", "SnnTorchLeaky", "AdaptiveAvgPool2d", "SampleFlatten", "Linear", "StepBatchNorm", "SnnTorchLeaky"
    ]
    x = torch.rand(4, 3, 1, 8, 8, generator=gen).bernoulli(generator=gen)
    assert_same_spikes(net.simulate(x), own_trains(model, lambda: model(x), snn.Leaky))

    labels = torch.tensor([0, 2, 3])
    lower, upper = sr.SpikeL0(0.05).bounds(x, 4, gen)
    assert_sound(lambda z: model(z).mean(0), net, lower, upper, labels, samples=12, gen=gen)

    loss = sr.certified_loss(net, x, labels, sr.SpikeL0(0.05), steps=4, generator=gen)
    assert_every_parameter_gets_gradient(model, loss)


def test_snntorch_batchnorm_in_train_mode_matches_per_step_statistics_and_restores_running_stats():
    gen = torch.Generator().manual_seed(2)
    model = ConvBNNet()
    model.drop.p = 0.0  # dropout in training mode is refused; p=0 is the identity
    boost(model, 2.0)
    before = model.bn1.running_mean.clone(), model.bn1.num_batches_tracked.clone()
    example = torch.rand(3, 4, 1, 8, 8, generator=gen).bernoulli(generator=gen)
    net = sr.from_snntorch(model, example_input=example)
    # the conversion's runs leave no trace in the user's model
    assert torch.equal(model.bn1.running_mean, before[0]) and torch.equal(model.bn1.num_batches_tracked, before[1])
    x = torch.rand(3, 4, 1, 8, 8, generator=gen).bernoulli(generator=gen)
    theirs = own_trains(model, lambda: model(x), snn.Leaky)
    after_theirs = model.bn1.running_mean.clone()
    model.bn1.running_mean.copy_(before[0])
    model.bn1.num_batches_tracked.copy_(before[1])
    model.bn2.reset_running_stats()
    ours = net.simulate(x)
    assert_same_spikes(ours, theirs)
    assert torch.equal(model.bn1.running_mean, after_theirs)  # the same T running-statistics updates


def test_dropout_in_training_mode_is_refused_with_the_fix():
    model = ConvBNNet()  # training mode, p = 0.25
    example = torch.zeros(2, 2, 1, 8, 8)
    with pytest.raises(ValueError, match=r"model\.drop \(nn\.Dropout, p=0\.25\) is in training mode.*model\.eval\(\)"):
        sr.from_snntorch(model, example_input=example)


# -- SpikingJelly examples ----------------------------------------------------------------
class LifFcSNN(nn.Module):
    """SpikingJelly's ``examples/lif_fc_mnist.py`` ``SNN`` (single-step, called once per step)."""

    def __init__(self, tau):
        super().__init__()
        self.layer = nn.Sequential(
            layer.Flatten(),
            layer.Linear(28 * 28, 10, bias=False),
            neuron.LIFNode(tau=tau, surrogate_function=surrogate.ATan()),
        )

    def forward(self, x: torch.Tensor):
        return self.layer(x)


def test_lif_fc_mnist_snn_converts_exactly_and_bounds_soundly():
    torch.manual_seed(3)
    gen = torch.Generator().manual_seed(3)
    model = LifFcSNN(tau=2.0)
    boost(model, 8.0)
    example = torch.rand(2, 1, 28, 28, generator=gen).bernoulli(generator=gen)  # one Poisson-encoded step
    net = sr.from_spikingjelly(model, example_input=example)
    assert net.input_coding == "spike" and net.layer_names[-1] == "model.layer.2"

    images = torch.rand(3, 1, 28, 28, generator=gen)
    x = sr.bernoulli_encode(images, 4, gen)

    def loop():  # the example's own evaluation loop: one call per step
        functional.reset_net(model)
        return torch.stack([model(x[t]) for t in range(x.shape[0])])

    assert_same_spikes(net.simulate(x), own_trains(model, loop, SJ_NODES))

    def rates(z):
        functional.reset_net(model)
        return torch.stack([model(z[t]) for t in range(z.shape[0])]).mean(0)

    labels = torch.tensor([1, 7, 9])
    lower, upper = sr.DigitalLinf(0.05).bounds(images, 3, gen)
    assert_sound(rates, net, lower, upper, labels, samples=10, gen=gen)
    loss = sr.certified_loss(net, images, labels, sr.DigitalLinf(0.05), steps=3, generator=gen)
    assert_every_parameter_gets_gradient(model, loss)


class CSNN(nn.Module):
    """SpikingJelly's ``examples/conv_fashion_mnist.py`` ``CSNN`` (multi-step, BatchNorm,
    the image repeated over ``T``: direct coding)."""

    def __init__(self, T: int, channels: int, use_cupy=False):
        super().__init__()
        self.T = T

        self.conv_fc = nn.Sequential(
            layer.Conv2d(1, channels, kernel_size=3, padding=1, bias=False),
            layer.BatchNorm2d(channels),
            neuron.IFNode(surrogate_function=surrogate.ATan()),
            layer.MaxPool2d(2, 2),  # 14 * 14

            layer.Conv2d(channels, channels, kernel_size=3, padding=1, bias=False),
            layer.BatchNorm2d(channels),
            neuron.IFNode(surrogate_function=surrogate.ATan()),
            layer.MaxPool2d(2, 2),  # 7 * 7

            layer.Flatten(),
            layer.Linear(channels * 7 * 7, channels * 4 * 4, bias=False),
            neuron.IFNode(surrogate_function=surrogate.ATan()),

            layer.Linear(channels * 4 * 4, 10, bias=False),
            neuron.IFNode(surrogate_function=surrogate.ATan()),
        )

        functional.set_step_mode(self, step_mode='m')

    def forward(self, x: torch.Tensor):
        # x.shape = [N, C, H, W]
        x_seq = x.unsqueeze(0).repeat(self.T, 1, 1, 1, 1)  # [N, C, H, W] -> [T, N, C, H, W]
        x_seq = self.conv_fc(x_seq)
        fr = x_seq.mean(0)
        return fr


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_csnn_converts_exactly_bounds_soundly_and_trains(training):
    torch.manual_seed(4)
    gen = torch.Generator().manual_seed(4)
    model = CSNN(T=3, channels=2)
    boost(model, 1.5)
    randomize_batchnorm(model, gen)
    model.train(training)
    net = sr.from_spikingjelly(model, example_input=torch.rand(2, 1, 28, 28, generator=gen))
    assert net.input_coding == "direct"
    assert sum(isinstance(layer_, StepBatchNorm) and not layer_.per_step for layer_ in net.layers) == 2

    images = torch.rand(3, 1, 28, 28, generator=gen)
    seq = images.expand(3, *images.shape)
    labels = torch.tensor([2, 5, 8])
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    theirs = own_trains(model, lambda: (functional.reset_net(model), model(images)), SJ_NODES)
    model.load_state_dict(saved)  # the same running statistics before our forward
    assert_same_spikes(net.simulate(seq), theirs)

    if training:
        # the bound uses the clean batch's statistics as constants (net.simulate recorded them):
        # it bounds the model evaluated with those statistics
        reference = CSNN(T=3, channels=2)
        reference.load_state_dict(model.state_dict())
        for ours_bn, ref_bn in zip(
            [m for m in net.layers if isinstance(m, StepBatchNorm)],
            [m for m in reference.modules() if isinstance(m, nn.BatchNorm2d)],
        ):
            ref_bn.running_mean.copy_(ours_bn.clean_stats[0])
            ref_bn.running_var.copy_(ours_bn.clean_stats[1])
        reference.eval()
    else:
        reference = model

    def rates(z):
        functional.reset_net(reference)
        return reference.conv_fc(z).mean(0)

    lower, upper = seq - 0.02, seq + 0.02
    methods = ("ibp", "crown-ibp", "crown-ibp-adaptive")
    assert_sound(rates, net, lower, upper, labels, samples=6, gen=gen, binary=False, methods=methods)

    net(seq)  # the clean forward of the training step
    loss = sr.certified_loss(net, images, labels, sr.DirectLinf(0.02), steps=3)
    assert_every_parameter_gets_gradient(model, loss)


def test_batchnorm_in_train_mode_without_a_clean_forward_says_what_to_do():
    model = CSNN(T=2, channels=2)
    net = sr.from_spikingjelly(model, example_input=torch.rand(2, 1, 28, 28))
    seq = torch.rand(2, 2, 1, 28, 28)
    with pytest.raises(ValueError, match=r"model\.conv_fc\.1 .*run the network on the clean batch first"):
        sr.compute_bounds(net, seq, seq + 0.01)


# -- refusals of forwards that are not a chain ------------------------------------------------
class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(4, 4)
        self.lif1 = snn.Leaky(beta=0.9, init_hidden=True)
        self.fc2 = nn.Linear(4, 4)
        self.lif2 = snn.Leaky(beta=0.9, init_hidden=True)

    def forward(self, x):
        out = []
        for step in range(x.shape[0]):
            s1 = self.lif1(self.fc1(x[step]))
            out.append(self.lif2(self.fc2(s1) + x[step]))
        return torch.stack(out)


class FunctionalPool(nn.Module):
    """snnTorch tutorial 6's class-based CNN pools with ``F.max_pool2d`` (not a module)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 2, 3)
        self.lif1 = snn.Leaky(beta=0.5)
        self.fc1 = nn.Linear(2 * 3 * 3, 3)
        self.lif2 = snn.Leaky(beta=0.5)

    def forward(self, x):
        mem1, mem2 = self.lif1.init_leaky(), self.lif2.init_leaky()
        out = []
        for step in range(2):
            cur1 = F.max_pool2d(self.conv1(x), 2)
            spk1, mem1 = self.lif1(cur1, mem1)
            cur2 = self.fc1(spk1.view(x.shape[0], -1))
            spk2, mem2 = self.lif2(cur2, mem2)
            out.append(spk2)
        return torch.stack(out)


class PresetMembrane(nn.Module):
    """A SpikingJelly model whose forward starts its node from a non-zero membrane."""

    def __init__(self):
        super().__init__()
        self.fc = layer.Linear(4, 3)
        self.sn = neuron.IFNode()

    def forward(self, x):
        self.sn.v = torch.full((x.shape[0], 3), 0.9)
        return self.sn(self.fc(x))


def test_forward_that_is_not_a_chain_is_refused_with_both_paths():
    with pytest.raises(sr.UnsupportedLayerError, match=r"model\.lif2 .*does not take the output of model\.fc2"):
        sr.from_snntorch(Residual(), example_input=torch.ones(2, 3, 4))
    with pytest.raises(sr.UnsupportedLayerError, match=r"model\.lif1 .*does not take the output of model\.conv1"):
        sr.from_snntorch(FunctionalPool(), example_input=torch.ones(2, 1, 8, 8))


def test_view_to_batch_by_features_between_layers_is_a_flatten():
    class ViewNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 2, 3)
            self.lif1 = snn.Leaky(beta=0.5)
            self.fc1 = nn.Linear(2 * 6 * 6, 3)
            self.lif2 = snn.Leaky(beta=0.5)

        def forward(self, x):
            mem1, mem2 = self.lif1.init_leaky(), self.lif2.init_leaky()
            out = []
            for step in range(3):
                spk1, mem1 = self.lif1(self.conv1(x), mem1)
                spk2, mem2 = self.lif2(self.fc1(spk1.view(x.shape[0], -1)), mem2)
                out.append(spk2)
            return torch.stack(out)

    model = ViewNet()
    boost(model, 3.0)
    x = torch.rand(2, 1, 8, 8)
    net = sr.from_snntorch(model, example_input=x)
    assert net.layer_names[2] == "model.forward (flatten before model.fc1)"
    assert_same_spikes(net.simulate(x.expand(3, *x.shape)), own_trains(model, lambda: model(x), snn.Leaky))


def test_spikes_that_differ_from_the_model_are_refused():
    with pytest.raises(ValueError, match=r"model\.sn .*differ from model's own forward"):
        sr.from_spikingjelly(PresetMembrane(), example_input=torch.ones(2, 4))


def test_membrane_not_carried_between_steps_is_refused():
    class Forgetful(Tutorial5Net):
        def forward(self, x):
            out = []
            for step in range(3):
                spk1, _ = self.lif1(self.fc1(x), self.lif1.init_leaky())
                spk2, _ = self.lif2(self.fc2(spk1), self.lif2.init_leaky())
                out.append(spk2)
            return torch.stack(out)

    with pytest.raises(ValueError, match=r"model\.lif1 .*step 1 a membrane"):
        sr.from_snntorch(Forgetful(), example_input=torch.ones(2, NUM_INPUTS))


# -- smaller layers -----------------------------------------------------------------------------
def test_flatten_spellings_that_flatten_the_sample_are_accepted():
    for flat in (nn.Flatten(1, 3), nn.Flatten(start_dim=1, end_dim=-1), nn.Flatten(-3, -1)):
        model = nn.Sequential(nn.Conv2d(1, 2, 3), flat, nn.Linear(2 * 2 * 2, 3), snn.Leaky(0.5, init_hidden=True))
        net = sr.from_snntorch(model)
        assert net(torch.ones(2, 3, 1, 4, 4)).shape == (3, 3)
    bad = sr.from_snntorch(nn.Sequential(nn.Flatten(1, 2), nn.Linear(4, 3), snn.Leaky(0.5, init_hidden=True)))
    with pytest.raises(ValueError, match=r"model\.0 \(nn\.Flatten\(start_dim=1, end_dim=2\)\).*nn\.Flatten\(\)"):
        bad(torch.ones(2, 3, 1, 2, 2))


def test_adaptive_pool_that_is_not_an_average_pool_is_refused_in_the_bounds():
    model = nn.Sequential(nn.AdaptiveAvgPool2d(3), nn.Flatten(), nn.Linear(9, 2), snn.Leaky(0.5, init_hidden=True))
    net = sr.from_snntorch(model)
    x = torch.ones(2, 1, 1, 4, 4)
    with pytest.raises(sr.UnsupportedLayerError, match=r"model\.0 \(AdaptiveAvgPool2d\).*does not divide"):
        sr.compute_bounds(net, x, x)


def test_spike_coding_of_count_frames_is_refused_with_the_binarization():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2), snn.Leaky(0.5, init_hidden=True))
    frames = torch.tensor([[[0.0, 2.0, 1.0, 3.0]]])  # one step of a tonic ToFrame count frame
    with pytest.raises(ValueError, match=r"ToFrame.*\(frames > 0\)\.float\(\)"):
        sr.from_snntorch(model, example_input=frames[0], input_coding="spike")


class MNISTNet(nn.Module):
    """SpikingJelly's ``activation_based/model/parametric_lif_net.py`` ``MNISTNet``
    (PLIF, BatchNorm, Dropout, a ``VotingLayer`` readout)."""

    def __init__(self, channels=128, spiking_neuron: callable = None, **kwargs):
        super().__init__()

        self.conv_fc = nn.Sequential(
            layer.Conv2d(1, channels, kernel_size=3, padding=1, bias=False),
            layer.BatchNorm2d(channels),
            spiking_neuron(**deepcopy(kwargs)),
            layer.MaxPool2d(2, 2),

            layer.Conv2d(channels, channels, kernel_size=3, padding=1, bias=False),
            layer.BatchNorm2d(channels),
            spiking_neuron(**deepcopy(kwargs)),
            layer.MaxPool2d(2, 2),

            layer.Flatten(),
            layer.Dropout(0.5),
            layer.Linear(channels * 7 * 7, 2048),
            spiking_neuron(**deepcopy(kwargs)),
            layer.Dropout(0.5),
            layer.Linear(2048, 100),
            spiking_neuron(**deepcopy(kwargs)),
            layer.VotingLayer()
        )

    def forward(self, x: torch.Tensor):
        return self.conv_fc(x)


def test_mnistnet_with_its_voting_readout_converts_exactly_bounds_soundly_and_trains():
    torch.manual_seed(5)
    gen = torch.Generator().manual_seed(5)
    model = MNISTNet(channels=2, spiking_neuron=neuron.ParametricLIFNode, surrogate_function=surrogate.ATan(), detach_reset=True)
    functional.set_step_mode(model, "m")
    boost(model, 8.0)
    randomize_batchnorm(model, gen)
    model.eval()
    x = torch.rand(3, 2, 1, 28, 28, generator=gen).bernoulli(generator=gen)
    net = sr.from_spikingjelly(model, example_input=x)
    assert net.readout is not None and net.readout.group == 10 and net.num_classes == 10

    x2 = torch.rand(3, 2, 1, 28, 28, generator=gen).bernoulli(generator=gen)
    theirs = own_trains(model, lambda: (functional.reset_net(model), model(x2)), SJ_NODES)
    assert_same_spikes(net.simulate(x2), theirs)

    def scores(z):  # the model's own output: the voting layer's class scores, averaged over the steps
        functional.reset_net(model)
        return model(z).mean(0)

    torch.testing.assert_close(net(x2), scores(x2))
    labels = torch.tensor([3, 9])
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 9\] for a network with 10 classes"):
        sr.compute_bounds(net, x2[:2], x2[:2], torch.tensor([3, 42]))  # a neuron index is not a class
    lower, upper = sr.SpikeL0(0.01).bounds(x2, 2, gen)
    assert_sound(scores, net, lower, upper, labels, samples=4, gen=gen, methods=("ibp", "crown-ibp"))

    # certified fine-tuning in eval mode (running statistics, dropout off)
    loss = sr.certified_loss(net, x2, labels, sr.SpikeL0(0.01), steps=2, generator=gen)
    assert_every_parameter_gets_gradient(model, loss)


def test_linear_readout_averaged_over_time_converts_and_bounds_soundly():
    """A multi-step model whose last layer is an nn.Linear after the last node, its output
    averaged over time by the forward (SpikingJelly's spiking_vgg classifiers)."""

    class Classifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(layer.Flatten(), layer.Linear(16, 12), neuron.LIFNode(tau=2.0))
            self.classifier = layer.Linear(12, 4)
            functional.set_step_mode(self, "m")

        def forward(self, x):
            return self.classifier(self.features(x)).mean(0)

    torch.manual_seed(7)
    gen = torch.Generator().manual_seed(7)
    model = Classifier()
    boost(model, 4.0)
    x = torch.rand(4, 3, 1, 4, 4, generator=gen).bernoulli(generator=gen)
    net = sr.from_spikingjelly(model, example_input=x)
    assert net.readout.kind == "linear" and net.readout.linear.weight is model.classifier.weight

    def scores(z):
        functional.reset_net(model)
        return model(z)

    labels = torch.tensor([0, 1, 3])
    lower, upper = sr.SpikeL0(0.1).bounds(x, 4, gen)
    assert_sound(scores, net, lower, upper, labels, samples=10, gen=gen)
    loss = sr.certified_loss(net, x, labels, sr.SpikeL0(0.1), steps=4, generator=gen)
    assert_every_parameter_gets_gradient(model, loss)


class ConvHeadSNN(nn.Module):
    """A multi-step SpikingJelly CNN with a convolutional classifier after the last node
    (fully convolutional, as the ``spiking_resnet`` / ``spiking_vgg`` heads end in pooling
    and a classifier): average pool, a ``Conv2d`` to one map per class, global average
    pool, flatten; the forward averages the class scores over time."""

    def __init__(self, channels: int = 3, classes: int = 4):
        super().__init__()
        self.features = nn.Sequential(
            layer.Conv2d(1, channels, kernel_size=3, padding=1),
            layer.BatchNorm2d(channels),
            neuron.LIFNode(tau=2.0, surrogate_function=surrogate.ATan()),
            layer.AvgPool2d(2),
        )
        self.classifier = nn.Sequential(
            layer.Conv2d(channels, classes, kernel_size=1),
            layer.AdaptiveAvgPool2d(1),
            layer.Flatten(),
        )
        functional.set_step_mode(self, "m")

    def forward(self, x: torch.Tensor):
        return self.classifier(self.features(x)).mean(0)  # x: [T, B, 1, H, W] spikes


def test_conv_classifier_head_averaged_over_time_converts_and_bounds_soundly():
    torch.manual_seed(9)
    gen = torch.Generator().manual_seed(9)
    model = ConvHeadSNN()
    boost(model, 3.0)
    randomize_batchnorm(model, gen)
    model.eval()
    x = torch.rand(3, 2, 1, 6, 6, generator=gen).bernoulli(generator=gen)
    net = sr.from_spikingjelly(model, example_input=x)
    readout = net.readout
    assert readout.kind == "linear" and readout.grid() is None
    assert [type(m).__name__ for m in readout.layers] == ["AvgPool2d", "Conv2d", "AdaptiveAvgPool2d", "Flatten"]
    assert readout.layers[1].weight is model.classifier[0].weight  # the user's Parameters, shared
    assert readout.names[0] == "model.features.3"  # paths in the user's model

    x2 = torch.rand(3, 3, 1, 6, 6, generator=gen).bernoulli(generator=gen)
    theirs = own_trains(model, lambda: (functional.reset_net(model), model(x2)), SJ_NODES)
    assert_same_spikes(net.simulate(x2), theirs)

    def scores(z):  # the model's own class scores
        functional.reset_net(model)
        return model(z)

    torch.testing.assert_close(net(x2), scores(x2))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\] for a network with 4 classes \(the readout's\)"):
        sr.compute_bounds(net, x2, x2, torch.tensor([0, 1, 12]))  # a neuron index, not a class
    labels = torch.tensor([0, 2, 3])
    lower, upper = sr.SpikeL0(0.1).bounds(x2, 3, gen)
    assert_sound(scores, net, lower, upper, labels, samples=8, gen=gen)
    with torch.no_grad():  # at a point input every method is within the rounding tolerance of the true margins
        spec = sr.margin_spec(labels, 4)
        exact = (spec * scores(x2).unsqueeze(1)).sum(-1)
        for method in sr.METHODS:
            lb = sr.compute_bounds(net, x2, x2, labels, method=method)
            assert (lb <= exact + 1e-5).all() and (lb >= exact - 1e-2).all(), method

    loss = sr.certified_loss(net, x2, labels, sr.SpikeL0(0.1), steps=3, method="crown-ibp", generator=gen)
    assert_every_parameter_gets_gradient(model, loss)


class SnnTorchConvHead(nn.Module):
    """snnTorch tutorial-5 style (``init_hidden=False``, a step loop, the same image each
    step) with a ``Conv2d`` head on the last spikes, flattened in the forward: each step's
    class scores, stacked; the caller averages them over the steps."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 3, 3)
        self.lif1 = snn.Leaky(beta=0.8)
        self.head = nn.Conv2d(3, 4, kernel_size=4)  # the whole 4x4 map -> one score per class

    def forward(self, x):
        mem1 = self.lif1.init_leaky()
        out = []
        for step in range(NUM_STEPS):
            spk1, mem1 = self.lif1(self.conv1(x), mem1)
            out.append(self.head(spk1).flatten(1))
        return torch.stack(out)


def test_snntorch_conv_head_flattened_in_the_forward_is_a_direct_coded_readout():
    torch.manual_seed(10)
    gen = torch.Generator().manual_seed(10)
    model = SnnTorchConvHead()
    boost(model, 2.0)
    images = torch.rand(2, 1, 6, 6, generator=gen)
    net = sr.from_snntorch(model, example_input=images)
    assert net.input_coding == "direct" and net.readout.linear is model.head

    images2 = torch.rand(3, 1, 6, 6, generator=gen)
    seq = images2.expand(NUM_STEPS, *images2.shape)
    theirs = own_trains(model, lambda: model(images2), (snn.Leaky,))
    assert_same_spikes(net.simulate(seq), theirs)

    def scores(z):  # the model's own step loop on z[t]; its class scores averaged over the steps
        mem1 = model.lif1.init_leaky()
        out = []
        for t in range(z.shape[0]):
            spk1, mem1 = model.lif1(model.conv1(z[t]), mem1)
            out.append(model.head(spk1).flatten(1))
        return torch.stack(out).mean(0)

    torch.testing.assert_close(net(seq), model(images2).mean(0))
    labels = torch.tensor([1, 0, 3])
    lower, upper = seq - 0.03, seq + 0.03
    assert_sound(scores, net, lower, upper, labels, samples=6, gen=gen, binary=False)
    loss = sr.certified_loss(net, images2, labels, sr.DirectLinf(0.03), steps=NUM_STEPS, method="crown-ibp")
    assert_every_parameter_gets_gradient(model, loss)


def test_max_pool_after_the_last_spiking_layer_is_refused_as_not_a_readout():
    model = nn.Sequential(
        nn.Conv2d(1, 2, 3), snn.Leaky(0.5, init_hidden=True), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(2, 3)
    )
    with pytest.raises(ValueError, match=r"model\.2 \(nn\.MaxPool2d\) after it is not affine per step"):
        sr.from_snntorch(model)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), stride=st.integers(1, 2), pool=st.booleans())
def test_readout_matrix_is_the_affine_chain(seed, stride, pool):
    """``W rate + b`` from the chain's transposes equals the chain run on the rates, and
    W, b carry gradients to every Parameter of the chain."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    chain = [nn.Conv2d(2, 3, 3, stride=stride, padding=1)] + ([nn.AvgPool2d(2)] if pool else []) + [nn.Flatten()]
    readout = RateReadout("linear", chain)
    rates = torch.rand(4, 2, 6, 7, generator=gen)
    W, b = readout_matrix(readout, (2, 6, 7), rates)
    torch.testing.assert_close(rates.flatten(1) @ W.T + b, readout(rates), rtol=1e-5, atol=1e-5)
    (W.sum() + b.sum()).backward()
    assert chain[0].weight.grad.abs().sum() > 0 and chain[0].bias.grad.abs().sum() > 0


# -- the bound operators on their own (property-based) ----------------------------------------
@settings(max_examples=30)
@given(
    seed=st.integers(0, 2**31 - 1),
    kind=st.sampled_from(["bn1d", "bn1d_seq", "bn2d"]),
    affine=st.booleans(),
    training=st.booleans(),
)
def test_batchnorm_op_interval_and_backward_hold_for_the_torch_module(seed, kind, affine, training):
    """For the statistics the op uses (running ones in eval, the recorded clean ones in
    train), torch's own BatchNorm on any point of the box lies in the interval and above
    the backward linear bound; gradients reach weight and bias."""
    gen = torch.Generator().manual_seed(seed)
    C = 3
    bn = nn.BatchNorm2d(C, affine=affine) if kind == "bn2d" else nn.BatchNorm1d(C, affine=affine)
    shape = {"bn1d": (C,), "bn1d_seq": (C, 4), "bn2d": (C, 3, 3)}[kind]
    with torch.no_grad():
        if affine:
            bn.weight.copy_(torch.randn(C, generator=gen) * 2)  # negative scales too
            bn.bias.copy_(torch.randn(C, generator=gen))
        bn.running_mean.copy_(torch.randn(C, generator=gen))
        bn.running_var.copy_(torch.rand(C, generator=gen) * 3 + 0.01)
    twin = StepBatchNorm(bn, per_step=bool(seed % 2))
    op = bound_op(twin, "bn")
    bn.train(training)
    if training:
        twin.forward_time(torch.randn(2, 4, *shape, generator=gen) * 2 + 1)  # the clean batch
        mean, var = twin.clean_stats
    else:
        mean, var = bn.running_mean, bn.running_var
    reference = nn.BatchNorm2d(C, affine=affine) if kind == "bn2d" else nn.BatchNorm1d(C, affine=affine)
    reference.load_state_dict(bn.state_dict())
    with torch.no_grad():
        reference.running_mean.copy_(mean)
        reference.running_var.copy_(var)
    reference.eval()

    centre = torch.randn(5, *shape, generator=gen)
    rad = torch.rand(5, *shape, generator=gen)
    l, u = centre - rad, centre + rad
    lo, hi = op.interval(l, u)
    err = op.rounding_error(l, u)
    A = torch.randn(5, 2, *shape, generator=gen)
    A_in, bias = op.backward(A, l, u)
    for _ in range(20):
        x = l + torch.rand(l.shape, generator=gen) * (u - l)
        with torch.no_grad():
            y = reference(x)
        assert (y >= lo - err).all() and (y <= hi + err).all()
        lhs = (A * y.unsqueeze(1)).flatten(2).sum(-1)
        rhs = (A_in * x.unsqueeze(1)).flatten(2).sum(-1) + bias
        torch.testing.assert_close(lhs, rhs, atol=1e-4, rtol=1e-4)  # an affine map: exact
    if affine:
        (lo.sum() + hi.sum() + bias.sum()).backward()
        assert bn.weight.grad is not None and bn.bias.grad is not None


@settings(max_examples=20)
@given(seed=st.integers(0, 2**31 - 1), out=st.sampled_from([1, 2, (1, 3), (2, None)]))
def test_adaptive_avg_pool_op_equals_the_average_pool_it_is(seed, out):
    gen = torch.Generator().manual_seed(seed)
    pool = nn.AdaptiveAvgPool2d(out)
    op = bound_op(pool, "pool")
    l = torch.randn(3, 2, 6, 6, generator=gen)
    u = l + torch.rand(l.shape, generator=gen)
    lo, hi = op.interval(l, u)
    A = torch.randn(3, 4, *pool(l).shape[1:], generator=gen)
    A_in, bias = op.backward(A, l, u)
    for _ in range(10):
        x = l + torch.rand(l.shape, generator=gen) * (u - l)
        y = pool(x)
        assert (y >= lo - 1e-5).all() and (y <= hi + 1e-5).all()
        lhs = (A * y.unsqueeze(1)).flatten(2).sum(-1)
        rhs = (A_in * x.unsqueeze(1)).flatten(2).sum(-1) + bias
        torch.testing.assert_close(lhs, rhs, atol=1e-4, rtol=1e-4)


class SingleStepLoop(nn.Module):
    """A SpikingJelly single-step model whose forward runs the steps itself (spike input
    ``[T, B, 1, 6, 6]``), with a torch BatchNorm2d and Dropout inside."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.bn = nn.BatchNorm2d(2)
        self.sn1 = neuron.LIFNode(tau=2.0, surrogate_function=surrogate.ATan())
        self.flat = layer.Flatten()
        self.drop = layer.Dropout(0.3)
        self.fc = layer.Linear(2 * 4 * 4, 3)
        self.sn2 = neuron.IFNode(v_reset=None, surrogate_function=surrogate.ATan())

    def forward(self, x):
        out = []
        for t in range(x.shape[0]):
            out.append(self.sn2(self.fc(self.drop(self.flat(self.sn1(self.bn(self.conv(x[t]))))))))
        return torch.stack(out)


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_single_step_spikingjelly_class_with_its_own_loop(training):
    torch.manual_seed(6)
    gen = torch.Generator().manual_seed(6)
    model = SingleStepLoop()
    boost(model, 3.0)
    randomize_batchnorm(model, gen)
    model.eval()
    if training:
        model.bn.train()  # batch statistics per step, as the model's loop computes them
    x = torch.rand(4, 3, 1, 6, 6, generator=gen).bernoulli(generator=gen)
    net = sr.from_spikingjelly(model, example_input=x)
    assert net.input_coding == "spike" and [n for n in net.layer_names if "bn" in n] == ["model.bn"]
    assert net.layers[1].per_step
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    theirs = own_trains(model, lambda: (functional.reset_net(model), model(x)), SJ_NODES)
    after = model.bn.running_mean.clone()
    model.load_state_dict(saved)
    assert_same_spikes(net.simulate(x), theirs)
    assert torch.equal(model.bn.running_mean, after)

    model.eval()
    labels = torch.tensor([0, 1, 2])
    lower, upper = sr.SpikeL0(0.1).bounds(x, 3, gen)

    def rates(z):
        functional.reset_net(model)
        return model(z).mean(0)

    assert_sound(rates, net, lower, upper, labels, samples=8, gen=gen)


def test_snntorch_population_coding_net_takes_its_class_count_from_the_readout():
    """snnTorch's population-coding tutorial net (500 output neurons, 10 classes)."""
    torch.manual_seed(8)
    gen = torch.Generator().manual_seed(8)
    spike_grad = snn_surrogate.fast_sigmoid(slope=25)
    beta = 0.5
    model = nn.Sequential(
        nn.Flatten(),
        nn.Linear(784, 128),
        snn.Leaky(beta=beta, spike_grad=spike_grad, init_hidden=True),
        nn.Linear(128, 500),
        snn.Leaky(beta=beta, spike_grad=spike_grad, init_hidden=True, output=True),
    )
    boost(model, 6.0)
    net = sr.from_snntorch(model, num_classes=10)
    assert net.num_classes == 10 and net.readout.group == 50
    images = torch.rand(2, 1, 28, 28, generator=gen)
    labels = torch.tensor([4, 9])
    lower, upper = sr.DigitalLinf(0.02).bounds(images, 3, gen)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 9\] for a network with 10 classes"):
        sr.compute_bounds(net, lower, upper, torch.tensor([4, 420]))  # a neuron index, not a class

    def scores(z):  # snnTorch's step loop; each class scores its group's mean rate
        snn_utils.reset(model)
        spk = torch.stack([model(z[t])[0] for t in range(z.shape[0])])
        return spk.mean(0).view(z.shape[1], 10, 50).mean(-1)

    torch.testing.assert_close(net(lower), scores(lower))
    assert_sound(scores, net, lower, upper, labels, samples=8, gen=gen, methods=("ibp", "crown-ibp"))
    # crown-ibp: S-IBP's gradient reaches the first layer only through neurons whose
    # membrane lies in the surrogate window, which this random boosted net may not have
    loss = sr.certified_loss(net, images, labels, sr.DigitalLinf(0.02), steps=3, method="crown-ibp", generator=gen)
    assert_every_parameter_gets_gradient(model, loss)
    with pytest.raises(ValueError, match=r"num_classes=7 does not divide the 500 output neurons"):
        sr.from_snntorch(model, num_classes=7)


def test_count_frames_given_to_a_spike_network_are_refused_with_the_binarization():
    net = sr.from_snntorch(nn.Sequential(nn.Flatten(), nn.Linear(4, 2), snn.Leaky(0.5, init_hidden=True)))
    frames = torch.tensor([[[[0.0, 2.0], [1.0, 3.0]]]]).expand(2, 1, 2, 2)  # [T, B, H, W] event counts
    with pytest.raises(ValueError, match=r"ToFrame.*\(frames > 0\)\.float\(\)"):
        sr.compute_bounds(net, frames, frames)
    sr.compute_bounds(net, (frames > 0).float(), (frames > 0).float())


def test_every_method_is_exact_at_a_point_input_through_batchnorm_in_eval():
    """At ``lower == upper`` the eval-mode BatchNorm runs the module's own kernel, so the
    bounds of every method are the model's own output rates (same-kernel error model)."""
    gen = torch.Generator().manual_seed(9)
    model = ConvBNNet()
    boost(model, 2.0)
    randomize_batchnorm(model, gen)
    model.eval()
    x = torch.rand(4, 3, 1, 8, 8, generator=gen).bernoulli(generator=gen)
    net = sr.from_snntorch(model, example_input=x)
    rates = model(x).mean(0)
    assert 0 < rates.mean() < 1
    for method in sr.METHODS:
        lb, ub = sr.compute_bounds(net, x, x, method=method)
        assert torch.equal(lb, rates) and torch.equal(ub, rates), method
