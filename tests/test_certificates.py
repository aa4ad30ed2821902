"""Certificates beyond the sampled ones: over the coding maps (Clopper-Pearson), and over
the whole l_0 ball of an event recording (exact first layer, checked by enumerating every
recording within the flip budget against our forward and snnTorch's)."""
from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import snn_robust as sr
from snn_robust.bounds.api import margin_spec
from snn_robust.bounds.graph import bound_graph
from snn_robust.certificates.events import _flip_budget_view, _FlipBudgetOp
from snn_robust.errors import UnsupportedLayerError


# -- Clopper-Pearson ----------------------------------------------------------------------------
def test_clopper_pearson_closed_forms():
    n, conf = 20, 0.95
    lower = sr.clopper_pearson_lower(torch.tensor([0, n]), n, conf)
    assert lower[0] == 0
    # K = n: P[Bin(n, p) >= n] = p^n = 1 - conf
    assert lower[1].item() == pytest.approx((1 - conf) ** (1 / n), abs=1e-12)
    assert lower[1].item() <= (1 - conf) ** (1 / n)  # the bracket's lower end: never above the quantile


def test_clopper_pearson_is_the_beta_quantile():
    stats = pytest.importorskip("scipy.stats")
    for n in (1, 7, 50, 400):
        k = torch.arange(1, n + 1)
        for conf in (0.5, 0.9, 0.999):
            ours = sr.clopper_pearson_lower(k, n, conf).numpy()
            ref = stats.beta.ppf(1 - conf, k.numpy(), n - k.numpy() + 1)
            assert abs(ours - ref).max() < 1e-9


@pytest.mark.parametrize("args", [(torch.tensor([3]), 0, 0.9), (torch.tensor([3]), 2, 0.9), (torch.tensor([1]), 5, 1.0),
                                  (torch.tensor([0.5]), 5, 0.9)])
def test_clopper_pearson_refuses(args):
    with pytest.raises(ValueError):
        sr.clopper_pearson_lower(*args)


# -- the certificate over coding maps -----------------------------------------------------------
def _tiny_rate_net(seed: int) -> sr.SpikingNetwork:
    torch.manual_seed(seed)
    net = sr.SpikingNetwork([nn.Flatten(), nn.Linear(3, 6), sr.LIF(0.5, 0.4), nn.Linear(6, 2), sr.LIF(0.5, 0.3)])
    with torch.no_grad():
        net.layers[1].weight.mul_(2.0)
    return net


def _exact_probability(net, image, label, eps, steps, method) -> float:
    """P over uniform maps that ``method`` certifies: each element's map value falls below
    ``x - eps`` (both bounds 1), between (unstable) or above ``x + eps`` (both 0); the
    bounds depend on the map only through these 3^(T' D) patterns, enumerated here."""
    x = image.flatten()
    lo, hi = (x - eps).clamp(0, 1), (x + eps).clamp(0, 1)
    probs = torch.stack([lo, hi - lo, 1 - hi], -1).double()  # [D, 3]: one, unstable, zero
    D = x.numel()
    pats = torch.tensor(list(itertools.product(range(3), repeat=steps * D))).reshape(-1, steps, D)
    lower = (pats == 0).float().permute(1, 0, 2).reshape(steps, -1, *image.shape[1:])
    upper = (pats <= 1).float().permute(1, 0, 2).reshape(steps, -1, *image.shape[1:])
    weight = probs[torch.arange(D), pats].flatten(1).prod(1)  # [P]
    with torch.no_grad():
        margins = sr.compute_bounds(net, lower, upper, labels=label.repeat(pats.shape[0]), method=method)
    return float((weight * (margins > 0).all(1).double()).sum())


def test_coding_certificate_holds_at_its_confidence():
    """Repeat the certificate on 400 copies of one image (each copy draws its own maps):
    the bound exceeds the exact probability in at most about 1 - confidence of them."""
    net, eps, steps, method = _tiny_rate_net(5), 0.05, 2, "crown-ibp"
    image, label = torch.tensor([[0.9, 0.1, 0.5]]), torch.tensor([0])
    p = _exact_probability(net, image, label, eps, steps, method)
    assert 0.1 < p < 0.9  # otherwise the check below is vacuous
    reps, n_maps, conf = 400, 12, 0.8
    gen = torch.Generator().manual_seed(0)
    cert = sr.certify_over_codings(net, image.repeat(reps, 1), label.repeat(reps), sr.DigitalLinf(eps), n_maps, conf,
                                   steps=steps, method=method, generator=gen)
    # the counts are Bin(n_maps, p): their mean is within 4 standard errors of n_maps * p
    assert abs(cert.certified.double().mean() - n_maps * p) < 4 * math.sqrt(n_maps * p * (1 - p) / reps)
    failures = (cert.lower > p).double().mean().item()
    alpha = 1 - conf
    assert failures <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / reps)
    assert (cert.lower > 0).any()  # not a trivial bound either


def test_one_map_is_the_sampled_certificate():
    """With one map and the same generator, the count is the paper's sampled certificate."""
    net, eps = _tiny_rate_net(1), 0.1
    images, labels = torch.rand(16, 3, generator=torch.Generator().manual_seed(1)), torch.randint(0, 2, (16,))
    cert = sr.certify_over_codings(net, images, labels, sr.DigitalLinf(eps), 1, 0.9, steps=3, method="ibp",
                                   generator=torch.Generator().manual_seed(5))
    lower, upper = sr.DigitalLinf(eps).bounds(images, 3, torch.Generator().manual_seed(5))
    sampled = (sr.compute_bounds(net, lower, upper, labels, method="ibp") > 0).all(1)
    assert torch.equal(cert.certified, sampled.long())
    assert torch.equal(cert.lower > 0, sampled)


def test_maps_batched_or_not_give_the_same_counts():
    net, eps = _tiny_rate_net(2), 0.05
    images, labels = torch.rand(5, 3, generator=torch.Generator().manual_seed(2)), torch.randint(0, 2, (5,))
    runs = [sr.certify_over_codings(net, images, labels, sr.DigitalLinf(eps), 9, 0.9, steps=2, method="ibp",
                                    generator=torch.Generator().manual_seed(0), max_rows=rows) for rows in (5, 4096)]
    assert runs[0].certified.sum() > 0
    assert torch.equal(runs[0].certified, runs[1].certified)  # the same maps, drawn map by map
    assert runs[0].to_dict()["n_maps"] == 9


def test_coding_certificate_refuses():
    net = _tiny_rate_net(0)
    images, labels = torch.rand(2, 3), torch.tensor([0, 1])
    with pytest.raises(TypeError, match="DigitalLinf"):
        sr.certify_over_codings(net, images, labels, sr.SpikeL0(0.1), 5)
    with pytest.raises(ValueError, match="n_maps"):
        sr.certify_over_codings(net, images, labels, sr.DigitalLinf(0.1), 0)
    with pytest.raises(ValueError, match="confidence"):
        sr.certify_over_codings(net, images, labels, sr.DigitalLinf(0.1), 5, 1.0)
    with pytest.raises(ValueError, match="labels"):
        sr.certify_over_codings(net, images, labels[:1], sr.DigitalLinf(0.1), 5)


# -- the l_0 ball of an event recording ---------------------------------------------------------
def all_flips(x: torch.Tensor, k: int, per_step: bool) -> torch.Tensor:
    """Every recording within ``k`` flips of one sample ``x`` ``[T, 1, X...]`` (in the
    whole recording, or in each step), stacked along the batch: ``[T, P, X...]``."""
    T = x.shape[0]
    flat = x.reshape(T, -1)

    def flipped(positions, budget):  # every set of <= budget positions
        return [c for r in range(budget + 1) for c in itertools.combinations(positions, r)]

    if per_step:
        per = [flipped([(t, i) for i in range(flat.shape[1])], k) for t in range(T)]
        combos = [sum(c, ()) for c in itertools.product(*per)]
    else:
        combos = flipped([(t, i) for t in range(T) for i in range(flat.shape[1])], k)
    out = []
    for combo in combos:
        xp = flat.clone()
        for t, i in combo:
            xp[t, i] = 1 - xp[t, i]
        out.append(xp)
    return torch.stack(out, 1).reshape(T, len(out), *x.shape[2:])


def assert_l0_sound(forward, net, x, label, k, per_step, methods=sr.METHODS, tol=1e-5):
    """Every method's margin and rate bounds hold for ``forward`` on every recording
    within the budget; returns the margin bounds."""
    with torch.no_grad():
        recs = all_flips(x, k, per_step)
        rates = forward(recs)
        true = (margin_spec(label, rates.shape[1]) * rates.unsqueeze(1)).sum(-1)  # [P, C-1]
        found = {}
        for m in methods:
            lb = sr.event_l0_bounds(net, x, k, label, m, per_step=per_step)
            rl, ru = sr.event_l0_bounds(net, x, k, None, m, per_step=per_step)
            assert (lb <= true + tol).all(), f"{m}: margin bound above a true margin by {(lb - true).max():g}"
            assert (rates >= rl - tol).all() and (rates <= ru + tol).all(), f"{m}: rate outside its bounds"
            found[m] = lb
    return found, true


def _fc(seed: int) -> sr.SpikingNetwork:
    torch.manual_seed(seed)
    return sr.SpikingNetwork([nn.Flatten(), nn.Linear(6, 6), sr.LIF(0.5, 0.4), nn.Linear(6, 3), sr.LIF(0.5, 0.3)])


def _conv(seed: int, pool: bool) -> sr.SpikingNetwork:
    torch.manual_seed(seed)
    head = [nn.AvgPool2d(2)] if pool else [nn.Conv2d(2, 3, 3, padding=1, stride=2)]
    return sr.SpikingNetwork([*head, sr.LIF(0.5, 0.3 if pool else 0.5), nn.Flatten(), nn.Linear((2 if pool else 3) * 4, 3),
                              sr.LIF(0.5, 0.3)])


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), k=st.integers(0, 2), per_step=st.booleans(), arch=st.sampled_from(["fc", "conv", "pool"]))
def test_event_bounds_hold_for_every_recording_within_k_flips(seed, k, per_step, arch):
    gen = torch.Generator().manual_seed(seed)
    net = _fc(seed) if arch == "fc" else _conv(seed, arch == "pool")
    shape = (2, 3) if arch == "fc" else (2, 4, 4)
    steps = 2 if arch == "fc" or k < 2 else 1
    x = torch.rand(steps, 1, *shape, generator=gen).bernoulli(generator=gen)
    label = torch.randint(0, 3, (1,), generator=gen)
    assert_l0_sound(net, net, x, label, k, per_step)


def test_no_flips_gives_the_point_bounds():
    net = _fc(4)
    x = torch.rand(3, 4, 2, 3, generator=torch.Generator().manual_seed(4)).bernoulli()
    labels = torch.tensor([0, 1, 2, 0])
    for m in ("ibp", "crown-ibp"):
        assert torch.allclose(sr.event_l0_bounds(net, x, 0, labels, m), sr.compute_bounds(net, x, x, labels, m), atol=1e-6)


def test_a_budget_covering_every_element_gives_the_full_box():
    net = _conv(5, pool=False)
    x = torch.rand(2, 3, 2, 4, 4, generator=torch.Generator().manual_seed(5)).bernoulli()
    labels = torch.tensor([0, 1, 2])
    ours = sr.event_l0_bounds(net, x, 32, labels, "ibp", per_step=True)
    box = sr.compute_bounds(net, torch.zeros_like(x), torch.ones_like(x), labels, "ibp")
    assert torch.allclose(ours, box, atol=1e-5)


def _first_op(net, k, steps, per_step) -> _FlipBudgetOp:
    view = _flip_budget_view(net, k, steps, per_step)
    return next(op for op in bound_graph(view)[0].ops if isinstance(op, _FlipBudgetOp))


@pytest.mark.parametrize("arch", ["fc", "conv", "pool"])
@pytest.mark.parametrize("k", [1, 2])
def test_first_layer_interval_is_exact(arch, k):
    """Per step, the first layer's interval is the min and max over all <= k flips."""
    net = _fc(6) if arch == "fc" else _conv(6, arch == "pool")
    shape = (6,) if arch == "fc" else (2, 4, 4)
    x = torch.rand(1, 1, *shape, generator=torch.Generator().manual_seed(k)).bernoulli()
    op = _first_op(net, k, 1, True)
    with torch.no_grad():
        lo, hi = op.interval(x[0], x[0])
        outs = op.module(all_flips(x, k, True)[0])  # [P, ...]
    assert torch.allclose(lo[0], outs.amin(0), atol=1e-6) and torch.allclose(hi[0], outs.amax(0), atol=1e-6)


@pytest.mark.parametrize("per_step", [False, True])
def test_final_concretisation_is_exact(per_step):
    """``min over the set of sum_t a_t . op(x'_t)`` for random coefficients ``a``: the
    concretisation equals the enumerated minimum (summed over the steps as S-CROWN does)."""
    net, k, T = _conv(7, pool=False), 2, 2
    gen = torch.Generator().manual_seed(7)
    x = torch.rand(T, 1, 2, 3, 3, generator=gen).bernoulli(generator=gen)  # 3x3 frames: 2x2 outputs, as 4x4
    op = _first_op(net, k, T, per_step)
    A = torch.randn(T, 1, 5, 3, 2, 2, generator=gen)  # [T, B, S, out...]
    with torch.no_grad():
        value = op.concretize(A.flatten(0, 1), x.flatten(0, 1), x.flatten(0, 1)).reshape(T, 1, 5).sum(0)
        recs = all_flips(x, k, per_step)  # [T, P, ...]
        out = op.module(recs.flatten(0, 1)).reshape(T, recs.shape[1], 3, 2, 2)
        exact = torch.einsum("tsabc,tpabc->ps", A[:, 0], out).amin(0)
    assert torch.allclose(value[0], exact, atol=1e-5)


def test_event_bounds_hold_for_snntorch_forward():
    pytest.importorskip("snntorch")
    from test_adapters_snntorch import conv_model, fc_model, rates_of

    # exact: dyadic weights, so membranes land exactly on the threshold in every framework
    for arch, build, shape, k, exact in (("fc", fc_model, (3, 4), 2, False), ("fc", fc_model, (3, 4), 2, True),
                                         ("conv", conv_model, (2, 8, 8), 1, True)):
        cfg = dict(reset="zero", reset_delay=True, per_neuron_beta=False, per_neuron_th=False, learn_beta=False,
                   learn_threshold=False, output=False, exact=exact, analog=False)
        gen = torch.Generator().manual_seed(11)
        model = build(cfg, gen)
        net = sr.from_snntorch(model)
        x = torch.rand(2, 1, *shape, generator=gen).bernoulli(generator=gen)
        label = torch.tensor([1])
        for per_step in (False, True):
            ours, true = assert_l0_sound(rates_of(model), net, x, label, k, per_step, methods=("ibp", "crown-ibp"))
            ref, _ = assert_l0_sound(net, net, x, label, k, per_step, methods=("ibp", "crown-ibp"))
            assert torch.equal(ours["ibp"], ref["ibp"])


@pytest.mark.parametrize(
    "build, error",
    [
        (lambda: sr.SpikingNetwork([nn.MaxPool2d(2), sr.LIF(), nn.Flatten(), nn.Linear(8, 3), sr.LIF()]), UnsupportedLayerError),
        (lambda: sr.SpikingNetwork([sr.LIF(), nn.Flatten(), nn.Linear(32, 3), sr.LIF()]), UnsupportedLayerError),
        (lambda: sr.SpikingNetwork([nn.Flatten(), nn.Linear(32, 3), sr.LIF()], input_coding="direct"), ValueError),
    ],
)
def test_event_bounds_refuse_unsupported_networks(build, error):
    with pytest.raises(error, match="event_l0_bounds"):
        sr.event_l0_bounds(build(), torch.ones(2, 1, 2, 4, 4), 1, torch.tensor([0]))


def test_event_bounds_refuse_bad_inputs():
    net = _fc(0)
    x = torch.ones(2, 1, 2, 3)
    with pytest.raises(ValueError, match="binary"):
        sr.event_l0_bounds(net, x * 0.5, 1)
    with pytest.raises(ValueError, match="flip budget"):
        sr.event_l0_bounds(net, x, -1)
    with pytest.raises(ValueError, match="steps"):
        sr.event_l0_bounds(net, x, 1, steps=3)
    with pytest.raises(ValueError, match=r"\[T, B, X"):
        sr.event_l0_bounds(net, x[0, 0], 1)


# -- over a data set, and in the command line -----------------------------------------------------
def test_event_certified_error_without_flips_is_the_clean_error():
    """With k = 0 the set is the observed recording, whose bounds are exact: verified iff correct."""
    net = _fc(8)
    gen = torch.Generator().manual_seed(8)
    frames = torch.rand(12, 3, 2, 3, generator=gen).bernoulli(generator=gen)  # sample-major [N, T, X...]
    labels = torch.randint(0, 3, (12,), generator=gen)
    err0 = sr.certificates.event_certified_error(net, (frames, labels), 0, method="ibp", batch_size=5)
    clean = sr.clean_error(net, (frames, labels), coding="spike", progress=False)
    assert err0.error == clean.error and err0.num_samples == 12
    err2 = sr.certificates.event_certified_error(net, (frames, labels), 2, method="crown-ibp")
    assert err2.error >= err0.error


def test_coding_certificate_summary_over_batches():
    net = _tiny_rate_net(5)
    images = torch.tensor([[0.9, 0.1, 0.5]]).repeat(10, 1)
    labels = torch.zeros(10, dtype=torch.long)
    r = sr.certificates.coding_certificate_summary(net, (images, labels), sr.DigitalLinf(0.05), 20, 0.9, steps=2, batch_size=3)
    assert r["num_samples"] == 10 and len(r["lower"]) == 10
    shares = torch.tensor(r["certified"]) / 20
    assert 0 < r["certified_share"] < 1 and r["certified_share"] == pytest.approx(float(shares.mean()))
    assert all(lo <= s for lo, s in zip(r["lower"], shares.tolist()))  # the CP bound never exceeds K / n


@pytest.fixture(scope="module")
def cli_root(tmp_path_factory):
    from test_recipes import write_fixture_root

    return write_fixture_root(tmp_path_factory.mktemp("cert-data"), n_train=10, n_test=10, n_nmnist=(1, 1))


@pytest.mark.parametrize("dataset, extra, key", [("mnist", ["--codings", "3", "--confidence", "0.9"], "over_codings"),
                                                  ("nmnist", ["--flips", "1", "--per-step"], "event_l0")])
def test_certify_command_reports_the_certificates(tmp_path, cli_root, capsys, dataset, extra, key):
    import json

    from snn_robust import cli
    from snn_robust.recipes import save_model

    model = save_model(tmp_path / "m.pt", sr.paper_model("fc", dataset), arch="fc", dataset=dataset)
    out = tmp_path / "cert.json"
    common = ["--data-root", str(cli_root), "--no-verify-data", "--samples", "3", "--seeds", "1", "--method", "ibp"]
    assert cli.main(["-q", "certify", "--model", str(model), "--eps", "0.01", "--tprime", "2", *extra, *common,
                     "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert ("coding maps" if key == "over_codings" else "flips per step") in printed
    res = json.loads(out.read_text())[key]
    assert len(res) == 1
    if key == "over_codings":
        assert res[0]["n_maps"] == 3 and res[0]["confidence"] == 0.9 and len(res[0]["lower"]) == 3
    else:
        assert res[0]["details"]["k"] == 1 and res[0]["num_samples"] == 3
    wrong = ["--flips", "1"] if dataset == "mnist" else ["--codings", "3"]
    assert cli.main(["certify", "--model", str(model), "--eps", "0.01", *wrong, *common]) == 2
    assert ("--flips applies" if dataset == "mnist" else "--codings applies") in capsys.readouterr().err
