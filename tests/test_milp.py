"""The MILP verifier (snn_robust.bounds.milp): every float trajectory is a feasible point of
its encoding, its bounds never exceed a true margin (our forward and snnTorch's), it is
complete on tiny nets (exhaustive enumeration) up to the documented band, its
counterexamples are real, and it only ever tightens the other methods."""
from __future__ import annotations

import copy
import itertools

import numpy as np
import pytest
import torch
from helpers import neuron, sample_inside, scale_weights
from hypothesis import example, given, settings
from hypothesis import strategies as st
from test_bounds_soundness import configs as base_configs
from torch import nn

import snn_robust as sr
from snn_robust.bounds import milp as M
from snn_robust.bounds.api import margin_spec
from snn_robust.bounds.ibp import s_ibp
from snn_robust.bounds.milp_encoding import MILPModel, MILPUnsupportedError, encode, milp_supported
from snn_robust.network import fold_time

try:  # snnTorch's own step loop (the adapter tests'), for the soundness check against it
    from test_adapters_snntorch import snntorch_run
except (ImportError, pytest.skip.Exception):
    snntorch_run = None


@st.composite
def configs(draw):
    """The soundness tests' neuron and network draws, at most 4 steps, plus dyadic weights
    (membranes exactly on the threshold) and the number of LIF layers."""
    return dict(draw(base_configs()), steps=draw(st.integers(1, 4)), dyadic=draw(st.booleans()),
                depth=draw(st.integers(1, 3)))


def _net(c, n_in: int = 6, width: int = 5, classes: int = 3, coding: str = "spike", conv: bool = False):
    """A random FC net (``depth`` LIF layers; with ``dyadic``, weights in quarters so that
    membranes land exactly on the threshold), or a small CONV net with average pooling."""
    torch.manual_seed(c["seed"])
    gen = torch.Generator().manual_seed(c["seed"])

    def lif(size):
        shape = (size,) if c["per_neuron"] and size else None
        return neuron(c["alpha"], 0.25 * round(c["th"] * 4) or 0.25 if c["dyadic"] else c["th"], c["reset"],
                      c["firing"], c["decay_reset"], shape, gen)

    if conv:
        layers = [nn.Conv2d(1, 2, 3, 2, 1), lif(None), nn.AvgPool2d(2), nn.Flatten(), lif(None),
                  nn.Linear(2 * 2 * 2, classes), lif(classes)]
        shape = (1, 8, 8)
    else:
        sizes = [n_in] + [width] * (c["depth"] - 1) + [classes]
        layers = []
        for a, b in zip(sizes, sizes[1:]):
            layers += [nn.Linear(a, b), lif(b)]
        shape = (n_in,)
    net = sr.SpikingNetwork(layers, input_coding=coding)
    if c["dyadic"]:
        with torch.no_grad():
            for p in net.parameters():
                p.copy_(torch.randint(-2, 3, p.shape, generator=gen) * 0.25)
    else:
        scale_weights(net, c["gain"])
    return net, shape, gen


def _trajectory(net: sr.SpikingNetwork, model: MILPModel, x: torch.Tensor) -> np.ndarray:
    """The values that the forward pass of one input ``[T, 1, ...]`` gives the encoding's
    variables (its inputs, membranes, spikes and reset products)."""
    h, mems, trains = x, [], []
    with torch.no_grad():
        for stage in net.stages:
            for layer in stage.spatial:
                h = fold_time(h, layer)
            h, m = stage.lif(h, return_membrane=True)
            mems.append(m[:, 0].flatten(1).double())
            trains.append(h[:, 0].flatten(1).double())
    flat = x[:, 0].flatten(1).double()
    values = np.zeros(len(model.lo))
    for i, (kind, *where) in enumerate(model.tags):
        if kind == "x":
            values[i] = flat[where[0], where[1]]
        else:
            k, t, n = where
            m, s = mems[k][t, n], trains[k][t, n]
            values[i] = {"m": m, "s": s, "z": m * (1 - s)}[kind]
    return values


def _assert_feasible(model: MILPModel, values: np.ndarray) -> None:
    lo, hi = np.array(model.lo), np.array(model.hi)
    assert ((values >= lo) & (values <= hi)).all(), "a forward value outside its variable's bounds"
    if not model.row_lo:
        return
    rows = model.constraint()
    r = rows.A @ values
    worst = int(np.argmax(np.maximum(rows.lb - r, r - rows.ub)))
    assert (r >= rows.lb).all() and (r <= rows.ub).all(), (
        f"forward trajectory violates row {worst}: {rows.lb[worst]} <= {r[worst]} <= {rows.ub[worst]}"
    )


def _box(c, net, shape, gen, B, coding):
    x = torch.rand(B, *shape, generator=gen)
    if coding == "direct":
        return sr.DirectLinf(min(c["eps"], 0.2)).bounds(x, c["steps"])
    return sr.DigitalLinf(c["eps"]).bounds(x, c["steps"], gen)


@settings(max_examples=40, deadline=None)
@example(c=dict(alpha=0.5, th=0.5, reset="zero", firing=">", decay_reset=False, per_neuron=False, steps=3, eps=0.3,
                gain=1.0, dyadic=True, depth=2, seed=3), coding="spike", conv=False)
@given(configs(), st.sampled_from(["spike", "direct"]), st.booleans())
def test_every_forward_trajectory_is_a_feasible_point(c, coding, conv):
    """The soundness argument itself: for inputs sampled in the box, the float forward's
    inputs, membranes, spikes and reset products satisfy every row and bound of the
    encoding exactly (no tolerance), including membranes exactly on the threshold; so does
    the trajectory computed in float64 (nearly exact arithmetic: the other end of the band
    that covers every summation order)."""
    net, shape, gen = _net(c, coding=coding, conv=conv and coding == "spike")
    shape = (1, 8, 8) if conv and coding == "spike" else shape
    lower, upper = _box(c, net, shape, gen, 2, coding)
    exact = copy.deepcopy(net).double()
    with torch.no_grad():
        ibp = s_ibp(net, lower, upper)
    for b in range(2):
        model, _, _ = encode(net, ibp, lower, upper, b, 10**6)
        for x in sample_inside(lower[:, b:b + 1], upper[:, b:b + 1], 15, gen, coding == "spike"):
            _assert_feasible(model, _trajectory(net, model, x))
            _assert_feasible(model, _trajectory(exact, model, x.double()))


@settings(max_examples=30, deadline=None)
@given(configs(), st.sampled_from(["spike", "direct"]))
def test_milp_bounds_never_exceed_a_true_margin(c, coding):
    net, shape, gen = _net(c, coding=coding)
    lower, upper = _box(c, net, shape, gen, 3, coding)
    labels = torch.randint(0, 3, (3,), generator=gen)
    spec = margin_spec(labels, 3)
    with torch.no_grad():
        lb = sr.compute_bounds(net, lower, upper, labels, method="milp")
        for x in sample_inside(lower, upper, 40, gen, coding == "spike"):
            true = (spec * net(x).unsqueeze(1)).sum(-1)
            assert (lb <= true + 1e-6).all(), (lb - true).max()


@settings(max_examples=15, deadline=None)
@given(configs())
def test_milp_sound_against_snntorch(c):
    """The bound against snnTorch's own forward (a ``snn.Leaky`` model, converted)."""
    if snntorch_run is None:
        pytest.skip("snntorch is not installed")
    import snntorch as snn

    torch.manual_seed(c["seed"])
    gen = torch.Generator().manual_seed(c["seed"])
    reset = "zero" if c["reset"] == "zero" else "subtract"
    model = nn.Sequential(
        nn.Linear(6, 5), snn.Leaky(beta=c["alpha"], threshold=c["th"], reset_mechanism=reset, init_hidden=True),
        nn.Linear(5, 3), snn.Leaky(beta=c["alpha"], threshold=c["th"], reset_mechanism=reset, init_hidden=True),
    )
    scale_weights(model, c["gain"])
    try:
        net = sr.from_snntorch(model)
        x = torch.rand(2, 6, generator=gen)
        labels = torch.randint(0, 3, (2,), generator=gen)
        lower, upper = sr.DigitalLinf(c["eps"]).bounds(x, c["steps"], gen)
        spec = margin_spec(labels, 3)
        with torch.no_grad():
            lb = sr.compute_bounds(net, lower, upper, labels, method="milp")
        for xs in sample_inside(lower, upper, 30, gen, True):
            true = (spec * snntorch_run(model, xs)[0].unsqueeze(1)).sum(-1)
            assert (lb <= true + 1e-6).all(), (lb - true).max()
    finally:
        snn.SpikingNeuron.instances.clear()


def _exhaustive(net, lower, upper, spec, b):
    """The smallest spike count of each row over every input of sample ``b``'s box, and the
    smallest distance of a reachable membrane to its threshold."""
    T = lower.shape[0]
    free = (lower[:, b] != upper[:, b]).nonzero().tolist()
    assert len(free) <= 12
    lowest = torch.full((spec.shape[1],), float("inf"), dtype=torch.float64)
    closest = float("inf")
    for bits in itertools.product([0.0, 1.0], repeat=len(free)):
        x = lower[:, b:b + 1].clone()
        for (t, *i), v in zip(free, bits):
            x[(t, 0, *i)] = v
        with torch.no_grad():
            counts = torch.round(spec[b].double() @ (net(x)[0].double() * T))
            h = x
            for stage in net.stages:
                for layer in stage.spatial:
                    h = fold_time(h, layer)
                h, m = stage.lif(h, return_membrane=True)
                closest = min(closest, float((m - stage.lif.threshold).abs().min()))
        lowest = torch.minimum(lowest, counts)
    return lowest, closest


@settings(max_examples=40, deadline=None)
@example(c=dict(alpha=0.5, th=0.5, reset="zero", firing=">", decay_reset=False, per_neuron=False, steps=2, eps=0.4,
                gain=1.0, dyadic=True, depth=2, seed=7), search=0)
@given(configs(), st.sampled_from([0, 50]))
def test_complete_on_tiny_nets(c, search):
    """Against every input of the box (at most 2^12): a row is verified exactly when the
    smallest count is >= 1, a row whose smallest count is <= 0 is falsified with a real
    counterexample, except where a reachable membrane lies within the band ``delta``
    (here below 1e-4) of its threshold: there the encoding lets both spikes happen, so the
    row may stay undecided (never wrongly verified). With and without the box search
    (``search=0``: every counterexample comes from the solver's points)."""
    c = dict(c, steps=min(c["steps"], 3))
    net, shape, gen = _net(c, n_in=4, width=4)
    lower, upper = _box(c, net, shape, gen, 2, "spike")
    keep = torch.rand(lower.shape, generator=gen) < 0.5  # at most 12 free inputs per sample
    upper = torch.where(keep, upper, lower)
    labels = torch.randint(0, 3, (2,), generator=gen)
    spec = margin_spec(labels, 3)
    found = M.milp_verify(net, lower, upper, spec, time_limit=30, stop_early=False, search=search)
    for b in range(2):
        lowest, closest = _exhaustive(net, lower, upper, spec, b)
        for s in range(spec.shape[1]):
            status = found.status[b][s]
            assert found.lower[b, s] <= lowest[s] / lower.shape[0] + 1e-6
            if status == "verified":
                assert lowest[s] >= 1
            elif status == "falsified":
                assert lowest[s] <= 0
                x = found.counterexamples[(b, s)]
                assert ((x >= lower[:, b]) & (x <= upper[:, b])).all()
                count = torch.round(spec[b, s].double() @ (net(x.unsqueeze(1))[0].double() * lower.shape[0]))
                assert count <= 0
            else:
                assert status == "undecided"
                assert closest < 1e-4, f"row {s} undecided with every membrane {closest} from its threshold"


@settings(max_examples=20, deadline=None)
@given(configs())
def test_milp_only_tightens_and_best_is_the_maximum(c):
    net, shape, gen = _net(c)
    lower, upper = _box(c, net, shape, gen, 3, "spike")
    labels = torch.randint(0, 3, (3,), generator=gen)
    with torch.no_grad():
        got = {m: sr.compute_bounds(net, lower, upper, labels, method=m)
               for m in ("ibp", "crown-ibp", "crown-ibp-adaptive", "crown-ibp-optimized", "milp", "best")}
    assert (got["crown-ibp"] >= got["ibp"]).all()
    assert (got["milp"] >= got["crown-ibp"]).all()
    for m in ("ibp", "crown-ibp", "milp"):
        assert (got["best"] >= got[m]).all(), m
    # without labels (rate bounds) the MILP stage does not run: crown-ibp's rate bounds
    rates = sr.compute_bounds(net, lower, upper, method="milp")
    reference = sr.compute_bounds(net, lower, upper, method="crown-ibp")
    assert all(torch.equal(a, b) for a, b in zip(rates, reference))


def test_milp_decides_what_the_relaxations_cannot():
    """A margin that needs the spikes' correlation: one input drives two hidden neurons in
    opposite directions (exactly one fires), the output needs one of them; every relaxation
    loses the correlation, the MILP proves the margin (one count in one step)."""
    hidden = nn.Linear(1, 2)
    out = nn.Linear(2, 2)
    with torch.no_grad():
        hidden.weight.copy_(torch.tensor([[2.0], [-2.0]]))
        hidden.bias.copy_(torch.tensor([-1.0, 1.0]))
        out.weight.copy_(torch.tensor([[1.0, 1.0], [1.0, 1.0]]))
        out.bias.copy_(torch.tensor([0.0, -1.5]))
    net = sr.SpikingNetwork([hidden, sr.LIF(0.0, 0.5), out, sr.LIF(0.0, 0.75)])
    lower, upper = torch.zeros(1, 1, 1), torch.ones(1, 1, 1)
    labels = torch.tensor([0])
    with torch.no_grad():
        relaxed = max(sr.compute_bounds(net, lower, upper, labels, method=m).item()
                      for m in ("ibp", "crown-ibp", "crown-ibp-optimized", "crown-full"))
        exact = sr.compute_bounds(net, lower, upper, labels, method="milp").item()
        best = sr.compute_bounds(net, lower, upper, labels, method="best").item()
    assert relaxed <= 0 < exact == best == 1.0


def test_unsupported_networks_are_refused_by_name_and_skipped_by_best():
    net = sr.SpikingNetwork([nn.Conv2d(1, 2, 3), nn.MaxPool2d(2), sr.LIF(), nn.Flatten(), nn.Linear(18, 3), sr.LIF()])
    gen = torch.Generator().manual_seed(0)
    lower, upper = sr.DigitalLinf(0.3).bounds(torch.rand(2, 1, 8, 8, generator=gen), 2, gen)
    labels = torch.tensor([0, 1])
    with pytest.raises(MILPUnsupportedError, match=r"layer 1 \(MaxPool2d\)|MaxPool2d"):
        M.milp_verify(net, lower, upper, margin_spec(labels, 3))
    assert "MaxPool2d" in milp_supported(net)
    with torch.no_grad():
        assert torch.equal(sr.compute_bounds(net, lower, upper, labels, method="milp"),
                           sr.compute_bounds(net, lower, upper, labels, method="crown-ibp"))


def test_limits_fall_back_to_the_prior_bound():
    c = dict(alpha=0.5, th=0.3, reset="zero", firing=">", decay_reset=False, per_neuron=False, steps=3, eps=0.4,
             gain=2.0, dyadic=False, depth=2, seed=1)
    net, shape, gen = _net(c)
    lower, upper = _box(c, net, shape, gen, 3, "spike")
    labels = torch.randint(0, 3, (3,), generator=gen)
    with torch.no_grad():
        prior = sr.compute_bounds(net, lower, upper, labels, method="crown-ibp")
    found = M.milp_verify(net, lower, upper, margin_spec(labels, 3), prior=prior, max_binaries=0, search=0)
    assert torch.equal(found.lower, prior)
    assert all(s in ("prior", "skipped") for row in found.status for s in row)
    with M.milp_limits(max_binaries=0), torch.no_grad():
        assert torch.equal(sr.compute_bounds(net, lower, upper, labels, method="milp"), prior)
    with pytest.raises(ValueError, match="time_limit"):
        with M.milp_limits(time_limit=0):
            pass


def test_node_limit_is_a_deterministic_budget():
    """With no time limit and a node limit the answer cannot depend on the machine's load:
    two runs agree row by row; what a small budget proves, a large one proves too (an
    infeasibility proof does not depend on the budget), and the limit reaches compute_bounds
    through milp_limits."""
    c = dict(alpha=0.5, th=0.3, reset="zero", firing=">", decay_reset=False, per_neuron=False, steps=3, eps=0.4,
             gain=2.0, dyadic=False, depth=3, seed=4)
    net, shape, gen = _net(c, n_in=8, width=6)
    lower, upper = _box(c, net, shape, gen, 6, "spike")
    labels = torch.randint(0, 3, (6,), generator=gen)
    spec = margin_spec(labels, 3)
    runs = {n: [M.milp_verify(net, lower, upper, spec, time_limit=float("inf"), node_limit=n, search=0,
                              stop_early=False) for _ in range(2)] for n in (1, 10_000)}
    for a, b in runs.values():
        assert a.status == b.status and torch.equal(a.lower, b.lower)
    small, large = runs[1][0], runs[10_000][0]
    for row_s, row_l in zip(small.status, large.status):
        for s, l in zip(row_s, row_l):
            assert s != "verified" or l == "verified"
    assert (large.lower >= small.lower).all()
    with torch.no_grad():  # and both stay sound against the network's own forward pass
        for x in sample_inside(lower, upper, 40, gen, True):
            true = (spec * net(x).unsqueeze(1)).sum(-1)
            assert (large.lower <= true + 1e-6).all() and (small.lower <= true + 1e-6).all()
    with M.milp_limits(time_limit=float("inf"), node_limit=10_000) as limits, torch.no_grad():
        assert limits["node_limit"] == 10_000
        first = sr.compute_bounds(net, lower, upper, labels, method="milp")
        assert torch.equal(first, sr.compute_bounds(net, lower, upper, labels, method="milp"))
    assert M._LIMITS["node_limit"] is None  # restored after the block
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="node_limit"):
            M.milp_verify(net, lower, upper, spec, node_limit=bad)
        with pytest.raises(ValueError, match="node_limit"):
            with M.milp_limits(node_limit=bad):
                pass


def test_milp_verify_refuses_bad_input_by_name():
    c = dict(alpha=0.5, th=0.3, reset="zero", firing=">", decay_reset=False, per_neuron=False, steps=3, eps=0.4,
             gain=2.0, dyadic=False, depth=2, seed=1)
    net, shape, gen = _net(c)
    lower, upper = _box(c, net, shape, gen, 2, "spike")
    spec = margin_spec(torch.tensor([0, 1]), 3)
    nan = lower.clone()
    nan[0, 0, 0] = float("nan")
    cases = [
        ((nan, upper, spec), {}, "NaN"),
        ((upper, lower, spec), {}, "lower > upper"),
        ((lower.long(), upper.long(), spec), {}, "floating point"),
        ((lower[:, :, :-1], upper[:, :, :-1], spec), {}, "cannot take"),
        ((lower, upper, spec[:1]), {}, r"spec must be a tensor \[B, S, C\] with B = 2"),
        ((lower, upper, spec), {"prior": torch.zeros(5)}, r"prior must be a tensor \[B, S\]"),
        ((lower, upper, spec * 0.5), {}, "integer coefficients"),
        ((lower, upper, spec), {"time_limit": float("nan")}, "time_limit"),
        ((lower, upper, spec), {"max_binaries": -1}, "max_binaries"),
    ]
    for args, kwargs, message in cases:
        with pytest.raises((ValueError, TypeError), match=message):
            M.milp_verify(net, *args, **kwargs)
    with pytest.raises(ValueError, match="max_binaries"):
        with M.milp_limits(max_binaries=1.5):
            pass
