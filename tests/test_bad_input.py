"""Bad numbers, shapes and dtypes get a clear error (issue 8, sections 2 and 3).

Every case checks the exception type and that the message names the tensor, argument or
layer (by its path for adapter models), so a user can find the culprit. Cases:

* non-finite images, neuron parameters, weights and biases (at construction /
  conversion and again when bounding, since training moves parameters);
* empty batch (B = 0) and no time steps (T' = 0): one ValueError for every method and
  for ``certified_loss``;
* float16 / float64 input bounds (computed in the network's dtype) and float64 networks;
* wrong per-sample shapes and a missing time dimension;
* perturbation radii and step counts of the wrong kind;
* unsupported SpikingJelly nodes named as the culprit.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import assert_sound
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import snn_robust as sr
from snn_robust.validation import check_all_finite, check_number, check_positive_int

BAD_VALUES = (float("nan"), float("inf"), float("-inf"))
NONFINITE = r"NaN|infinite|finite"


def fc_net(**kw) -> sr.SpikingNetwork:
    torch.manual_seed(0)
    return sr.SpikingNetwork([nn.Flatten(), nn.Linear(16, 8), sr.LIF(), nn.Linear(8, 3), sr.LIF()], **kw)


def conv_net(**kw) -> sr.SpikingNetwork:
    torch.manual_seed(0)
    return sr.SpikingNetwork(
        [nn.Conv2d(1, 2, 3, padding=1), sr.LIF(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(8, 3), sr.LIF()], **kw
    )


def box(batch: int = 2, steps: int = 3, shape=(1, 4, 4), seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    return sr.DigitalLinf(0.2).bounds(torch.rand(batch, *shape, generator=gen), steps, gen)


LABELS = torch.tensor([0, 2])


# -- non-finite images ------------------------------------------------------------------------
@settings(max_examples=30)
@given(
    batch=st.integers(1, 3),
    where=st.integers(0, 10_000),
    value=st.sampled_from(BAD_VALUES),
    kind=st.sampled_from(["DigitalLinf", "DirectLinf", "SpikeL0"]),
)
def test_nonfinite_images_refused_by_every_perturbation(batch, where, value, kind):
    x = torch.rand(batch, 1, 4, 4).round() if kind == "SpikeL0" else torch.rand(batch, 1, 4, 4)
    x.view(-1)[where % x.numel()] = value
    pert = {"DigitalLinf": sr.DigitalLinf(0.1), "DirectLinf": sr.DirectLinf(0.1), "SpikeL0": sr.SpikeL0(0.1)}[kind]
    x_in = x.unsqueeze(0).expand(2, *x.shape) if kind == "SpikeL0" else x
    with pytest.raises(ValueError, match=rf"{kind}: input x .*contains .*({NONFINITE})"):
        pert.bounds(x_in, 2)
    with pytest.raises(ValueError, match=rf"{kind}: input x"):
        pert.encode(x_in, 2)


@pytest.mark.parametrize("value", BAD_VALUES)
def test_nonfinite_images_refused_by_certified_loss_and_encoding(value):
    images = torch.full((2, 1, 4, 4), value)  # an all-NaN batch used to get a finite loss
    with pytest.raises(ValueError, match="DigitalLinf: input x"):
        sr.certified_loss(fc_net(), images, LABELS, sr.DigitalLinf(0.1))
    with pytest.raises(ValueError, match="bernoulli_encode: input x"):
        sr.bernoulli_encode(images, 3)


@pytest.mark.parametrize("value", BAD_VALUES)
@pytest.mark.parametrize("which", ["lower", "upper"])
def test_nonfinite_input_bounds_refused_by_compute_bounds(value, which):
    net = sr.SpikingNetwork([nn.Flatten(), nn.Linear(16, 3), sr.LIF()], input_coding="direct")
    lower, upper = sr.DirectLinf(0.1).bounds(torch.rand(2, 1, 4, 4), 3)
    bounds = {"lower": lower.clone(), "upper": upper.clone()}
    bounds[which][1, 0, 0, 2, 2] = value
    with pytest.raises(ValueError, match=rf"input bounds {which} contains"):
        sr.compute_bounds(net, bounds["lower"], bounds["upper"], LABELS, method="ibp")


# -- non-finite neuron parameters ---------------------------------------------------------------
@pytest.mark.parametrize("value", BAD_VALUES)
@pytest.mark.parametrize("name", ["alpha", "threshold", "input_scale"])
@pytest.mark.parametrize("form", ["float", "tensor"])
def test_nonfinite_lif_parameter_refused_at_construction(value, name, form):
    given_value = value if form == "float" else torch.tensor([0.5, value, 0.5])
    with pytest.raises(ValueError, match=rf"LIF: {name} must"):
        sr.LIF(**{name: given_value})


class Constant(nn.Module):
    """A module-valued neuron parameter (checked by the network, which knows the layer's name)."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = nn.Parameter(torch.tensor(value))

    def forward(self) -> torch.Tensor:
        return self.value


@pytest.mark.parametrize("value", BAD_VALUES)
def test_module_parameter_refused_by_network_naming_the_layer(value):
    with pytest.raises(ValueError, match=r"layer hidden \(LIF\): threshold must be > 0 and finite"):
        sr.SpikingNetwork([nn.Flatten(), nn.Linear(16, 3), sr.LIF(threshold=Constant(value))],
                          names=["flat", "fc", "hidden"])


@pytest.mark.parametrize("method", sr.METHODS)
@pytest.mark.parametrize("name", ["alpha", "threshold", "input_scale"])
def test_lif_parameter_turned_nan_after_construction_refused_when_bounding(method, name):
    """A learnable parameter (or a state_dict) can become NaN in training: S-IBP used to
    certify falsified samples then."""
    lif = sr.LIF(alpha=nn.Parameter(torch.tensor(0.5)), threshold=nn.Parameter(torch.tensor(0.25)),
                 input_scale=nn.Parameter(torch.tensor(1.0)))
    net = sr.SpikingNetwork([nn.Flatten(), nn.Linear(16, 3), lif])
    lower, upper = box()
    sr.compute_bounds(net, lower, upper, LABELS, method=method)  # fine before
    with torch.no_grad():
        getattr(lif, "_" + name).fill_(float("nan"))
    with pytest.raises(ValueError, match=rf"layer 2 \(LIF\): .*{name.replace('_', '.')}.* must"):
        sr.compute_bounds(net, lower, upper, LABELS, method=method)
    with pytest.raises(ValueError, match=r"layer 2 \(LIF\)"):
        sr.certified_loss(net, torch.rand(2, 1, 4, 4), LABELS, sr.DigitalLinf(0.1), method=method)


def test_nan_buffer_loaded_from_state_dict_refused_when_bounding():
    net = fc_net()
    state = net.state_dict()
    state["layers.4._threshold"] = torch.tensor(float("nan"))
    net.load_state_dict(state)
    with pytest.raises(ValueError, match=r"layer 4 \(LIF\): threshold must be > 0 and finite, got nan"):
        sr.compute_bounds(net, *box(), LABELS)


# -- non-finite weights and biases ---------------------------------------------------------------
@settings(max_examples=25)
@given(
    layer=st.sampled_from([0, 4]),
    param=st.sampled_from(["weight", "bias"]),
    value=st.sampled_from(BAD_VALUES),
    where=st.integers(0, 10_000),
    method=st.sampled_from(sr.METHODS),
)
def test_nonfinite_weight_refused_when_bounding_naming_the_layer(layer, param, value, where, method):
    net = conv_net(names=["conv", "lif1", "pool", "flat", "head", "out"])
    p = getattr(net.layers[layer], param)
    with torch.no_grad():
        p.view(-1)[where % p.numel()] = value
    name = {0: r"conv \(Conv2d\)", 4: r"head \(Linear\)"}[layer]
    with pytest.raises(ValueError, match=rf"layer {name} {param} contains .*({NONFINITE})"):
        sr.compute_bounds(net, *box(), LABELS, method=method)


def test_nonfinite_readout_weight_refused_when_bounding():
    from snn_robust.bounds.adapter_ops import RateReadout

    head = nn.Linear(3, 2)
    net = sr.SpikingNetwork([nn.Flatten(), nn.Linear(16, 3), sr.LIF()], readout=RateReadout("linear", head))
    sr.compute_bounds(net, *box(), torch.tensor([0, 1]), method="ibp")  # fine before
    with torch.no_grad():
        head.weight[1, 2] = float("nan")
    with pytest.raises(ValueError, match=r"readout linear\.weight contains 1 NaN"):
        sr.compute_bounds(net, *box(), torch.tensor([0, 1]), method="ibp")


@pytest.mark.parametrize("value", BAD_VALUES)
def test_nonfinite_weight_refused_at_construction(value):
    fc = nn.Linear(16, 3)
    with torch.no_grad():
        fc.bias[1] = value
    with pytest.raises(ValueError, match=r"layer 1 \(Linear\) bias contains"):
        sr.SpikingNetwork([nn.Flatten(), fc, sr.LIF()])


def test_check_all_finite_names_the_first_bad_tensor_only_on_failure():
    good, bad = torch.zeros(3), torch.tensor([0.0, float("nan"), float("inf")])
    check_all_finite([("a", good), ("b", good.long()), ("empty", torch.zeros(0))])  # passes
    check_all_finite([("huge", torch.full((4,), 3e38)), ("half", torch.full((8,), 6e4, dtype=torch.float16))])  # sums overflow, elements finite
    with pytest.raises(ValueError, match=r"^b contains 1 NaN and 1 infinite values among 3; why$"):
        check_all_finite([("a", good), ("b", bad)], "why")


# -- empty batch and T' = 0 ----------------------------------------------------------------------
@pytest.mark.parametrize("method", sr.METHODS)
@pytest.mark.parametrize("with_labels", [True, False])
def test_empty_batch_one_error_for_every_method(method, with_labels):
    lower, upper = box(batch=0)
    labels = torch.zeros(0, dtype=torch.long) if with_labels else None
    with pytest.raises(ValueError, match=r"empty batch \(B = 0"):
        sr.compute_bounds(fc_net(), lower, upper, labels, method=method)


@pytest.mark.parametrize("method", sr.METHODS)
@pytest.mark.parametrize("with_labels", [True, False])
def test_no_time_steps_one_error_for_every_method(method, with_labels):
    lower, upper = box()
    with pytest.raises(ValueError, match=r"no time steps \(T' = 0\)"):
        sr.compute_bounds(fc_net(), lower[:0], upper[:0], LABELS if with_labels else None, method=method)


@pytest.mark.parametrize("method", sr.METHODS)
@pytest.mark.parametrize("kind", ["DigitalLinf", "DirectLinf", "SpikeL0"])
def test_empty_batch_certified_loss_same_error(method, kind):
    net = fc_net(input_coding="direct" if kind == "DirectLinf" else "spike")
    pert = {"DigitalLinf": sr.DigitalLinf(0.1), "DirectLinf": sr.DirectLinf(0.1), "SpikeL0": sr.SpikeL0(0.1)}[kind]
    x = torch.zeros(3, 0, 1, 4, 4) if kind == "SpikeL0" else torch.zeros(0, 1, 4, 4)
    with pytest.raises(ValueError, match=r"empty batch \(B = 0"):
        sr.certified_loss(net, x, torch.zeros(0, dtype=torch.long), pert, steps=3, method=method)


def test_no_time_steps_in_forward_refused():
    with pytest.raises(ValueError, match=r"no time steps \(T = 0\)"):
        fc_net()(torch.zeros(0, 2, 1, 4, 4))


# -- dtypes --------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float16, torch.float64])
@pytest.mark.parametrize("method", sr.METHODS)
def test_other_float_bounds_computed_in_network_dtype(dtype, method):
    net = conv_net()
    lower, upper = box()
    want = sr.compute_bounds(net, lower, upper, LABELS, method=method)
    got = sr.compute_bounds(net, lower.to(dtype), upper.to(dtype), LABELS, method=method)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=0, atol=0)  # 0/1 spikes are exact in any float dtype
    lb, ub = sr.compute_bounds(net, lower.to(dtype), upper.to(dtype), method=method)
    assert lb.dtype == ub.dtype == torch.float32


def test_float64_direct_bounds_cast_to_a_float32_network_stay_sound():
    """Rounding a float64 box to float32 keeps every float32 input it contained."""
    net = sr.SpikingNetwork([nn.Flatten(), nn.Linear(16, 6), sr.LIF(), nn.Linear(6, 3), sr.LIF()],
                            input_coding="direct")
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(2, 1, 4, 4, dtype=torch.float64, generator=gen)
    lower, upper = sr.DirectLinf(0.05).bounds(x, 3)
    assert_sound(net, net, lower.float(), upper.float(), LABELS, samples=20, gen=gen, binary=False)
    for method in sr.METHODS:
        got = sr.compute_bounds(net, lower, upper, LABELS, method=method)
        torch.testing.assert_close(got, sr.compute_bounds(net, lower.float(), upper.float(), LABELS, method=method))


@settings(max_examples=3)
@given(seed=st.integers(0, 2**16))
def test_float64_network_with_float64_bounds_is_sound(seed):
    net = conv_net().double()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64) * 0.8)
    lower, upper = box(seed=seed)
    lower, upper = lower.double(), upper.double()
    margins = assert_sound(net, net, lower, upper, LABELS, samples=8, gen=gen)
    assert all(m.dtype == torch.float64 for m in margins.values())


def test_integer_bounds_refused_by_name():
    lower, upper = box()
    with pytest.raises(TypeError, match="input bounds must be floating point, got torch.int64"):
        sr.compute_bounds(fc_net(), lower.long(), upper.long(), LABELS)


# -- shapes --------------------------------------------------------------------------------------
@settings(max_examples=20)
@given(h=st.integers(1, 7), w=st.integers(1, 7), c=st.integers(1, 3))
def test_wrong_feature_size_names_the_layer_and_expected_input(h, w, c):
    if c * h * w == 16:
        return  # the one size the Linear takes
    lower, upper = box(shape=(c, h, w))
    with pytest.raises(ValueError, match=r"layer 1 \(Linear\) cannot take the per-sample shape .*takes 16 features"):
        sr.compute_bounds(fc_net(), lower, upper, LABELS, method="ibp")
    with pytest.raises(ValueError, match=r"layer 1 \(Linear\)"):
        fc_net()(lower)


@pytest.mark.parametrize("shape", [(2, 4, 4), (1, 3, 3), (1, 6, 6)])
def test_wrong_image_size_in_conv_network_names_the_layer(shape):
    lower, upper = box(shape=shape)
    pattern = r"layer 0 \(Conv2d\)" if shape[0] != 1 else r"layer 4 \(Linear\).*first weighted layer 0 \(Conv2d\) takes \[1, H, W\]"
    with pytest.raises(ValueError, match=pattern):
        sr.compute_bounds(conv_net(), lower, upper, LABELS)


def test_missing_time_dimension_refused_when_the_input_shape_is_known():
    images = torch.rand(2, 1, 4, 4).bernoulli()  # [B, 1, 4, 4]: would be read as T' = 2, B = 1
    net = fc_net(input_shape=(1, 4, 4))
    with pytest.raises(ValueError, match=r"time-major \[T', B, \*input_shape\].*input_shape \(1, 4, 4\).*time dimension missing"):
        sr.compute_bounds(net, images, images, torch.tensor([0]))
    with pytest.raises(ValueError, match=r"time-major \[T, B, \*input_shape\]"):
        net(images)
    with pytest.raises(ValueError, match=r"time-major \[T', B, \*input_shape\]"):
        sr.compute_bounds(conv_net(), images, images, torch.tensor([0]))  # Conv2d: a 2-D sample has no channels
    paper = sr.paper_model("fc", "mnist")
    x = torch.zeros(3, 1, 28, 28)
    with pytest.raises(ValueError, match=r"input_shape \(1, 28, 28\)"):
        sr.compute_bounds(paper, x, x, torch.tensor([0]))
    assert sr.compute_bounds(paper, x.unsqueeze(1), x.unsqueeze(1), torch.tensor([0]), method="ibp").shape == (1, 9)


def test_input_shape_the_layers_cannot_take_refused_at_construction():
    with pytest.raises(ValueError, match=r"input_shape \(1, 5, 5\).*layer 1 \(Linear\)"):
        fc_net(input_shape=(1, 5, 5))
    with pytest.raises(ValueError, match=r"input_shape\[1\] must be a positive int"):
        fc_net(input_shape=(1, 0, 16))


def test_bounds_on_another_device_than_the_network_refused():
    net = fc_net()
    lower, upper = box()
    with pytest.raises(ValueError, match=r"input bounds are on meta / meta but the network on cpu"):
        sr.compute_bounds(net, lower.to("meta"), upper.to("meta"), LABELS)


# -- radii, step counts and other numbers --------------------------------------------------------
BAD_EPS = ["0.1", True, False, None, [0.1], float("nan"), float("inf"), -0.1, 1.5, torch.tensor([0.1, 0.2])]


@pytest.mark.parametrize("eps", BAD_EPS, ids=repr)
@pytest.mark.parametrize("cls", [sr.DigitalLinf, sr.SpikeL0, sr.DirectLinf])
def test_bad_eps_refused_at_construction(cls, eps):
    with pytest.raises((TypeError, ValueError), match=rf"{cls.__name__}: eps must"):
        cls(eps)
    with pytest.raises((TypeError, ValueError), match=rf"{cls.__name__}: eps must"):
        cls(0.1).with_eps(eps)


@pytest.mark.parametrize("eps", [0, 0.25, np.float32(0.25), np.float64(0.25), torch.tensor(0.25)], ids=repr)
def test_numeric_eps_kinds_accepted_and_stored_as_float(eps):
    for cls in (sr.DigitalLinf, sr.SpikeL0, sr.DirectLinf):
        pert = cls(eps)
        assert type(pert.eps) is float and pert.eps == float(eps)


@pytest.mark.parametrize("low, high", [(float("nan"), 1.0), (0.0, float("inf")), ("0", 1.0), (1.0, 0.0)])
def test_bad_direct_range_refused(low, high):
    with pytest.raises((TypeError, ValueError), match="DirectLinf: (low|high|need low < high)"):
        sr.DirectLinf(0.1, low, high)


@pytest.mark.parametrize("steps", [0, -1, 3.0, True, "3", None])
def test_bad_steps_refused(steps):
    with pytest.raises(ValueError, match="steps must be a positive int"):
        sr.DigitalLinf(0.1).bounds(torch.rand(2, 1, 4, 4), steps)


@pytest.mark.parametrize("kwargs, error", [
    (dict(final_eps="0.1", ramp_steps=3), TypeError), (dict(final_eps=float("inf"), ramp_steps=3), ValueError),
    (dict(final_eps=True, ramp_steps=3), TypeError), (dict(final_eps=0.1, ramp_steps=2.0), ValueError),
    (dict(final_eps=0.1, ramp_steps=-1), ValueError),
])
def test_bad_eps_schedule_refused(kwargs, error):
    with pytest.raises(error, match="EpsSchedule: (final_eps|ramp_steps) must"):
        sr.EpsSchedule(**kwargs)


def test_validators():
    assert check_positive_int("n", np.int64(3)) == 3
    assert check_number("x", 0, 0.0, low_open=False) == 0.0
    with pytest.raises(ValueError, match=r"x must lie in \(0, 1\] and be finite, got 0.0"):
        check_number("x", 0.0, 0.0, 1.0, low_open=True)
    with pytest.raises(ValueError, match="x must be a finite number, got nan"):
        check_number("x", float("nan"))
    with pytest.raises(TypeError, match="bool tensor"):
        check_number("x", torch.tensor(True))


def test_labels_of_the_wrong_kind_refused():
    with pytest.raises(TypeError, match="labels must be an integer tensor of shape \\[2\\], got list"):
        sr.compute_bounds(fc_net(), *box(), [0, 1])
    with pytest.raises(TypeError, match="perturbation must be an snn_robust Perturbation"):
        sr.certified_loss(fc_net(), torch.rand(2, 1, 4, 4), LABELS, 0.1)


# -- adapters ------------------------------------------------------------------------------------
def _leaky_model(snntorch, **leaky):
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 3),
                         snntorch.Leaky(**{"beta": 0.5, "threshold": 0.25, **leaky}, init_hidden=True, output=True))


@pytest.mark.parametrize("value", BAD_VALUES)
@pytest.mark.parametrize("name", ["beta", "threshold"])
def test_snntorch_nonfinite_neuron_parameter_refused_at_conversion_and_bounding(name, value):
    snntorch = pytest.importorskip("snntorch")
    with pytest.raises(ValueError, match=rf"layer model\.2 \(snntorch\.Leaky\): {name} must"):
        sr.from_snntorch(_leaky_model(snntorch, **{name: value}))
    model = _leaky_model(snntorch, learn_beta=True, learn_threshold=True)
    net = sr.from_snntorch(model, input_shape=(1, 4, 4))
    with torch.no_grad():
        getattr(model[2], name).fill_(value)
    with pytest.raises(ValueError, match=rf"layer model\.2 \(snntorch\.Leaky\): {name} must"):
        sr.compute_bounds(net, *box(), LABELS)


@pytest.mark.parametrize("param", ["weight", "bias"])
def test_snntorch_nonfinite_weight_named_by_path(param):
    snntorch = pytest.importorskip("snntorch")
    model = nn.Sequential(nn.Sequential(nn.Flatten(), nn.Linear(16, 3)),
                          snntorch.Leaky(beta=0.5, threshold=0.25, init_hidden=True, output=True))
    net = sr.from_snntorch(model)
    with torch.no_grad():
        getattr(model[0][1], param).view(-1)[0] = float("nan")
    with pytest.raises(ValueError, match=rf"layer model\.0\.1 \(Linear\) {param} contains 1 NaN"):
        sr.compute_bounds(net, *box(), LABELS, method="best")
    with pytest.raises(ValueError, match=rf"layer model\.0\.1 \(Linear\) {param}"):
        sr.from_snntorch(model)


def test_snntorch_input_shape_refuses_a_missing_time_dimension():
    snntorch = pytest.importorskip("snntorch")
    net = sr.from_snntorch(_leaky_model(snntorch), input_shape=(1, 4, 4))
    images = torch.rand(2, 1, 4, 4).bernoulli()
    with pytest.raises(ValueError, match=r"input_shape \(1, 4, 4\).*time dimension missing"):
        sr.compute_bounds(net, images, images, torch.tensor([0]))


def _sj():
    pytest.importorskip("spikingjelly")
    from spikingjelly.activation_based import functional, layer, neuron

    return functional, layer, neuron


@pytest.mark.parametrize("attr, value", [("v_threshold", float("nan")), ("v_threshold", float("inf")),
                                         ("tau", float("nan")), ("tau", float("inf")), ("tau", 0.0), ("tau", 0.5)])
def test_spikingjelly_bad_node_parameter_refused_at_conversion_and_bounding(attr, value):
    _, layer, neuron = _sj()
    node = neuron.LIFNode(tau=2.0, v_threshold=0.25)
    model = nn.Sequential(layer.Flatten(), layer.Linear(16, 3), node)
    net = sr.from_spikingjelly(model, input_shape=(1, 4, 4))
    setattr(node, attr, value)  # a node changed after conversion (e.g. by a schedule)
    pattern = rf"layer model\.2 \(spikingjelly neuron\.LIFNode\): {attr} must"
    with pytest.raises(ValueError, match=pattern):
        sr.compute_bounds(net, *box(), LABELS)
    with pytest.raises(ValueError, match=pattern):
        sr.from_spikingjelly(model)


def test_spikingjelly_plif_nan_weight_refused():
    _, layer, neuron = _sj()
    node = neuron.ParametricLIFNode(init_tau=2.0, v_threshold=0.25)
    net = sr.from_spikingjelly(nn.Sequential(layer.Flatten(), layer.Linear(16, 3), node))
    with torch.no_grad():
        node.w.fill_(float("nan"))
    with pytest.raises(ValueError, match=r"layer model\.2 \(spikingjelly neuron\.ParametricLIFNode\): w must be finite"):
        sr.compute_bounds(net, *box(), LABELS)


@pytest.mark.parametrize("node_name", ["IzhikevichNode", "KLIFNode"])
@pytest.mark.parametrize("mode", ["m", "s"])
def test_spikingjelly_unsupported_node_is_named_not_the_layer_before_it(node_name, mode):
    functional, layer, neuron = _sj()
    if not hasattr(neuron, node_name):
        pytest.skip(f"this SpikingJelly has no {node_name}")
    model = nn.Sequential(layer.Flatten(), layer.Linear(16, 4), getattr(neuron, node_name)())
    functional.set_step_mode(model, mode)
    with pytest.raises(sr.UnsupportedLayerError, match=rf"^model\.2 \(spikingjelly neuron\.{node_name}\) is not supported"):
        sr.from_spikingjelly(model)
