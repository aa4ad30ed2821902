"""Short-budget training options: the cosine lr schedule, the smooth eps ramp, the training eps
factor and the kappa (clean-weight) schedule."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn
from torch.utils.data import TensorDataset

from snn_robust import LIF, DigitalLinf, SpikingNetwork
from snn_robust.schedules import EpsSchedule
from snn_robust.training import RobustTrainingStep, TrainConfig, fit, lr_factor


@given(total=st.integers(1, 400), warm=st.integers(0, 50))
def test_lr_factor_warms_up_linearly_then_decays_to_zero(total: int, warm: int) -> None:
    warm = min(warm, total)
    factors = [lr_factor(k, total, warm) for k in range(total + 3)]
    for k in range(warm):
        assert factors[k] == pytest.approx((k + 1) / warm)
    tail = factors[warm:]
    if warm < total:
        assert tail[0] == pytest.approx(1.0)
    assert all(b <= a + 1e-12 for a, b in zip(tail, tail[1:]))   # never increases after the warm-up
    assert factors[total] == pytest.approx(0.0, abs=1e-12)
    assert all(0.0 <= f <= 1.0 + 1e-12 for f in factors)


@given(final=st.floats(0.0, 1.0), start=st.floats(0.0, 1.0), ramp=st.integers(1, 200), k=st.integers(0, 300))
def test_smooth_ramp_stays_between_the_ends_and_meets_linear_at_both(final: float, start: float, ramp: int, k: int) -> None:
    smooth = EpsSchedule(final, ramp_steps=ramp, start_eps=start, shape="smooth")
    linear = EpsSchedule(final, ramp_steps=ramp, start_eps=start)
    lo, hi = min(start, final), max(start, final)
    assert lo - 1e-12 <= smooth(k) <= hi + 1e-12
    assert smooth(0) == linear(0) and smooth(ramp) == linear(ramp) == final
    if 0 < k < ramp and final > start:
        # smoothstep is below the line in the first half of the ramp and above it in the second
        # (tiny eps: the two differ by less than the tolerance, e.g. 1.5e-71 vs 1.4e-71)
        assert (smooth(k) <= linear(k) + 1e-12) == (2 * k <= ramp) or math.isclose(smooth(k), linear(k), abs_tol=1e-12)
    assert all(smooth(j) <= smooth(j + 1) + 1e-12 for j in range(ramp)) or final < start


def test_unknown_shapes_and_schedules_are_refused_by_name() -> None:
    with pytest.raises(ValueError, match="shape"):
        EpsSchedule(0.1, ramp_steps=3, shape="cubic")
    with pytest.raises(ValueError, match="eps_shape"):
        TrainConfig(eps_shape="cubic")
    with pytest.raises(ValueError, match="lr_schedule"):
        TrainConfig(lr_schedule="exp")
    with pytest.raises(ValueError, match="clean_weight_start"):
        RobustTrainingStep(DigitalLinf(0.1), 0.1, clean_weight_start=1.5)


def test_train_eps_factor_scales_the_schedule_not_the_certified_eps() -> None:
    config = TrainConfig.robust(0.12, train_eps_factor=1.5, ramp_epochs=1.0, hold_epochs=1.0, eps_shape="smooth")
    schedule = config.eps_schedule(10)
    assert config.eps == 0.12
    assert schedule.final_eps == pytest.approx(0.18) and schedule.shape == "smooth"
    assert schedule(10) == pytest.approx(0.18) and schedule(5) == pytest.approx(0.09)


@given(start=st.floats(0.0, 1.0), k=st.integers(0, 30))
def test_kappa_moves_the_clean_weight_along_the_ramp_and_keeps_the_sum(start: float, k: int) -> None:
    step = RobustTrainingStep(DigitalLinf(0.1), EpsSchedule(0.1, ramp_steps=20, hold_steps=5),
                              clean_weight=0.4, bound_weight=0.6, clean_weight_start=start)
    eps = step.eps_schedule(k)
    clean, bound = step._weights(eps)
    assert clean + bound == pytest.approx(1.0)
    assert clean == pytest.approx(start + (0.4 - start) * min(1.0, k / 20))


def _tiny() -> tuple[SpikingNetwork, TensorDataset]:
    torch.manual_seed(0)
    net = SpikingNetwork([nn.Flatten(), nn.Linear(16, 12), LIF(), nn.Linear(12, 3), LIF()])
    g = torch.Generator().manual_seed(1)
    return net, TensorDataset(torch.rand(24, 1, 4, 4, generator=g), torch.randint(0, 3, (24,), generator=g))


def test_fit_steps_the_cosine_schedule_every_iteration() -> None:
    net, data = _tiny()
    config = TrainConfig.natural(epochs=2, batch_size=8, optimizer="adam", lr=1e-2, lr_schedule="cosine", warmup_epochs=1 / 3)
    result = fit(net, data, DigitalLinf(0.0), config, log_every=1, device="cpu", progress=False)
    lrs = [row["lr"] for row in result.history["steps"]]
    assert lrs == pytest.approx([1e-2 * lr_factor(k, 6, 1) for k in range(6)])
