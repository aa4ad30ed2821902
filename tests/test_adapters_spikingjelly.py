"""SpikingJelly adapter: bit-exact spikes against SpikingJelly's own forward (step modes
's' and 'm', both resets, decay_input, IF/LIF/PLIF nodes), sound bounds against that
forward, shared parameters, and every documented refusal.

Runs against whichever SpikingJelly is installed: 2.0.0 in the project's venv,
0.0.0.0.14 through scripts/test_spikingjelly_legacy.sh.
"""
from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from adapter_helpers import init_weights, input_box, random_input
from helpers import assert_sound
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import snn_robust as sr
from snn_robust.adapters.spikingjelly_adapter import SpikingJellyNode

pytest.importorskip("spikingjelly")
from spikingjelly.activation_based import functional, layer, neuron, surrogate  # noqa: E402

LEGACY = not hasattr(neuron.BaseNode, "single_step_functional_forward")  # 0.0.0.0.14
NODE_TYPES = (neuron.IFNode, neuron.LIFNode, neuron.ParametricLIFNode)


# -- running SpikingJelly itself ------------------------------------------------------------
def sj_run(model: nn.Module, x: torch.Tensor, mode: str) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """SpikingJelly's own forward on ``x`` ``[T, B, ...]`` (one call in 'm' mode, a step
    loop in 's' mode, after ``functional.reset_net``): output rates ``[B, C]`` and every
    node's spike train ``[T, B, N...]``."""
    nodes = [m for m in model.modules() if isinstance(m, NODE_TYPES)]
    calls: list[list[torch.Tensor]] = [[] for _ in nodes]
    hooks = [m.register_forward_hook(lambda mod, i, o, k=k: calls[k].append(o)) for k, m in enumerate(nodes)]
    functional.reset_net(model)
    try:
        with torch.no_grad():
            if mode == "m":
                out = model(x)
            else:
                out = torch.stack([model(x[t]) for t in range(x.shape[0])])
    finally:
        for h in hooks:
            h.remove()
    # a multi-step node is called once with [T, ...]; a single-step one T times
    trains = [c[0] if n.step_mode == "m" else torch.stack(c) for n, c in zip(nodes, calls, strict=True)]
    return out.mean(0).flatten(1), trains


def rates_of(model, mode):
    return lambda x: sj_run(model, x, mode)[0]


# -- building models ------------------------------------------------------------------------
def node(cfg: dict, mode: str) -> nn.Module:
    common = dict(v_threshold=cfg["th"], v_reset=cfg["v_reset"], step_mode=mode, surrogate_function=surrogate.ATan())
    if cfg["kind"] == "IF":
        return neuron.IFNode(**common)
    if cfg["kind"] == "LIF":
        return neuron.LIFNode(tau=cfg["tau"], decay_input=cfg["decay_input"], **common)
    return neuron.ParametricLIFNode(init_tau=cfg["tau"], decay_input=cfg["decay_input"], **common)


def fc_model(cfg: dict) -> nn.Module:
    m = cfg["mode"]
    if cfg["wrap"] == "torch" and m == "m":  # bare torch layers that act per step on [T, B, ...]
        head = [nn.Flatten(2), nn.Linear(12, 10)]
        mid = [nn.Dropout(0.3), nn.Linear(10, 4)]
    elif cfg["wrap"] == "container" and m == "m":
        head = [layer.SeqToANNContainer(nn.Flatten(), nn.Linear(12, 10))]
        mid = [layer.SeqToANNContainer(nn.Linear(10, 4))]
    else:
        head = [layer.Flatten(step_mode=m), layer.Linear(12, 10, step_mode=m)]
        mid = [layer.Dropout(0.3, step_mode=m), layer.Linear(10, 4, step_mode=m)]
    return nn.Sequential(*head, node(cfg, m), *mid, node(cfg, m))


def conv_model(cfg: dict) -> nn.Module:
    m = cfg["mode"]
    if cfg["wrap"] == "container" and m == "m":
        features = nn.Sequential(
            layer.SeqToANNContainer(nn.Conv2d(2, 4, 3, padding=1), nn.MaxPool2d(2)),
            node(cfg, m),
            layer.MultiStepContainer(nn.Conv2d(4, 4, 3), nn.AvgPool2d(2), node(cfg, "s")),
        )
    else:
        features = nn.Sequential(
            layer.Conv2d(2, 4, 3, padding=1, step_mode=m),
            layer.MaxPool2d(2, step_mode=m),
            node(cfg, m),
            layer.Conv2d(4, 4, 3, step_mode=m),
            layer.AvgPool2d(2, step_mode=m),
            node(cfg, m),
        )
    head = nn.Sequential(layer.Flatten(step_mode=m), layer.Linear(4, 3, step_mode=m), node(cfg, m))
    return nn.Sequential(OrderedDict(features=features, head=head))


INPUT_SHAPES = {"fc": (3, 4), "conv": (2, 8, 8)}


@st.composite
def configs(draw):
    exact = draw(st.booleans())
    return dict(
        arch=draw(st.sampled_from(["fc", "conv"])),
        kind=draw(st.sampled_from(["IF", "LIF", "PLIF"])),
        mode=draw(st.sampled_from(["s", "m"])),
        wrap=draw(st.sampled_from(["sj", "torch", "container"])),
        v_reset=draw(st.sampled_from([0.0, None])),
        decay_input=draw(st.booleans()),
        tau=2.0 if exact else draw(st.sampled_from([1.5, 2.0, 3.0, 4.0])),
        th=1.0 if exact else draw(st.sampled_from([1.0, 0.5, 0.3])),
        exact=exact,
        train=draw(st.booleans()),
        analog=draw(st.booleans()),
        steps=draw(st.integers(1, 7)),
        seed=draw(st.integers(0, 2**31 - 1)),
    )


def make(cfg: dict):
    gen = torch.Generator().manual_seed(cfg["seed"])
    model = (fc_model if cfg["arch"] == "fc" else conv_model)(cfg)
    init_weights(model, cfg["exact"], gen, gain=2.0 if cfg["kind"] == "IF" else 3.0, bias_scale=0.3)
    model.train(cfg.get("train", False))
    for m in model.modules():  # the nodes may be in training mode, dropout is compared at eval
        if isinstance(m, (nn.Dropout, layer.Dropout)):
            m.eval()
    return model, random_input(cfg, INPUT_SHAPES, gen), gen


# -- equivalence ----------------------------------------------------------------------------
@settings(max_examples=60)
@given(cfg=configs())
def test_spikes_equal_spikingjelly_bit_for_bit(cfg):
    model, x, _ = make(cfg)
    net = sr.from_spikingjelly(model, input_coding="direct" if cfg["analog"] else "spike")
    rates, trains = sj_run(model, x, cfg["mode"])
    with torch.no_grad():
        ours = net.simulate(x)
        our_rates = net(x)
    assert len(ours) == len(trains)
    for k, (a, b) in enumerate(zip(trains, ours, strict=True)):
        assert torch.equal(a, b), f"layer {k}: {int((a != b).sum())} spikes differ"
    assert torch.equal(rates, our_rates)


@pytest.mark.parametrize("kind", ["IF", "LIF", "PLIF"])
@pytest.mark.parametrize("mode", ["s", "m"])
def test_membranes_equal_spikingjelly_bit_for_bit(kind, mode):
    """Stronger than spikes: SpikingJelly's membrane after each step's reset equals the
    twin's, bit for bit, on a large random input (a different rounding order shows up
    here in thousands of entries, while it flips a spike only rarely)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(12, 512, 8, generator=gen) * 0.6
    for v_reset in (0.0, None):
        for decay_input in (True, False) if kind != "IF" else (True,):
            for train in (True, False):
                cfg = dict(kind=kind, v_reset=v_reset, decay_input=decay_input, tau=3.0, th=0.3)
                n = node(cfg, mode).train(train)
                net = sr.from_spikingjelly(nn.Sequential(n), input_coding="direct")
                functional.reset_net(n)
                with torch.no_grad():
                    if mode == "m":
                        n.store_v_seq = True
                        spikes, v_sj = n(x), n.v_seq
                    else:
                        spikes, v_sj = [], []
                        for t in range(x.shape[0]):
                            spikes.append(n(x[t]))
                            v_sj.append(n.v.clone())
                        spikes, v_sj = torch.stack(spikes), torch.stack(v_sj)
                    ours, m = net.layers[0](x, return_membrane=True)
                v_ours = m - ours * 0.3 if v_reset is None else (1 - ours) * m
                where = f"{kind} v_reset={v_reset} decay_input={decay_input} train={train}"
                assert torch.equal(spikes, ours), where
                assert torch.equal(v_sj, v_ours), f"{where}: {int((v_sj != v_ours).sum())} membranes differ"


@pytest.mark.parametrize("mode", ["s", "m"])
@pytest.mark.parametrize("v_reset", [0.0, None])
def test_membrane_exactly_on_threshold_fires(mode, v_reset):
    """tau 2, threshold 1, weights in halves: membranes land exactly on 1.0, where
    SpikingJelly (``>=``) fires, and so must the converted network."""
    cfg = dict(arch="fc", kind="LIF", mode=mode, wrap="sj", v_reset=v_reset, decay_input=False, tau=2.0, th=1.0, exact=True, steps=8, seed=5)
    model, x, _ = make(cfg)
    net = sr.from_spikingjelly(model)
    # membranes of the first node (the twin's; its spikes equal SpikingJelly's, checked below)
    with torch.no_grad():
        sp = net.layers[1](net.layers[0](x.flatten(0, 1))).unflatten(0, x.shape[:2])
        _, membrane = net.layers[2](sp, return_membrane=True)
    hits = int((membrane == 1.0).sum())
    assert hits > 0, "the test inputs never put a membrane on the threshold"
    rates, trains = sj_run(model, x, mode)
    ours = net.simulate(x)
    assert all(torch.equal(a, b) for a, b in zip(trains, ours, strict=True))


# -- soundness against SpikingJelly's own forward ------------------------------------------
@pytest.mark.parametrize("arch", ["fc", "conv"])
@pytest.mark.parametrize("kind", ["IF", "LIF", "PLIF"])
@pytest.mark.parametrize("v_reset", [0.0, None])
def test_bounds_hold_for_spikingjelly_forward(arch, kind, v_reset):
    exact = kind == "IF"  # IF with halves: membranes on the threshold
    cfg = dict(
        arch=arch, kind=kind, mode="m", wrap="sj", v_reset=v_reset, decay_input=kind != "PLIF", tau=2.0 if exact else 3.0,
        th=1.0 if exact else 0.5, exact=exact, steps=4, seed=11,
    )
    model, x, gen = make(cfg)
    net = sr.from_spikingjelly(model)
    lower, upper = input_box(x, unstable=2, gen=gen)
    labels = torch.randint(0, net.num_classes, (x.shape[1],), generator=gen)
    margins = assert_sound(rates_of(model, "m"), net, lower, upper, labels, samples=30, gen=gen)
    tightest = torch.stack(list(margins.values())).amax(0)
    assert (tightest > -1 + 1e-6).any(), "bounds are all trivial: the test would not catch an unsound one"


def test_direct_input_bounds_hold_for_single_step_model():
    cfg = dict(arch="fc", kind="LIF", mode="s", wrap="sj", v_reset=0.0, decay_input=True, tau=2.0, th=0.5, exact=False, steps=4, seed=2)
    model, _, gen = make(cfg)
    net = sr.from_spikingjelly(model, input_coding="direct")
    images = torch.rand(5, 3, 4, generator=gen)
    lower, upper = sr.DirectLinf(0.03).bounds(images, 4)
    labels = torch.randint(0, 4, (5,), generator=gen)
    assert_sound(rates_of(model, "s"), net, lower.contiguous(), upper.contiguous(), labels, samples=30, gen=gen, binary=False)


# -- shared parameters ----------------------------------------------------------------------
def plif_fc(seed: int) -> nn.Module:
    cfg = dict(arch="fc", kind="PLIF", mode="m", wrap="sj", v_reset=0.0, decay_input=True, tau=2.0, th=0.5, exact=False, steps=3, seed=seed)
    return make(cfg)[0].eval()


def test_parameters_are_the_users_objects():
    model = plif_fc(0)
    net = sr.from_spikingjelly(model)
    assert {id(p) for p in model.parameters()} <= {id(p) for p in net.parameters()}
    assert net.layers[1].weight is model[1].weight  # the twin of layer.Linear holds the user's Parameter


def test_certified_loss_step_trains_the_users_model():
    model = plif_fc(0)
    net = sr.from_spikingjelly(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(6, 3, 4, generator=gen)
    labels = torch.randint(0, 4, (6,), generator=gen)
    loss = sr.certified_loss(net, images, labels, sr.DigitalLinf(0.1), steps=3, generator=gen)
    loss.backward()
    assert model[1].weight.grad is not None and model[1].weight.grad.abs().sum() > 0
    assert model[2].w.grad is not None  # PLIF's decay is learnt through the bound too
    opt.step()
    changed = {name for name, p in model.named_parameters() if not torch.equal(before[name], p.detach())}
    assert {"1.weight", "4.weight"} <= changed


def test_state_dict_round_trip_gives_the_same_bounds():
    source = plif_fc(1)
    with torch.no_grad():
        source[2].w.add_(0.3)
    fresh = plif_fc(2)
    net_fresh = sr.from_spikingjelly(fresh)  # converted before loading: it must follow the load
    fresh.load_state_dict(source.state_dict())
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 3, 4, generator=gen).bernoulli(generator=gen)
    lower, upper = input_box(x, 3, gen)
    labels = torch.tensor([0, 1, 3])
    net_source = sr.from_spikingjelly(source)
    for method in sr.METHODS:
        assert torch.equal(
            sr.compute_bounds(net_source, lower, upper, labels, method=method),
            sr.compute_bounds(net_fresh, lower, upper, labels, method=method),
        ), method


def test_live_tau_and_threshold_are_followed():
    cfg = dict(arch="fc", kind="LIF", mode="m", wrap="sj", v_reset=None, decay_input=True, tau=2.0, th=0.5, exact=False, steps=5, seed=4)
    model, x, _ = make(cfg)
    net = sr.from_spikingjelly(model)
    for lif in (model[2], model[5]):
        lif.tau, lif.v_threshold = 3.0, 0.7
    rates, trains = sj_run(model, x, "m")
    assert all(torch.equal(a, b) for a, b in zip(trains, net.simulate(x), strict=True))
    assert torch.isclose(net.layers[2].alpha, torch.tensor(1 - 1 / 3.0))


def step_mode_container(stateful: bool, *modules):
    if LEGACY:  # 0.0.0.0.14: StepModeContainer(stateful, *args), mode set afterwards
        c = layer.StepModeContainer(stateful, *modules)
        c.step_mode = "m"
        return c
    return layer.StepModeContainer(stateful, "m", *modules)


@pytest.mark.parametrize("v_reset", [0.0, None])
def test_step_mode_containers_convert_exactly(v_reset):
    cfg = dict(kind="LIF", v_reset=v_reset, decay_input=True, tau=2.0, th=0.5)
    model = nn.Sequential(
        step_mode_container(False, nn.Conv2d(2, 4, 3, padding=1), nn.MaxPool2d(2)),
        step_mode_container(True, node(cfg, "s"), nn.Flatten(), nn.Linear(64, 5)),
        node(cfg, "m"),
    )
    gen = torch.Generator().manual_seed(3)
    init_weights(model, False, gen, gain=3.0, bias_scale=0.3)
    x = torch.rand(5, 4, 2, 8, 8, generator=gen).bernoulli(generator=gen)
    net = sr.from_spikingjelly(model)
    rates, trains = sj_run(model, x, "m")
    assert len(trains) == 2 and all(torch.equal(a, b) for a, b in zip(trains, net.simulate(x), strict=True))
    assert torch.equal(rates, net(x))


@pytest.mark.skipif(not LEGACY, reason="backend='cupy' exists in SpikingJelly 0.0.0.0.14")
def test_cupy_backed_model_converts_and_matches_in_eval():
    """A CuPy-backed model keeps its own backend; the twin computes in torch. At eval
    0.0.0.0.14 runs the torch kernels for either backend, so spikes match exactly."""
    cfg = dict(arch="fc", kind="LIF", mode="m", wrap="sj", v_reset=0.0, decay_input=False, tau=2.0, th=1.0, exact=True, steps=6, seed=8)
    model, x, _ = make(cfg)
    for m in model.modules():
        if isinstance(m, NODE_TYPES):
            m._backend = "cupy"  # set past the CuPy import check: this CPU test never runs the CUDA kernel
    model.eval()
    net = sr.from_spikingjelly(model)
    rates, trains = sj_run(model, x, "m")
    assert all(torch.equal(a, b) for a, b in zip(trains, net.simulate(x), strict=True))


@pytest.mark.skipif(not LEGACY, reason="backend='cupy' exists in SpikingJelly 0.0.0.0.14")
def test_cupy_backed_model_trains_with_the_certified_loss():
    """Certified training of a CuPy-backed model (issue 14): the bound runs on the twin (the
    backend is ignored) and its gradient reaches the model's own parameters."""
    cfg = dict(arch="fc", kind="LIF", mode="m", wrap="sj", v_reset=0.0, decay_input=False, tau=2.0, th=1.0, exact=True, steps=6, seed=8)
    model, x, gen = make(cfg)
    for m in model.modules():
        if isinstance(m, NODE_TYPES):
            m._backend = "cupy"  # set past the CuPy import check: the twin never calls the node
    net = sr.from_spikingjelly(model)
    labels = torch.randint(0, net(x).shape[1], (x.shape[1],), generator=gen)
    loss = sr.certified_loss(net, x, labels, sr.SpikeL0(0.05), steps=3, method="crown-ibp", generator=gen)
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and bool(torch.isfinite(g).all()) for g in grads)
    assert any(bool(g.abs().sum() > 0) for g in grads)


@pytest.mark.skipif(not (LEGACY and torch.cuda.is_available()), reason="needs SpikingJelly 0.0.0.0.14 and CUDA")
@pytest.mark.parametrize("v_reset", [0.0, None])
def test_cupy_backend_on_gpu_matches_and_is_sound(v_reset, monkeypatch):
    """On a GPU, with SpikingJelly's own CuPy kernels running (0.0.0.0.14 runs them in
    training mode): the twin's spikes equal SpikingJelly's, and every bound holds for
    SpikingJelly's CuPy forward on inputs sampled inside the box."""
    pytest.importorskip("cupy")
    import numpy as np

    # 0.0.0.0.14's kernel launcher reads np.int, removed in NumPy 1.24 (seen on an H200 with
    # NumPy 2.5): the shim users of that release need too (docs/adapters.md).
    monkeypatch.setattr(np, "int", int, raising=False)
    cfg = dict(arch="fc", kind="LIF", mode="m", wrap="sj", v_reset=v_reset, decay_input=False, tau=2.0, th=1.0, exact=True, steps=6, seed=8)
    model, x, gen = make(cfg)
    model = model.cuda()
    for m in model.modules():
        if isinstance(m, NODE_TYPES):
            m.backend = "cupy"  # the real setter: CuPy imports on this machine
            m.train()
    x = x.cuda()
    net = sr.from_spikingjelly(model)
    rates, trains = sj_run(model, x, "m")
    ours = net.simulate(x)
    for k, (a, b) in enumerate(zip(trains, ours, strict=True)):
        assert a.is_cuda and torch.equal(a, b), f"layer {k}: {int((a != b).sum())} spikes differ"
    lower, upper = input_box(x.cpu(), unstable=2, gen=gen)
    labels = torch.randint(0, rates.shape[1], (x.shape[1],), generator=gen).cuda()
    assert_sound(rates_of(model, "m"), net, lower.cuda(), upper.cuda(), labels, samples=30, gen=gen)


# -- refusals -------------------------------------------------------------------------------
class NotSequential(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv_fc = nn.Sequential(layer.Linear(4, 2), neuron.LIFNode())

    def forward(self, x):
        return self.conv_fc(x)


class LIFSubclass(neuron.LIFNode):
    pass


class AnalogSurrogate(surrogate.ATan):
    def forward(self, x):
        return torch.sigmoid(x)


def _refusal_cases():
    lin = lambda m="s": layer.Linear(4, 4, step_mode=m)  # noqa: E731
    return [
        ("qif", lambda: nn.Sequential(lin(), neuron.QIFNode()), sr.UnsupportedLayerError, "model.1", "LIFNode"),
        ("izhikevich", lambda: nn.Sequential(lin(), neuron.IzhikevichNode()), sr.UnsupportedLayerError, "model.1", "LIFNode"),
        ("subclass", lambda: nn.Sequential(lin(), LIFSubclass()), sr.UnsupportedLayerError, "model.1", "LIFNode"),
        ("v_reset", lambda: nn.Sequential(lin(), neuron.LIFNode(v_reset=-0.5)), ValueError, "model.1", "v_reset=-0.5"),
        ("spiking_false", lambda: nn.Sequential(lin(), neuron.LIFNode(surrogate_function=surrogate.ATan(spiking=False))), ValueError, "model.1", "spiking=False"),
        ("analog_surrogate", lambda: nn.Sequential(lin(), neuron.LIFNode(surrogate_function=AnalogSurrogate())), ValueError, "model.1", "binary step"),
        ("batchnorm3d", lambda: nn.Sequential(layer.Conv2d(1, 2, 3), nn.BatchNorm3d(2), neuron.LIFNode()), sr.UnsupportedLayerError, "model.1", "BatchNorm3d"),
        ("dropout_training", lambda: nn.Sequential(lin(), layer.Dropout(0.5), neuron.LIFNode()), ValueError, "model.1", "model.eval()"),
        ("ends_in_two_linears", lambda: nn.Sequential(lin(), neuron.LIFNode(), lin(), lin()), ValueError, "model.3", "spiking"),
        ("not_sequential", NotSequential, sr.UnsupportedLayerError, "model.conv_fc", "nn.Sequential"),
        ("mixed_modes", lambda: nn.Sequential(lin("m"), neuron.LIFNode(step_mode="m"), lin(), neuron.LIFNode(step_mode="s")), ValueError, "model.3", "set_step_mode"),
        ("node_in_seq_to_ann", lambda: nn.Sequential(layer.SeqToANNContainer(nn.Linear(4, 4), neuron.LIFNode())), ValueError, "model.0.1", "outside the container"),
        ("bare_conv_multi_step", lambda: nn.Sequential(nn.Conv2d(1, 2, 3), neuron.LIFNode(step_mode="m")), ValueError, "model.0", "SeqToANNContainer"),
        ("container_single_step", lambda: nn.Sequential(neuron.LIFNode(), layer.SeqToANNContainer(nn.Linear(4, 4)), neuron.LIFNode()), ValueError, "model.1", "multi-step"),
        ("flatten_multi_step", lambda: nn.Sequential(nn.Flatten(), nn.Linear(4, 4), neuron.LIFNode(step_mode="m")), ValueError, "model.0", "start_dim=2"),
        ("relu", lambda: nn.Sequential(lin(), nn.ReLU(), neuron.LIFNode()), sr.UnsupportedLayerError, "model.1", "supported"),
        (
            "nested_path",
            lambda: nn.Sequential(OrderedDict(features=nn.Sequential(OrderedDict(conv=nn.Sequential(layer.Conv2d(1, 2, 3), neuron.QIFNode()))))),
            sr.UnsupportedLayerError,
            "model.features.conv.1",
            "QIFNode",
        ),
    ]


@pytest.mark.parametrize("case", _refusal_cases(), ids=lambda c: c[0])
def test_refusals(case):
    _, build, error, path, words = case
    with pytest.raises(error) as info:
        sr.from_spikingjelly(build())
    message = str(info.value)
    assert path in message and words in message, message


# -- the multi-step CSNN, in a user's training loop ----------------------------------------
def csnn() -> nn.Module:
    grad = surrogate.ATan()
    return nn.Sequential(
        layer.Conv2d(1, 8, 3, padding=1, bias=False),
        neuron.LIFNode(tau=2.0, surrogate_function=grad),
        layer.MaxPool2d(2, 2),
        layer.Conv2d(8, 8, 3, padding=1, bias=False),
        neuron.LIFNode(tau=2.0, surrogate_function=grad),
        layer.MaxPool2d(2, 2),
        layer.Flatten(),
        layer.Linear(8 * 7 * 7, 10, bias=False),
        neuron.LIFNode(tau=2.0, surrogate_function=grad),
    )


@pytest.mark.slow
def test_csnn_converts_bounds_and_trains():
    torch.manual_seed(0)
    model = csnn()
    functional.set_step_mode(model, "m")
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.mul_(3.0)
    net = sr.from_spikingjelly(model)
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(3, 1, 28, 28, generator=gen)
    labels = torch.tensor([3, 1, 4])
    x = sr.bernoulli_encode(images, 6, gen)
    model.eval()
    rates, trains = sj_run(model, x, "m")
    assert all(torch.equal(a, b) for a, b in zip(trains, net.simulate(x), strict=True))

    lower, upper = sr.DigitalLinf(0.02).bounds(images, 3, gen)
    assert_sound(rates_of(model, "m"), net, lower, upper, labels, samples=8, gen=gen)

    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    first = model[0].weight.detach().clone()
    for _ in range(2):
        opt.zero_grad()
        functional.reset_net(model)
        clean = nn.functional.cross_entropy(model(sr.bernoulli_encode(images, 4, gen)).mean(0) * 10, labels)
        robust = sr.certified_loss(net, images, labels, sr.DigitalLinf(0.02), steps=2, generator=gen)
        loss = 0.4 * clean + 0.6 * robust
        assert torch.isfinite(loss)
        loss.backward()
        opt.step()
    assert not torch.equal(first, model[0].weight)
    assert isinstance(net.layers[1], SpikingJellyNode) and net.layers[0].weight is model[0].weight
