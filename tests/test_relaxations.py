"""Neuron relaxations on dense grids of membrane values that include the threshold."""
from __future__ import annotations

import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from snn_robust.bounds.relaxations import (
    fire_interval,
    fire_relaxation,
    reset_interval,
    reset_relaxation,
    soft_reset_interval,
    stability,
)
from snn_robust.neuron import spike


def _grid(ml: float, mu: float, th: float) -> torch.Tensor:
    points = torch.linspace(ml, mu, 401)
    extra = torch.tensor([th, ml, mu])
    return torch.cat([points, extra[(extra >= ml) & (extra <= mu)]])


intervals = st.tuples(st.floats(-2, 2), st.floats(0, 3)).map(lambda p: (p[0], p[0] + p[1]))


@settings(max_examples=200, deadline=None)
@given(intervals, st.floats(0.05, 1.5), st.sampled_from([">", ">="]), st.floats(0, 1), st.floats(0, 1),
       st.sampled_from(["paper", "adaptive", "weights"]))
@example((0.61328125, 0.65234375), 0.6333664870711484, ">", 0.6171875, 0.0, "weights")  # steep line, zero at th
def test_relaxations_hold_on_dense_grid(interval, th, firing, w1, w2, mode):
    ml, mu = interval
    th_t = torch.tensor(th)
    m = _grid(ml, mu, th)
    L, U = torch.full_like(m, ml), torch.full_like(m, mu)
    stab = stability(L, U, th_t)
    s = spike(m - th_t, firing)
    z = m * (1 - s)

    weights = (torch.full_like(m, w1), torch.full_like(m, w2)) if mode == "weights" else (None, None)
    f = fire_relaxation(L, U, stab, *weights)
    # a line through (th, 0) evaluated in float32 rounds twice: its residue scales with the
    # terms' magnitudes (steep lines reach |dl * m| ~ 20), not with a fixed 1e-6
    ulp = torch.finfo(m.dtype).eps
    tol_l = 1e-6 + 4 * ulp * ((f.dl * m).abs() + f.bl.abs())
    tol_u = 1e-6 + 4 * ulp * ((f.du * m).abs() + f.bu.abs())
    assert (f.dl * m + f.bl <= s + tol_l).all()
    assert (f.du * m + f.bu >= s - tol_u).all()

    r = reset_relaxation(L, U, stab, adaptive=mode == "adaptive", lower_weight=weights[0], upper_weight=weights[1])
    assert (r.al * m + r.bl * s + r.cl <= z + 1e-5).all()
    assert (r.au * m + r.bu * s + r.cu >= z - 1e-5).all()

    sl, su = fire_interval(stab)
    assert (sl <= s).all() and (s <= su).all()
    zl, zu = reset_interval(L, U, stab)
    assert (zl <= z + 1e-6).all() and (z <= zu + 1e-6).all()


@settings(max_examples=200, deadline=None)
@given(intervals, st.floats(0.05, 1.5), st.sampled_from([">", ">="]), st.floats(0, 1), st.sampled_from([0.0, 1.0]))
def test_soft_reset_interval_is_the_exact_range(interval, th, firing, alpha, decayed):
    ml, mu = interval
    th_t, alpha_t = torch.tensor(th), torch.tensor(alpha)
    kappa = alpha_t if decayed else torch.tensor(1.0)
    m = _grid(ml, mu, th)
    L, U = torch.full_like(m, ml), torch.full_like(m, mu)
    stab = stability(L, U, th_t)
    carry = alpha_t * m - kappa * th_t * spike(m - th_t, firing)
    lo, hi = soft_reset_interval(L, U, stab, alpha_t, kappa, th_t)
    assert (lo <= carry + 1e-6).all() and (carry <= hi + 1e-6).all()
    # tight: the ends are reached on the grid (away from the threshold band, where a
    # step at either end of the band is allowed for)
    if min(abs(ml - th), abs(mu - th)) > 1e-3:
        assert lo[0] >= carry.min() - 1e-2 and hi[0] <= carry.max() + 1e-2


def test_stable_neurons_are_exact():
    L = torch.tensor([0.0, 2.0])
    U = torch.tensor([0.5, 3.0])
    stab = stability(L, U, torch.tensor(1.0))
    assert stab.silent.tolist() == [True, False] and stab.fires.tolist() == [False, True]
    f = fire_relaxation(L, U, stab)
    assert f.dl.tolist() == [0.0, 0.0] and f.du.tolist() == [0.0, 0.0]
    assert f.bl.tolist() == [0.0, 1.0] and f.bu.tolist() == [0.0, 1.0]
    r = reset_relaxation(L, U, stab)
    # silent: z = m exactly; firing: z = 0 exactly
    assert r.al.tolist() == [1.0, 0.0] and r.au.tolist() == [1.0, 0.0]
    assert r.cl.tolist() == [0.0, 0.0] and r.cu.tolist() == [0.0, 0.0]


def test_threshold_exactly_at_an_end_is_unstable_for_both_comparisons():
    """``ml == th`` (silent under ``>``, firing under ``>=``) and ``mu == th`` are unstable."""
    th = torch.tensor(0.25)
    stab = stability(torch.tensor([0.25, 0.0]), torch.tensor([0.5, 0.25]), th)
    assert stab.unstable.all()
