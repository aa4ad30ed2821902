"""Training: eps schedule, training steps, the fit loop's checkpoints, resume and logs."""
from __future__ import annotations

import json
import math
import random
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils.data import TensorDataset

from snn_robust import LIF, DigitalLinf, DirectLinf, SpikeL0, SpikingNetwork, bound_logits, certified_loss, compute_bounds
from snn_robust.coding import SpikeFrames
from snn_robust.schedules import EpsSchedule
from snn_robust.training import (
    CheckpointError,
    CleanLoss,
    EpochBatchSampler,
    RobustTrainingStep,
    TrainConfig,
    TrainingStep,
    atomic_save,
    fit,
    load_checkpoint,
    resolve_device,
)

IN, HID, OUT = 16, 24, 4


def tiny_net(seed: int = 0) -> SpikingNetwork:
    torch.manual_seed(seed)
    net = SpikingNetwork([nn.Flatten(), nn.Linear(IN, HID), LIF(), nn.Linear(HID, OUT), LIF()])
    with torch.no_grad():  # enough drive that the network spikes from the start
        for layer in net.layers:
            if isinstance(layer, nn.Linear):
                layer.weight.mul_(2.0)
    return net


def tiny_data(n: int = 40, seed: int = 1) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, OUT, (n,), generator=g)
    protos = torch.rand(OUT, 1, 4, 4, generator=g)
    x = (protos[y] + 0.15 * torch.randn(n, 1, 4, 4, generator=g)).clamp(0, 1)
    return TensorDataset(x, y)


# --------------------------------------------------------------------------------------------
# EpsSchedule


def expected_eps(k: int, final: float, ramp: int, start_step: int, start_eps: float) -> Fraction:
    if k < start_step:
        return Fraction(start_eps)
    if k - start_step >= ramp:
        return Fraction(final)
    return Fraction(start_eps) + (Fraction(final) - Fraction(start_eps)) * Fraction(k - start_step, ramp)


@pytest.mark.parametrize(
    "final, ramp, hold, start_step, start_eps",
    [(0.12, 10, 5, 0, 0.0), (0.12, 7, 3, 4, 0.02), (0.005, 1, 0, 0, 0.0), (0.3, 13, 2, 2, 0.3)],
)
def test_eps_schedule_follows_definition_at_every_iteration(final, ramp, hold, start_step, start_eps):
    s = EpsSchedule(final, ramp_steps=ramp, hold_steps=hold, start_step=start_step, start_eps=start_eps)
    assert s.total_steps == start_step + ramp + hold
    values = [s(k) for k in range(s.total_steps + 5)]
    for k, v in enumerate(values):
        assert math.isclose(v, float(expected_eps(k, final, ramp, start_step, start_eps)), rel_tol=1e-12, abs_tol=1e-15), k
    # exact at the ends of the phases
    assert values[start_step] == start_eps
    assert all(v == final for v in values[start_step + ramp :])
    assert all(v == start_eps for v in values[:start_step])
    # linear: equal increments inside the ramp
    inc = np.diff(values[start_step : start_step + ramp + 1])
    assert np.allclose(inc, (final - start_eps) / ramp)


def test_eps_schedule_ramp_zero_jumps_to_final():
    s = EpsSchedule(0.1, ramp_steps=0, hold_steps=3, start_step=2, start_eps=0.01)
    assert [s(k) for k in range(6)] == [0.01, 0.01, 0.1, 0.1, 0.1, 0.1]
    assert EpsSchedule(0.1, ramp_steps=0)(0) == 0.1


def test_eps_schedule_from_epochs_and_state():
    s = EpsSchedule.from_epochs(0.1, ramp_epochs=2.5, hold_epochs=1, steps_per_epoch=4, start_epoch=0.5)
    assert (s.ramp_steps, s.hold_steps, s.start_step) == (10, 4, 2)
    assert EpsSchedule.from_state_dict(json.loads(json.dumps(s.state_dict()))) == s


@pytest.mark.parametrize(
    "kwargs",
    [dict(final_eps=-0.1, ramp_steps=1), dict(final_eps=0.1, ramp_steps=-1), dict(final_eps=0.1, ramp_steps=1.5),
     dict(final_eps=float("nan"), ramp_steps=1), dict(final_eps=0.1, ramp_steps=1, hold_steps=-2)],
)
def test_eps_schedule_rejects_bad_parameters(kwargs):
    with pytest.raises(ValueError):
        EpsSchedule(**kwargs)


# --------------------------------------------------------------------------------------------
# Losses and single steps


def test_clean_loss_forms():
    rates = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.3, 0.6]])
    labels = torch.tensor([0, 2])
    assert torch.allclose(CleanLoss("ce", 1.0)(rates, labels), nn.functional.cross_entropy(rates, labels))
    assert torch.allclose(CleanLoss("ce", 5.0)(rates, labels), nn.functional.cross_entropy(5 * rates, labels))
    onehot = torch.tensor([[1.0, 0, 0], [0, 0, 1.0]])
    assert torch.allclose(CleanLoss("mse")(rates, labels), ((rates - onehot) ** 2).mean())
    with pytest.raises(ValueError, match="kind must be one of"):
        CleanLoss("hinge")
    with pytest.raises(ValueError, match="scale"):
        CleanLoss("ce", 0.0)


def test_robust_step_lowers_certified_loss_on_a_fixed_batch():
    net = tiny_net()
    x, y = tiny_data(32).tensors
    pert = DigitalLinf(0.05)

    def bound_loss() -> float:
        with torch.no_grad():
            return float(certified_loss(net, x, y, pert, steps=3, generator=torch.Generator().manual_seed(7)))

    before = bound_loss()
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    step = RobustTrainingStep(pert, 0.05, generator=torch.Generator().manual_seed(0), clip_norm=1.0)
    history = [step(net, opt, x, y) for _ in range(12)]
    after = bound_loss()
    assert after < before - 0.05, (before, after)
    assert history[-1]["bound_loss"] < history[0]["bound_loss"]
    assert set(history[0]) >= {"loss", "clean_loss", "bound_loss", "clean_acc", "verified", "eps", "grad_norm", "lr"}
    assert all(0.0 <= h["verified"] <= 1.0 and h["eps"] == 0.05 for h in history)
    assert step.step == 12


def test_robust_step_uses_the_scheduled_eps_and_weights():
    net = tiny_net()
    x, y = tiny_data(8).tensors
    sched = EpsSchedule(0.08, ramp_steps=4, hold_steps=2)
    step = RobustTrainingStep(DigitalLinf(0.5), sched, clean_weight=0.25, bound_weight=2.0, generator=torch.Generator().manual_seed(0))
    opt = torch.optim.SGD(net.parameters(), lr=0.0)
    out = [step(net, opt, x, y) for _ in range(6)]
    assert [o["eps"] for o in out] == [sched(k) for k in range(6)]
    for o in out:  # the default regulariser (0.1) counted once: the bound loss excludes it
        assert math.isclose(o["loss"], 0.25 * o["clean_loss"] + 2.0 * o["bound_loss"] + 0.1 * o["unstable_penalty"],
                            rel_tol=1e-5)
    # the state round-trips, generator included
    state = step.state_dict()
    other = RobustTrainingStep(DigitalLinf(0.5), 0.0, generator=torch.Generator())
    other.load_state_dict(state)
    assert other.step == 6 and other.eps_schedule == sched and torch.equal(other.generator.get_state(), step.generator.get_state())


@settings(max_examples=12, deadline=None)
@given(scale=st.floats(0.25, 8.0), method=st.sampled_from(["ibp", "crown-ibp"]), eps=st.floats(0.0, 0.2),
       seed=st.integers(0, 2**16))
def test_certified_loss_options_follow_the_definition_and_stay_sound(scale, method, eps, seed):
    """``reduction="none"`` is ``CE(scale * -[0, lb])`` per sample with ``lb`` from
    compute_bounds on the same input bounds; "mean" / "sum" reduce it; and every per-sample
    loss is >= the loss of the true margins of spike inputs drawn inside those bounds, run
    through the network's own forward pass."""
    net, (x, y) = tiny_net(), tiny_data(6, seed=seed).tensors
    pert = DigitalLinf(eps)
    lower, upper = pert.bounds(x, 3, torch.Generator().manual_seed(seed))
    with torch.no_grad():
        per_sample, margins = certified_loss(net, x, y, pert, 3, method, torch.Generator().manual_seed(seed),
                                             bound_scale=scale, unstable_weight=0.0, reduction="none",
                                             return_margins=True)
        reference = compute_bounds(net, lower, upper, labels=y, method=method)
        assert torch.equal(margins, reference)
        expected = nn.functional.cross_entropy(bound_logits(reference, y) * scale, y, reduction="none")
        assert torch.allclose(per_sample, expected, rtol=1e-6, atol=1e-7)
        for reduction, reduce in (("mean", torch.mean), ("sum", torch.sum)):
            got = certified_loss(net, x, y, pert, 3, method, torch.Generator().manual_seed(seed), bound_scale=scale,
                                 unstable_weight=0.0, reduction=reduction)
            assert torch.allclose(got, reduce(per_sample), rtol=1e-6)
        g = torch.Generator().manual_seed(seed + 1)
        for _ in range(4):
            spikes = lower + (upper - lower) * (torch.rand(lower.shape, generator=g) < 0.5).float()
            rates = net(spikes)
            true_margins = rates.gather(1, y[:, None]) - rates
            keep = torch.arange(OUT)[None, :] != y[:, None]
            true = true_margins[keep].view(len(y), OUT - 1)
            assert (true >= margins - 1e-6).all()
            sampled = nn.functional.cross_entropy(bound_logits(true, y) * scale, y, reduction="none")
            assert (per_sample >= sampled - 1e-5).all()


def test_certified_loss_refuses_options_that_do_not_fit():
    net, (x, y) = tiny_net(), tiny_data(4).tensors
    with pytest.raises(ValueError, match="bound_scale must lie in"):
        certified_loss(net, x, y, DigitalLinf(0.1), bound_scale=0.0)
    with pytest.raises(ValueError, match="reduction must be one of"):
        certified_loss(net, x, y, DigitalLinf(0.1), reduction="max")
    with pytest.raises(ValueError, match="fusion=True .* neither return_margins"):
        certified_loss(net, x, y, DigitalLinf(0.1), fusion=True, return_margins=True)
    with pytest.raises(ValueError, match="bound_scale must lie in"):
        RobustTrainingStep(DigitalLinf(0.1), 0.1, bound_scale=-1.0)


def test_robust_step_bound_term_is_certified_loss_at_the_scheduled_eps():
    """The step's bound loss and verified share are certified_loss's at eps(k), with the
    step's T', method and bound_scale, the input bounds drawn after the coding."""
    net, (x, y) = tiny_net(), tiny_data(8).tensors
    step = RobustTrainingStep(DigitalLinf(0.0), EpsSchedule(0.1, ramp_steps=2), steps=4, bound_steps=2, method="ibp",
                              bound_scale=3.0, generator=torch.Generator().manual_seed(5))
    opt = torch.optim.SGD(net.parameters(), lr=0.0)
    g = torch.Generator().manual_seed(5)
    for k in range(3):
        out = step(net, opt, x, y)
        DigitalLinf(0.0).encode(x, 4, g)  # the step's coding draw comes first
        with torch.no_grad():
            loss, margins = certified_loss(net, x, y, DigitalLinf(0.05 * min(k, 2)), 2, "ibp", g, bound_scale=3.0,
                                           unstable_weight=0.0, return_margins=True)
        assert math.isclose(out["bound_loss"], float(loss), rel_tol=1e-6)
        assert out["verified"] == float((margins > 0).all(1).float().mean())


def test_grad_clip_bounds_the_update_and_reports_the_unclipped_norm():
    net = tiny_net()
    x, y = tiny_data(8).tensors
    w0 = [p.detach().clone() for p in net.parameters()]
    opt = torch.optim.SGD(net.parameters(), lr=1.0)
    m = RobustTrainingStep(DigitalLinf(0.1), 0.1, clip_norm=1e-3, generator=torch.Generator().manual_seed(0))(net, opt, x, y)
    moved = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.detach() - q) for p, q in zip(net.parameters(), w0)]))
    assert m["grad_norm"] > 1e-3
    assert moved <= 1e-3 * (1 + 1e-4)


def test_natural_step_on_spike_input_lowers_clean_loss():
    net = tiny_net()
    g = torch.Generator().manual_seed(3)
    x = (torch.rand(5, 16, 1, 4, 4, generator=g) < 0.4).float()  # [T, B, X...] spike frames
    y = torch.randint(0, OUT, (16,), generator=g)
    step = TrainingStep(SpikeL0(0.0), steps=5, clean_loss=CleanLoss("ce", 5.0))
    opt = torch.optim.Adam(net.parameters(), lr=0.02)
    out = [step(net, opt, x, y) for _ in range(15)]
    assert out[-1]["clean_loss"] < out[0]["clean_loss"]
    assert "bound_loss" not in out[0]


def test_natural_step_takes_a_coding_object_as_its_perturbation_sets_coding():
    g = torch.Generator().manual_seed(4)
    x = (torch.rand(5, 16, 1, 4, 4, generator=g) < 0.4).float()
    y = torch.randint(0, OUT, (16,), generator=g)
    results = []
    for coding in (SpikeL0(0.0), SpikeFrames(5)):
        torch.manual_seed(0)
        net = tiny_net()
        step = TrainingStep(coding, steps=5, clean_loss=CleanLoss("ce", 5.0))
        assert step.coding == SpikeFrames(5) and step.steps == 5
        opt = torch.optim.Adam(net.parameters(), lr=0.02)
        results.append([step(net, opt, x, y)["clean_loss"] for _ in range(3)])
    assert results[0] == results[1]
    with pytest.raises(ValueError, match="contradicts the coding's own steps"):
        TrainingStep(SpikeFrames(5), steps=4)
    with pytest.raises(TypeError, match="coding object"):
        TrainingStep("rate")
    with pytest.raises(TypeError, match="perturbation must be a Perturbation"):
        RobustTrainingStep(SpikeFrames(5), 0.1)
    with pytest.raises(TypeError, match="robust run needs a perturbation set"):
        fit(tiny_net(), TensorDataset(x.transpose(0, 1), y), SpikeFrames(5), TrainConfig.quick_robust(0.1))


# --------------------------------------------------------------------------------------------
# Configs, devices, sampler


def test_paper_defaults():
    nat = TrainConfig.natural()
    assert (nat.optimizer, nat.lr, nat.momentum, nat.lr_milestones, nat.lr_gamma, nat.epochs, nat.batch_size, nat.steps) == (
        "sgd", 0.01, 0.9, (55,), 0.1, 80, 128, 10)
    assert not nat.robust and nat.clip_norm is None
    rob = TrainConfig.robust()
    assert (rob.lr, rob.momentum, rob.lr_milestones, rob.clip_norm, rob.bound_steps, rob.method) == (5e-4, 0.9, (), 0.25, 3, "crown-ibp")
    assert (rob.clean_weight, rob.bound_weight, rob.ramp_epochs, rob.hold_epochs, rob.epochs, rob.eps) == (0.4, 0.6, 250, 50, 300, 0.12)
    assert TrainConfig.robust(ramp_epochs=2, hold_epochs=0.5).epochs == 3
    quick = TrainConfig.quick_robust(0.1, lr=2e-3)
    assert (quick.optimizer, quick.lr, quick.method, quick.eps, quick.epochs, quick.bound_weight) == ("adam", 2e-3, "ibp", 0.1, 3, 0.6)
    with pytest.raises(ValueError, match="optimizer must be one of"):
        TrainConfig(optimizer="rmsprop")


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda")
    with pytest.raises(ValueError, match="device must be"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


def test_epoch_batch_sampler_is_reproducible_and_skips():
    s = EpochBatchSampler(10, 3, seed=5)
    s.set_epoch(2)
    full = list(s)
    assert len(full) == 4 and sorted(sum(full, [])) == list(range(10))
    s.set_epoch(2, start_batch=2)
    assert list(s) == full[2:] and len(s) == 2
    s.set_epoch(3)
    assert list(s) != full
    assert EpochBatchSampler(10, 3, drop_last=True).batches_per_epoch == 3


# --------------------------------------------------------------------------------------------
# fit: resume and checkpoints


def noisy_transform(x, y):
    """Uses the global torch, Python and NumPy RNGs, so a resume must restore all three."""
    jitter = 0.01 * torch.rand_like(x) + 0.001 * random.random() + 0.001 * float(np.random.rand())
    return (x + jitter).clamp(0, 1), y


# 40 samples, batch 8: 5 steps per epoch, 3 epochs = 15 steps; eps ramps over 2 epochs (10 steps).
CONFIG = TrainConfig.robust(0.06, epochs=3, batch_size=8, ramp_epochs=2, hold_epochs=1, lr=0.02, steps=4, bound_steps=2)


def run(tmp: Path | None, **kwargs):
    return fit(tiny_net(), tiny_data(), DigitalLinf(0.0), CONFIG, run_dir=tmp, progress=False, batch_transform=noisy_transform,
               log_every=2, **kwargs)


def strip_time(history):
    return {k: [{c: v for c, v in row.items() if c != "time"} for row in rows] for k, rows in history.items()}


def reseed_globals(seed: int) -> None:
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)


def final_state(tmp: Path):
    ck = load_checkpoint(tmp / "last.pt")
    return ck, [ck["model"][k] for k in sorted(ck["model"])]


def test_eps_is_carried_once_by_the_config(tmp_path):
    """The run's radius is config.eps: the perturbation gives its kind (eps 0) or the same
    eps, never a second radius; the checkpoint identity is that kind at config.eps."""
    with pytest.raises(ValueError, match=r"perturbation's eps 0.1 differs from TrainConfig.eps 0.06"):
        fit(tiny_net(), tiny_data(), DigitalLinf(0.1), CONFIG, progress=False)
    assert CONFIG.training_set(DigitalLinf(0.0)) == CONFIG.training_set(DigitalLinf(0.06)) == DigitalLinf(0.06)
    assert TrainConfig.natural().training_set(DigitalLinf(0.3)) == DigitalLinf(0.0)  # natural: the coding only
    assert CONFIG.training_set(DirectLinf(0.0, low=-1.0, high=2.0)) == DirectLinf(0.06, low=-1.0, high=2.0)
    run(tmp_path, max_steps=2)
    identity = repr(DigitalLinf(0.06))
    assert load_checkpoint(tmp_path / "last.pt")["perturbation"] == identity
    assert json.loads((tmp_path / "config.json").read_text())["perturbation"] == identity
    resumed = fit(tiny_net(), tiny_data(), DigitalLinf(0.06), CONFIG, run_dir=tmp_path, resume=True, progress=False,
                  batch_transform=noisy_transform, max_steps=3)  # the same run, its eps now given twice
    assert resumed.step == 3
    with pytest.raises(CheckpointError, match=r"it was trained with DigitalLinf\(eps=0.06\), now DirectLinf"):
        fit(tiny_net(), tiny_data(), DirectLinf(0.0), CONFIG, run_dir=tmp_path, resume=True, progress=False)


def test_resume_mid_ramp_matches_an_uninterrupted_run(tmp_path):
    reseed_globals(0)
    straight = run(tmp_path / "a")
    globals_after = (torch.rand(3), random.random(), np.random.rand())
    ck_a, weights_a = final_state(tmp_path / "a")

    reseed_globals(0)
    first = run(tmp_path / "b", max_steps=7)  # stops mid-epoch 1, mid-ramp
    assert not first.completed and first.step == 7
    assert 0 < load_checkpoint(tmp_path / "b" / "last.pt")["batch"] < 5
    reseed_globals(99)  # a "new process": other global RNG states
    resumed = run(tmp_path / "b", resume=True)
    assert resumed.completed and resumed.step == 15
    globals_resumed = (torch.rand(3), random.random(), np.random.rand())
    ck_b, weights_b = final_state(tmp_path / "b")

    assert all(torch.equal(a, b) for a, b in zip(weights_a, weights_b))
    assert strip_time(straight.history) == strip_time(resumed.history)
    assert torch.equal(ck_a["training_step"]["generator"], ck_b["training_step"]["generator"])
    assert ck_a["training_step"]["step"] == ck_b["training_step"]["step"] == 15
    assert torch.equal(globals_after[0], globals_resumed[0]) and globals_after[1:] == globals_resumed[1:]
    eps = [row["eps"] for row in straight.history["steps"]]
    assert eps == sorted(eps) and eps[-1] == 0.06
    # the log files hold each row once, as in the history
    rows = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert strip_time({"e": rows}) == strip_time({"e": resumed.history["epochs"]})
    csv_lines = (tmp_path / "b" / "steps.csv").read_text().splitlines()
    assert csv_lines[0].startswith("epoch,step,clean_acc,clean_loss,bound_loss,loss,verified,eps,lr")
    assert len(csv_lines) == 1 + len(resumed.history["steps"])


class Killed(Exception):
    pass


def test_killed_run_resumes_from_its_last_checkpoint(tmp_path):
    reseed_globals(0)
    straight = run(tmp_path / "a")
    _, weights_a = final_state(tmp_path / "a")

    calls = {"n": 0}

    def dies_at_step_9(x, y):
        calls["n"] += 1
        if calls["n"] == 9:
            raise Killed
        return noisy_transform(x, y)

    reseed_globals(0)
    with pytest.raises(Killed):
        fit(tiny_net(), tiny_data(), DigitalLinf(0.0), CONFIG, run_dir=tmp_path / "b", progress=False,
            batch_transform=dies_at_step_9, log_every=2, checkpoint_every=3)
    assert load_checkpoint(tmp_path / "b" / "last.pt")["step"] == 6
    reseed_globals(5)
    resumed = run(tmp_path / "b", resume=True, checkpoint_every=3)
    _, weights_b = final_state(tmp_path / "b")
    assert all(torch.equal(a, b) for a, b in zip(weights_a, weights_b))
    assert strip_time(straight.history) == strip_time(resumed.history)


def test_resume_refuses_a_different_config(tmp_path):
    run(tmp_path, max_steps=2)
    with pytest.raises(ValueError, match="lr: checkpoint 0.02, now 0.05"):
        fit(tiny_net(), tiny_data(), DigitalLinf(0.0), TrainConfig.robust(0.06, **{**_overrides(), "lr": 0.05}),
            run_dir=tmp_path, resume=True, progress=False)


def _overrides():
    return dict(epochs=3, batch_size=8, ramp_epochs=2, hold_epochs=1, lr=0.02, steps=4, bound_steps=2)


def test_a_failed_save_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    atomic_save({"step": 1, "w": torch.arange(4)}, path)
    real_save = torch.save

    def crash(obj, f, *args, **kwargs):
        real_save({"step": 2, "w": torch.zeros(1000)}, f)  # the temp file gets (part of) data ...
        f.flush()
        raise OSError("disk full")  # ... then the writer dies

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        atomic_save({"step": 2}, path)
    monkeypatch.setattr(torch, "save", real_save)
    loaded = load_checkpoint(path)
    assert loaded["step"] == 1 and torch.equal(loaded["w"], torch.arange(4))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no temp file left behind


def test_a_crash_while_fit_checkpoints_keeps_the_last_good_one(tmp_path, monkeypatch):
    run(tmp_path, max_steps=5)  # one full epoch, checkpointed at its end
    good = load_checkpoint(tmp_path / "last.pt")
    assert (good["epoch"], good["step"]) == (1, 5)
    real_save = torch.save

    def crash(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt  # killed during the write

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, resume=True, checkpoint_every=1)
    monkeypatch.setattr(torch, "save", real_save)
    after = load_checkpoint(tmp_path / "last.pt")
    assert (after["epoch"], after["step"]) == (1, 5)
    assert all(torch.equal(after["model"][k], good["model"][k]) for k in good["model"])
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_natural_fit_trains_and_writes_its_run_dir(tmp_path):
    cfg = TrainConfig.natural(epochs=4, batch_size=8, lr=0.05, lr_milestones=(2,), steps=4, clean_scale=5.0)
    seen = []
    result = fit(tiny_net(), tiny_data(), DigitalLinf(0.0), cfg, run_dir=tmp_path, progress=False, device="cpu",
                 evaluate=lambda net: seen.append(net.training) or {"val_acc": 0.5})
    rows = result.history["epochs"]
    assert [r["epoch"] for r in rows] == [0, 1, 2, 3]
    assert [r["lr"] for r in rows] == pytest.approx([0.05, 0.05, 0.005, 0.005])
    assert rows[-1]["clean_loss"] < rows[0]["clean_loss"]
    assert "bound_loss" not in rows[0] and rows[0]["val_acc"] == 0.5 and seen == [False] * 4
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["config"]["lr"] == 0.05 and "torch" in config["environment"]
    assert (tmp_path / "metrics.csv").read_text().splitlines()[0].split(",")[:4] == ["epoch", "step", "clean_acc", "clean_loss"]


def test_a_fractional_lr_milestone_takes_effect_at_its_iteration_and_survives_a_resume(tmp_path):
    # 40 samples, batch 8: 5 iterations per epoch; 0.6 epoch is iteration 3, 1.4 is iteration 7
    cfg = TrainConfig.natural(epochs=2, batch_size=8, lr=0.05, lr_milestones=(0.6, 1.4), lr_gamma=0.1, steps=4)
    assert cfg.lr_milestones == (0.6, 1.4)
    net_a, net_b = tiny_net(), tiny_net()
    straight = fit(net_a, tiny_data(), DigitalLinf(0.0), cfg, progress=False, device="cpu", log_every=1)
    lrs = [row["lr"] for row in straight.history["steps"]]
    assert lrs == pytest.approx([0.05] * 3 + [0.005] * 4 + [0.0005] * 3)
    first = fit(tiny_net(), tiny_data(), DigitalLinf(0.0), cfg, run_dir=tmp_path, progress=False, device="cpu",
                log_every=1, max_steps=2)
    assert not first.completed
    resumed = fit(net_b, tiny_data(), DigitalLinf(0.0), cfg, run_dir=tmp_path, resume=True, progress=False,
                  device="cpu", log_every=1)
    assert [row["lr"] for row in resumed.history["steps"]] == pytest.approx(lrs)
    assert all(torch.equal(a, b) for a, b in zip(net_a.state_dict().values(), net_b.state_dict().values()))


def test_lr_milestones_are_checked_and_whole_epochs_stay_per_epoch():
    assert TrainConfig.natural(lr_milestones=(3.0,)).lr_milestones == (3,)
    assert isinstance(TrainConfig.natural(lr_milestones=(3.0,)).lr_milestones[0], int)
    with pytest.raises(ValueError, match="lr_milestones"):
        TrainConfig.natural(lr_milestones=(-1,))
    with pytest.raises(TypeError, match="lr_milestones"):
        TrainConfig.natural(lr_milestones=("2",))
    with pytest.raises(ValueError, match="lr_milestones"):
        TrainConfig.natural(lr_milestones=(float("nan"),))


def test_fit_rejects_a_dataloader():
    with pytest.raises(TypeError, match="not a DataLoader"):
        fit(tiny_net(), torch.utils.data.DataLoader(tiny_data()), DigitalLinf(0.0), CONFIG, progress=False)
