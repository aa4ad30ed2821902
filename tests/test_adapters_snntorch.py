"""snnTorch adapter: bit-exact spikes against snnTorch's own step loop, sound bounds
against snnTorch's forward, shared parameters, and every documented refusal."""
from __future__ import annotations

import subprocess
import sys
from collections import OrderedDict

import pytest
import torch
from adapter_helpers import init_weights, input_box, random_input
from helpers import assert_sound
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import snn_robust as sr
from snn_robust.adapters.snntorch_adapter import SnnTorchLeaky

snn = pytest.importorskip("snntorch")
from snntorch import surrogate, utils  # noqa: E402


@pytest.fixture(autouse=True)
def _forget_snntorch_instances():
    # snnTorch keeps every neuron ever built in a class-level list; do not let it grow
    # across hypothesis examples.
    yield
    snn.SpikingNeuron.instances.clear()


# -- running snnTorch itself --------------------------------------------------------------
def snntorch_run(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """snnTorch's own step loop on ``x`` ``[T, B, ...]``: output rates ``[B, C]`` and the
    spike train ``[T, B, N...]`` of every Leaky, in order."""
    leakies = [m for m in model.modules() if isinstance(m, snn.Leaky)]
    trains: list[list[torch.Tensor]] = [[] for _ in leakies]

    def recorder(k):
        return lambda mod, inp, out: trains[k].append(out[0] if isinstance(out, tuple) else out)

    hooks = [m.register_forward_hook(recorder(k)) for k, m in enumerate(leakies)]
    utils.reset(model)
    for m in leakies:  # utils.reset only sees top-level children; nested ones are reset here
        m.reset_mem()
    outs = []
    try:
        with torch.no_grad():
            for t in range(x.shape[0]):
                out = model(x[t])
                outs.append(out[0] if isinstance(out, tuple) else out)
    finally:
        for h in hooks:
            h.remove()
    return torch.stack(outs).mean(0).flatten(1), [torch.stack(tr) for tr in trains]


def rates_of(model):
    return lambda x: snntorch_run(model, x)[0]


# -- building models ------------------------------------------------------------------------
def leaky(cfg: dict, shape, gen: torch.Generator, output: bool = False) -> nn.Module:
    if cfg["per_neuron_beta"]:
        if cfg["exact"]:
            beta = torch.tensor([0.25, 0.5, 0.75, 1.0])[torch.randint(0, 4, shape, generator=gen)]
        else:
            beta = torch.rand(shape, generator=gen) * 1.4 - 0.2  # some outside [0, 1]: clamped by snnTorch
    else:
        beta = 0.5 if cfg["exact"] else float(torch.rand((), generator=gen))
    if cfg["per_neuron_th"]:
        if cfg["exact"]:
            th = torch.tensor([0.5, 1.0, 1.5])[torch.randint(0, 3, shape, generator=gen)]
        else:
            th = 0.5 + torch.rand(shape, generator=gen)
    else:
        th = 1.0 if cfg["exact"] else 0.5 + float(torch.rand((), generator=gen))
    return snn.Leaky(
        beta=beta,
        threshold=th,
        init_hidden=True,
        output=output,
        reset_mechanism=cfg["reset"],
        reset_delay=cfg["reset_delay"],
        learn_beta=cfg["learn_beta"],
        learn_threshold=cfg["learn_threshold"],
        spike_grad=surrogate.fast_sigmoid(slope=25),
    )


def fc_model(cfg: dict, gen: torch.Generator) -> nn.Module:
    model = nn.Sequential(
        nn.Flatten(),
        nn.Linear(12, 10),
        leaky(cfg, (10,), gen),
        nn.Dropout(0.2),
        nn.Linear(10, 4),
        leaky(cfg, (4,), gen, output=cfg["output"]),
    )
    init_weights(model, cfg["exact"], gen)
    return model.eval()


def conv_model(cfg: dict, gen: torch.Generator) -> nn.Module:
    model = nn.Sequential(
        OrderedDict(
            features=nn.Sequential(
                nn.Conv2d(2, 4, 3, padding=1),
                nn.MaxPool2d(2),
                leaky(cfg, (4, 1, 1), gen),
                nn.Conv2d(4, 4, 3),
                nn.AvgPool2d(2),
                leaky(cfg, (4, 1, 1), gen),
            ),
            head=nn.Sequential(nn.Flatten(), nn.Identity(), nn.Linear(4, 3), leaky(cfg, (3,), gen, output=cfg["output"])),
        )
    )
    init_weights(model, cfg["exact"], gen, gain=1.5)
    return model.eval()


INPUT_SHAPES = {"fc": (3, 4), "conv": (2, 8, 8)}
BUILDERS = {"fc": fc_model, "conv": conv_model}


@st.composite
def configs(draw):
    reset = draw(st.sampled_from(["zero", "subtract"]))
    return dict(
        arch=draw(st.sampled_from(["fc", "conv"])),
        reset=reset,
        reset_delay=draw(st.booleans()) if reset == "zero" else True,
        per_neuron_beta=draw(st.booleans()),
        per_neuron_th=draw(st.booleans()),
        learn_beta=draw(st.booleans()),
        learn_threshold=draw(st.booleans()),
        output=draw(st.booleans()),
        exact=draw(st.booleans()),
        analog=draw(st.booleans()),
        steps=draw(st.integers(1, 7)),
        seed=draw(st.integers(0, 2**31 - 1)),
    )


def make(cfg: dict):
    gen = torch.Generator().manual_seed(cfg["seed"])
    model = BUILDERS[cfg["arch"]](cfg, gen)
    return model, random_input(cfg, INPUT_SHAPES, gen), gen


# -- equivalence ----------------------------------------------------------------------------
@settings(max_examples=60)
@given(cfg=configs())
def test_spikes_equal_snntorch_bit_for_bit(cfg):
    model, x, _ = make(cfg)
    net = sr.from_snntorch(model, input_coding="direct" if cfg["analog"] else "spike")
    rates, trains = snntorch_run(model, x)
    with torch.no_grad():
        ours = net.simulate(x)
        our_rates = net(x)
    assert len(ours) == len(trains)
    for k, (a, b) in enumerate(zip(trains, ours, strict=True)):
        assert torch.equal(a, b), f"layer {k}: {int((a != b).sum())} spikes differ"
    assert torch.equal(rates, our_rates)


@pytest.mark.parametrize("reset,reset_delay", [("zero", True), ("zero", False), ("subtract", True)])
@pytest.mark.parametrize("per_neuron", [False, True])
def test_membranes_equal_snntorch_bit_for_bit(reset, reset_delay, per_neuron):
    """Stronger than spikes: snnTorch's membrane after every step equals the twin's bit
    for bit on a large random input (a different rounding order shows up here in many
    entries, while it flips a spike only rarely)."""
    gen = torch.Generator().manual_seed(0)
    shape = (8,) if per_neuron else ()
    beta = torch.rand(shape, generator=gen) if per_neuron else 0.7
    th = 0.2 + torch.rand(shape, generator=gen) * 0.3 if per_neuron else 0.3
    lk = snn.Leaky(beta=beta, threshold=th, init_hidden=True, reset_mechanism=reset, reset_delay=reset_delay)
    x = torch.rand(12, 512, 8, generator=gen) * 0.6
    mems, spikes = [], []
    lk.reset_mem()
    with torch.no_grad():
        for t in range(x.shape[0]):
            spikes.append(lk(x[t]))
            mems.append(lk.mem.clone())
        twin = sr.from_snntorch(nn.Sequential(lk), input_coding="direct").layers[0]
        ours, m = twin(x, return_membrane=True)
    if not reset_delay:  # snnTorch's mem is already reset: zero reset as m - s * m
        m = m - ours * m
    assert torch.equal(torch.stack(spikes), ours)
    assert torch.equal(torch.stack(mems), m), f"{int((torch.stack(mems) != m).sum())} membranes differ"


@pytest.mark.parametrize("reset,reset_delay", [("zero", True), ("zero", False), ("subtract", True)])
def test_membrane_exactly_on_threshold_does_not_fire(reset, reset_delay):
    """beta 0.5, threshold 1, weights in halves: the membrane often equals 1.0 exactly,
    where snnTorch (``>``) stays silent and so must the converted network."""
    cfg = dict(
        reset=reset, reset_delay=reset_delay, per_neuron_beta=False, per_neuron_th=False, learn_beta=False,
        learn_threshold=False, output=True, exact=True,
    )
    gen = torch.Generator().manual_seed(1)
    model = fc_model(cfg, gen)
    x = torch.rand(8, 16, 3, 4, generator=gen).bernoulli(generator=gen)
    hidden = model[2]
    on_threshold = 0
    utils.reset(model)
    with torch.no_grad():
        for t in range(x.shape[0]):
            hidden(model[1](model[0](x[t])))
            # a membrane left at exactly 1.0 did not spike (an immediate reset only touches spiking ones)
            on_threshold += int((hidden.mem == 1.0).sum())
    assert on_threshold > 0, "the test inputs never put a membrane on the threshold"
    rates, trains = snntorch_run(model, x)
    ours = sr.from_snntorch(model).simulate(x)
    assert all(torch.equal(a, b) for a, b in zip(trains, ours, strict=True))


# -- soundness against snnTorch's own forward --------------------------------------------
@pytest.mark.parametrize("arch", ["fc", "conv"])
@pytest.mark.parametrize("reset", ["zero", "subtract"])
@pytest.mark.parametrize("exact", [True, False])
def test_bounds_hold_for_snntorch_forward(arch, reset, exact):
    cfg = dict(
        arch=arch, reset=reset, reset_delay=True, per_neuron_beta=not exact, per_neuron_th=not exact,
        learn_beta=True, learn_threshold=False, output=True, exact=exact, steps=4, seed=7,
    )
    model, x, gen = make(cfg)
    net = sr.from_snntorch(model)
    lower, upper = input_box(x, unstable=2, gen=gen)
    labels = torch.randint(0, net.num_classes, (x.shape[1],), generator=gen)
    margins = assert_sound(rates_of(model), net, lower, upper, labels, samples=40, gen=gen)
    tightest = torch.stack(list(margins.values())).amax(0)
    assert (tightest > -1 + 1e-6).any(), "bounds are all trivial: the test would not catch an unsound one"


def test_zero_reset_without_delay_is_sound():
    cfg = dict(
        arch="fc", reset="zero", reset_delay=False, per_neuron_beta=True, per_neuron_th=True, learn_beta=False,
        learn_threshold=True, output=False, exact=False, steps=4, seed=3,
    )
    model, x, gen = make(cfg)
    net = sr.from_snntorch(model)
    lower, upper = input_box(x, unstable=2, gen=gen)
    labels = torch.randint(0, 4, (x.shape[1],), generator=gen)
    assert_sound(rates_of(model), net, lower, upper, labels, samples=40, gen=gen)


# -- shared parameters ----------------------------------------------------------------------
def learnable_fc(seed: int) -> nn.Module:
    cfg = dict(
        reset="zero", reset_delay=True, per_neuron_beta=True, per_neuron_th=False, learn_beta=True,
        learn_threshold=True, output=True, exact=False,
    )
    return fc_model(cfg, torch.Generator().manual_seed(seed))


def test_parameters_are_the_users_objects():
    model = learnable_fc(0)
    net = sr.from_snntorch(model)
    ours = {id(p) for p in net.parameters()}
    assert {id(p) for p in model.parameters()} <= ours
    assert net.layers[1] is model[1]  # spatial layers are the user's modules


def test_certified_loss_step_trains_the_users_model():
    model = learnable_fc(0)
    net = sr.from_snntorch(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(6, 3, 4, generator=gen)
    labels = torch.randint(0, 4, (6,), generator=gen)
    opt.zero_grad()
    loss = sr.certified_loss(net, images, labels, sr.DigitalLinf(0.1), steps=3, generator=gen)
    loss.backward()
    assert model[1].weight.grad is not None and model[1].weight.grad.abs().sum() > 0
    assert model[5].beta.grad is not None
    opt.step()
    changed = [name for name, p in model.named_parameters() if not torch.equal(before[name], p.detach())]
    assert "1.weight" in changed and "4.weight" in changed
    # the converted network sees the step: same objects, nothing to copy back
    assert net.layers[1].weight is model[1].weight


def test_state_dict_round_trip_gives_the_same_bounds():
    source = learnable_fc(1)
    with torch.no_grad():
        source[2].beta.mul_(0.9)  # move a learnable neuron parameter off its initial value
        source[5].threshold.add_(0.1)
    state = source.state_dict()
    fresh = learnable_fc(2)
    net_fresh = sr.from_snntorch(fresh)  # converted BEFORE loading: it must follow the load
    fresh.load_state_dict(state)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 3, 4, generator=gen).bernoulli(generator=gen)
    lower, upper = input_box(x, 3, gen)
    labels = torch.tensor([0, 1, 3])
    net_source = sr.from_snntorch(source)
    for method in sr.METHODS:
        a = sr.compute_bounds(net_source, lower, upper, labels, method=method)
        b = sr.compute_bounds(net_fresh, lower, upper, labels, method=method)
        assert torch.equal(a, b), method


# -- refusals -------------------------------------------------------------------------------
class NotSequential(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 2), snn.Leaky(0.5, init_hidden=True))

    def forward(self, x):
        return self.body(x)


def leaky_with(**kw) -> nn.Module:
    return snn.Leaky(**{"beta": 0.5, "init_hidden": True, **kw})


class LeakySubclass(snn.Leaky):
    pass


def _refusal_cases():
    lin = lambda: nn.Linear(4, 4)  # noqa: E731
    return [
        ("rleaky", lambda: nn.Sequential(lin(), snn.RLeaky(0.5, linear_features=4, init_hidden=True)), sr.UnsupportedLayerError, "model.1", "recurrent"),
        ("synaptic", lambda: nn.Sequential(lin(), snn.Synaptic(0.5, 0.5, init_hidden=True)), sr.UnsupportedLayerError, "model.1", "Leaky"),
        ("alpha", lambda: nn.Sequential(lin(), snn.Alpha(0.6, 0.5, init_hidden=True)), sr.UnsupportedLayerError, "model.1", "Leaky"),
        ("lapicque", lambda: nn.Sequential(lin(), snn.Lapicque(beta=0.5, init_hidden=True)), sr.UnsupportedLayerError, "model.1", "Leaky"),
        ("subclass", lambda: nn.Sequential(lin(), LeakySubclass(0.5, init_hidden=True)), sr.UnsupportedLayerError, "model.1", "subclass"),
        ("inhibition", lambda: nn.Sequential(lin(), leaky_with(inhibition=True)), ValueError, "model.1", "inhibition"),
        ("state_quant", lambda: nn.Sequential(lin(), leaky_with(state_quant=lambda m: m.round())), ValueError, "model.1", "state_quant"),
        ("graded", lambda: nn.Sequential(lin(), leaky_with(graded_spikes_factor=2.0)), ValueError, "model.1", "graded"),
        ("graded_learnable", lambda: nn.Sequential(lin(), leaky_with(learn_graded_spikes_factor=True)), ValueError, "model.1", "graded"),
        ("reset_none", lambda: nn.Sequential(lin(), leaky_with(reset_mechanism="none")), ValueError, "model.1", "'none'"),
        ("init_hidden_false", lambda: nn.Sequential(lin(), snn.Leaky(0.5)), ValueError, "model.1", "init_hidden=True"),
        ("subtract_no_delay", lambda: nn.Sequential(lin(), leaky_with(reset_delay=False)), ValueError, "model.1", "reset_delay=True"),
        ("output_not_last", lambda: nn.Sequential(lin(), leaky_with(output=True), lin(), leaky_with()), ValueError, "model.1", "output=True"),
        ("ends_in_two_linears", lambda: nn.Sequential(lin(), leaky_with(), lin(), lin()), ValueError, "model.3", "spiking"),
        ("no_neuron", lambda: nn.Sequential(lin(), lin()), sr.UnsupportedLayerError, "model", "Leaky"),
        ("not_sequential", NotSequential, sr.UnsupportedLayerError, "model.body", "nn.Sequential"),
        ("batchnorm3d", lambda: nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm3d(2), leaky_with()), sr.UnsupportedLayerError, "model.1", "BatchNorm3d"),
        ("dropout_training", lambda: nn.Sequential(lin(), nn.Dropout(0.5).train(), leaky_with()), ValueError, "model.1", "model.eval()"),
        ("relu", lambda: nn.Sequential(lin(), nn.ReLU(), leaky_with()), sr.UnsupportedLayerError, "model.1", "supported"),
        ("flatten_dims", lambda: nn.Sequential(nn.Flatten(2), lin(), leaky_with()), ValueError, "model.0", "nn.Flatten()"),
        ("analog_spike_fn", lambda: nn.Sequential(lin(), leaky_with(spike_grad=torch.sigmoid)), ValueError, "model.1", "binary step"),
        (
            "nested_path",
            lambda: nn.Sequential(
                OrderedDict(
                    features=nn.Sequential(
                        OrderedDict(conv=nn.Sequential(nn.Conv2d(1, 2, 3), snn.Synaptic(0.5, 0.5, init_hidden=True)))
                    )
                )
            ),
            sr.UnsupportedLayerError,
            "model.features.conv.1",
            "Synaptic",
        ),
    ]


@pytest.mark.filterwarnings("ignore:Inhibition is an unstable feature")
@pytest.mark.parametrize("case", _refusal_cases(), ids=lambda c: c[0])
def test_refusals(case):
    _, build, error, path, words = case
    with pytest.raises(error) as info:
        sr.from_snntorch(build())
    message = str(info.value)
    assert path in message and words in message, message


class PlainSequential(nn.Sequential):
    """A Sequential subclass that keeps Sequential's forward: accepted."""


class ReorderingSequential(nn.Sequential):
    def forward(self, x):
        return super().forward(x) * 2


def test_sequential_subclass_with_its_own_forward_is_refused_and_plain_one_accepted():
    body = lambda: [nn.Linear(4, 3), leaky_with(output=True)]  # noqa: E731
    net = sr.from_snntorch(nn.Sequential(PlainSequential(*body())))
    assert len(net.stages) == 1
    with pytest.raises(sr.UnsupportedLayerError, match=r"model\.0 .*custom container"):
        sr.from_snntorch(nn.Sequential(ReorderingSequential(*body())))
    with pytest.raises(sr.UnsupportedLayerError, match="not an nn.Sequential"):
        sr.from_snntorch(ReorderingSequential(*body()))


def test_reset_mechanism_changed_after_construction_is_refused():
    bad = leaky_with(reset_mechanism="subtract")
    bad.reset_mechanism = "zero"  # snnTorch keeps the subtract state function
    with pytest.raises(ValueError, match="model.1"):
        sr.from_snntorch(nn.Sequential(nn.Linear(4, 4), bad))


def test_snn_robust_imports_without_the_frameworks():
    """The adapters import snnTorch / SpikingJelly only when called."""
    code = (
        "import sys\n"
        "sys.modules['snntorch'] = None\n"
        "sys.modules['spikingjelly'] = None\n"
        "import snn_robust\n"
        "try:\n"
        "    snn_robust.from_snntorch(None)\n"
        "except ImportError:\n"
        "    print('lazy')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "lazy", done.stderr


# -- the tutorial convolutional network, in a user's training loop -------------------------
def tutorial_csnn() -> nn.Module:
    grad = surrogate.fast_sigmoid(slope=25)
    return nn.Sequential(
        nn.Conv2d(1, 12, 5),
        nn.MaxPool2d(2),
        snn.Leaky(beta=0.5, spike_grad=grad, init_hidden=True),
        nn.Conv2d(12, 64, 5),
        nn.MaxPool2d(2),
        snn.Leaky(beta=0.5, spike_grad=grad, init_hidden=True),
        nn.Flatten(),
        nn.Linear(64 * 4 * 4, 10),
        snn.Leaky(beta=0.5, spike_grad=grad, init_hidden=True, output=True),
    )


@pytest.mark.slow
def test_tutorial_csnn_converts_bounds_and_trains():
    torch.manual_seed(0)
    model = tutorial_csnn()
    net = sr.from_snntorch(model)
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(3, 1, 28, 28, generator=gen)
    labels = torch.tensor([3, 1, 4])
    x = sr.bernoulli_encode(images, 6, gen)
    model.eval()
    rates, trains = snntorch_run(model, x)
    assert all(torch.equal(a, b) for a, b in zip(trains, net.simulate(x), strict=True))

    lower, upper = sr.DigitalLinf(0.02).bounds(images, 3, gen)
    assert_sound(rates_of(model), net, lower, upper, labels, samples=8, gen=gen)

    # a user's loop: clean loss through snnTorch, certified loss through the twin
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    first = model[0].weight.detach().clone()
    for _ in range(2):
        opt.zero_grad()
        utils.reset(model)
        spikes = torch.stack([model(frame)[0] for frame in sr.bernoulli_encode(images, 4, gen)])
        clean = nn.functional.cross_entropy(spikes.mean(0) * 10, labels)
        robust = sr.certified_loss(net, images, labels, sr.DigitalLinf(0.02), steps=2, generator=gen)
        loss = 0.4 * clean + 0.6 * robust
        assert torch.isfinite(loss)
        loss.backward()
        opt.step()
    assert not torch.equal(first, model[0].weight)
    assert isinstance(net.layers[2], SnnTorchLeaky) and net.layers[0] is model[0]
