"""Checkpoints and model files under faults: checksums, the previous checkpoint as fallback,
stale temporaries, non-finite training, and runs killed with SIGKILL at random points that
still end bit for bit equal to an uninterrupted run."""
from __future__ import annotations

import io
import logging
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_training import CONFIG, final_state, reseed_globals, run, strip_time, tiny_data, tiny_net

from snn_robust import DigitalLinf, EpsSchedule
from snn_robust.fileio import DamagedFileError, atomic_write_bytes, load_checked, save_checked
from snn_robust.models import paper_model
from snn_robust.recipes.pipeline import ModelFileError, load_model, save_model
from snn_robust.training import (
    PREVIOUS_CHECKPOINT_NAME,
    CheckpointError,
    NonFiniteError,
    RobustTrainingStep,
    TrainConfig,
    TrainingStep,
    fit,
    load_checkpoint,
    restore_rng_state,
)
from snn_robust.training.state import FitState

TESTS = Path(__file__).parent


def flip_byte(path: Path, position: int) -> None:
    data = bytearray(path.read_bytes())
    data[position % len(data)] ^= 0xFF
    path.write_bytes(bytes(data))


def same_tensors(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# -- checksummed files -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def saved_model(tmp_path_factory) -> tuple[Path, dict]:
    torch.manual_seed(0)
    net = paper_model("fc", "mnist")
    path = save_model(tmp_path_factory.mktemp("model") / "m.pt", net, arch="fc", dataset="mnist")
    return path, {k: v.clone() for k, v in net.state_dict().items()}


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(position=st.integers(min_value=0, max_value=2**31))
def test_a_flipped_byte_in_a_model_file_is_refused_or_harmless(saved_model, tmp_path_factory, position):
    """Any single flipped byte: the file is refused, or (a byte torch's reader ignores, such as
    zip padding) it loads exactly the saved weights. Never different weights."""
    src, weights = saved_model
    path = tmp_path_factory.mktemp("flip") / "m.pt"
    path.write_bytes(src.read_bytes())
    flip_byte(path, position)
    try:
        net, _ = load_model(path)
    except ModelFileError as exc:
        assert str(path) in str(exc)
        return
    assert same_tensors(net.state_dict(), weights)


def test_model_file_checksum_detects_damage_in_the_weights(saved_model, tmp_path):
    src, _ = saved_model
    path = tmp_path / "m.pt"
    data = bytearray(src.read_bytes())
    data[len(data) // 2] ^= 0x01  # the middle of the file is inside the weights
    path.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="damaged"):
        load_model(path)
    path.write_bytes(src.read_bytes()[: len(data) // 3])
    with pytest.raises(ModelFileError, match="not a readable model file"):
        load_model(path)
    path.write_bytes(b"")
    with pytest.raises(ModelFileError, match="empty"):
        load_model(path)


def test_a_non_finite_model_is_neither_saved_nor_loaded(tmp_path):
    net = paper_model("fc", "mnist")
    with torch.no_grad():
        net.layers[1].weight[0, 0] = float("nan")
    with pytest.raises(NonFiniteError, match="non-finite weights"):
        save_model(tmp_path / "m.pt", net, arch="fc", dataset="mnist")
    assert not (tmp_path / "m.pt").exists()
    # a file written by someone else with NaN weights (valid checksum) is refused on load
    state = {k: v for k, v in net.state_dict().items()}
    save_checked({"format": "snn-robust-model/1", "arch": "fc", "dataset": "mnist", "state_dict": state}, tmp_path / "n.pt")
    with pytest.raises(ModelFileError, match="non-finite"):
        load_model(tmp_path / "n.pt")


def test_checked_files_round_trip_and_keep_the_previous_version(tmp_path):
    path, prev = tmp_path / "f.pt", tmp_path / "f.prev.pt"
    save_checked({"a": torch.arange(3), "s": "x", "n": [1, 2.5, None]}, path, keep_previous=prev)
    assert not prev.exists()
    save_checked({"a": torch.arange(4)}, path, keep_previous=prev)
    assert torch.equal(load_checked(path)["a"], torch.arange(4))
    assert load_checked(prev)["n"] == [1, 2.5, None]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.prev.pt", "f.pt"]
    atomic_write_bytes(tmp_path / "plain.bin", b"abc")
    assert (tmp_path / "plain.bin").read_bytes() == b"abc"
    assert (tmp_path / "plain.bin").stat().st_mode & 0o644 == 0o644  # not private like mkstemp's 0600


def test_a_plain_torch_file_without_checksum_is_read_with_a_warning(tmp_path, caplog):
    torch.save({"step": 3}, tmp_path / "old.pt")
    with caplog.at_level(logging.WARNING):
        assert load_checked(tmp_path / "old.pt") == {"step": 3}
    assert "carries no checksum" in caplog.text


# -- the fit state: what is saved is what is restored ------------------------------------------
def _fit_state(seed: int) -> FitState:
    net = tiny_net(seed)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[2], gamma=0.5)
    step = RobustTrainingStep(DigitalLinf(0.06), EpsSchedule(0.06, ramp_steps=4), steps=3, bound_steps=2,
                              generator=torch.Generator().manual_seed(seed))
    return FitState(net, opt, sched, step, CONFIG.to_dict(), repr(DigitalLinf(0.06)))


def _advance(state: FitState, x: torch.Tensor, y: torch.Tensor) -> None:
    metrics = state.training_step(state.net, state.optimizer, x, y)
    state.lr_scheduler.step()
    state.step += 1
    state.batch += 1
    state.epoch_mean.add(metrics, len(y))
    state.span_mean.add(metrics, len(y))
    state.history["steps"].append({"step": state.step, **metrics})


def _through_a_file(state: dict) -> dict:
    """What a checkpoint file gives back: copies (no tensor shared with the live objects),
    plain data only (``weights_only``)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def _equal(a, b) -> bool:
    """Deep equality of checkpoint data (tensors exactly)."""
    if torch.is_tensor(a) or torch.is_tensor(b):
        return torch.is_tensor(a) and torch.is_tensor(b) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(_equal(u, v) for u, v in zip(a, b))
    return a == b


@settings(max_examples=6, deadline=None)
@given(steps=st.integers(min_value=0, max_value=3))
def test_the_fit_state_restores_every_field_it_saves(steps):
    """state_dict -> load_state_dict into a state with other weights and random streams ->
    state_dict gives the same checkpoint (but the wall time), and both continue identically."""
    x, y = tiny_data(8).tensors
    reseed_globals(0)
    a = _fit_state(0)
    for _ in range(steps):
        _advance(a, x, y)
    saved = _through_a_file(a.state_dict())
    b = _fit_state(1)
    _advance(b, x, y)  # b's own progress must be overwritten, not merged
    b.load_state_dict(saved)
    again = _through_a_file(b.state_dict())
    assert again.keys() == saved.keys()
    assert all(_equal(saved[k], again[k]) for k in saved if k != "time"), [k for k in saved if not _equal(saved[k], again[k])]
    assert again["time"] >= saved["time"]
    for state in (a, b):  # the same global RNG before each continuation
        restore_rng_state(saved["rng"])
        _advance(state, x, y)
    assert _equal(a.state_dict()["model"], b.state_dict()["model"])
    assert _equal(a.history, b.history)


def test_the_fit_state_refuses_another_config_or_perturbation():
    saved = _fit_state(0).state_dict()
    other = _fit_state(0)
    other.config["lr"] = 0.5
    with pytest.raises(CheckpointError, match="different config .*lr: checkpoint"):
        other.load_state_dict(saved, source="run/last.pt")
    other = _fit_state(0)
    other.perturbation = repr(DigitalLinf(0.1))
    with pytest.raises(CheckpointError, match=r"cannot resume run/last.pt: it was trained with DigitalLinf\(eps=0.06\)"):
        other.load_state_dict(saved, source="run/last.pt")


# -- fit: fallback to the previous checkpoint --------------------------------------------------
@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The uninterrupted reference run and its final weights."""
    folder = tmp_path_factory.mktemp("straight")
    reseed_globals(0)
    result = run(folder)
    return result, final_state(folder)[1]


def _damage(kind: str, path: Path) -> None:
    if kind == "flipped":
        flip_byte(path, path.stat().st_size // 2)
    elif kind == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif kind == "empty":
        path.write_bytes(b"")
    else:  # "missing": killed between the two renames of a save
        path.unlink()


@pytest.mark.parametrize("kind", ["flipped", "truncated", "empty", "missing"])
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, straight, caplog, kind):
    reseed_globals(0)
    run(tmp_path, max_steps=7, checkpoint_every=1)
    assert load_checkpoint(tmp_path / PREVIOUS_CHECKPOINT_NAME)["step"] == 6
    _damage(kind, tmp_path / "last.pt")
    (tmp_path / ".last.pt.x1y2z3.tmp").write_bytes(b"half a checkpoint")  # left by a killed save
    reseed_globals(42)
    with caplog.at_level(logging.WARNING):
        resumed = run(tmp_path, resume=True, checkpoint_every=1)
    assert "resuming from the previous checkpoint" in caplog.text
    assert resumed.completed and resumed.step == 15
    assert all(torch.equal(a, b) for a, b in zip(straight[1], final_state(tmp_path)[1]))
    assert strip_time(resumed.history) == strip_time(straight[0].history)
    assert not list(tmp_path.glob(".last.pt.*.tmp"))
    assert (tmp_path / "last.pt.damaged").exists() == (kind != "missing")


def test_no_good_checkpoint_left_is_one_clear_error(tmp_path):
    run(tmp_path, max_steps=3, checkpoint_every=1)
    _damage("flipped", tmp_path / "last.pt")
    _damage("truncated", tmp_path / PREVIOUS_CHECKPOINT_NAME)
    with pytest.raises(CheckpointError, match="no good checkpoint is left") as info:
        run(tmp_path, resume=True)
    assert "last.pt is damaged" in str(info.value) and "previous.pt is damaged" in str(info.value)


def test_resume_with_a_changed_config_is_a_checkpoint_error(tmp_path):
    run(tmp_path, max_steps=2)
    with pytest.raises(CheckpointError, match="different config"):
        fit(tiny_net(), tiny_data(), DigitalLinf(0.0), TrainConfig.robust(0.06, epochs=3, batch_size=8, lr=0.05),
            run_dir=tmp_path, resume=True, progress=False)


# -- non-finite training -----------------------------------------------------------------------
def test_training_stops_at_the_first_non_finite_weight_and_keeps_the_good_checkpoint(tmp_path):
    reseed_globals(0)
    run(tmp_path, max_steps=5)  # a good checkpoint at step 5
    good = load_checkpoint(tmp_path / "last.pt")
    net = tiny_net()
    opt = torch.optim.SGD(net.parameters(), lr=float("inf"))  # what '--lr inf' used to do
    with pytest.raises(NonFiniteError, match=r"training step 1: non-finite weights .* in layers\."):
        fit(net, tiny_data(), DigitalLinf(0.0), CONFIG, run_dir=tmp_path, progress=False, optimizer=opt,
            checkpoint_every=1)
    after = load_checkpoint(tmp_path / "last.pt")
    assert after["step"] == 5 and same_tensors(after["model"], good["model"])


def test_a_non_finite_loss_or_gradient_stops_before_the_optimizer_step():
    x, y = tiny_data(8).tensors
    step = TrainingStep(DigitalLinf(0.0), steps=3, generator=torch.Generator().manual_seed(0))
    net = tiny_net()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    step(net, opt, x, y)
    before = {k: v.clone() for k, v in net.state_dict().items()}

    real = step.compute_loss
    step.compute_loss = lambda *a: (real(*a)[0] * float("nan"), real(*a)[1])
    with pytest.raises(NonFiniteError, match="training step 2: the loss is nan"):
        step(net, opt, x, y)
    assert same_tensors(net.state_dict(), before) and step.step == 1

    step.compute_loss = real
    hook = net.layers[1].weight.register_hook(lambda g: g * float("inf"))
    with pytest.raises(NonFiniteError, match="training step 2: the gradient norm is"):
        step(net, opt, x, y)
    hook.remove()
    assert same_tensors(net.state_dict(), before)


# -- SIGKILL at random points ------------------------------------------------------------------
def _worker(run_dir: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, str(TESTS / "kill_worker.py"), str(run_dir)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=TESTS)


def _finish(proc: subprocess.Popen) -> str:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert out.splitlines()[-1] == "done"
    return err


def kill_and_resume(run_dir: Path, kills: int, rng: random.Random, damage: list[str]) -> dict[str, int]:
    """Start the worker and SIGKILL it after 1-2 announced steps plus a random delay (so kills
    also land inside the checkpoint writes), ``kills`` times. From kill 3 on, damage the newest
    checkpoint as the next entry of ``damage`` says, after each kill where both checkpoints
    exist. Then let a last run finish. Returns counts of kills, damaged checkpoints, fallbacks
    to the previous checkpoint and temporary files found after a kill."""
    stats = {"kills": 0, "damaged": 0, "fallbacks": 0, "stale_tmp": 0}
    pending = list(damage)
    # a damage waits for a kill after which both checkpoints exist; a few extra kills give it one
    while stats["kills"] < kills or (pending and stats["kills"] < 3 * kills):
        proc = _worker(run_dir)
        lines = [proc.stdout.readline().strip() for _ in range(rng.randint(1, 2))]
        if "done" in lines or "" in lines:  # the run completed before this kill
            _, err = proc.communicate(timeout=60)
            stats["fallbacks"] += err.count("resuming from the previous checkpoint")
            break
        time.sleep(rng.uniform(0.0, 0.05))
        proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate(timeout=60)
        stats["kills"] += 1
        stats["fallbacks"] += err.count("resuming from the previous checkpoint")
        stats["stale_tmp"] += len(list(run_dir.glob(".last.pt.*.tmp")))
        if pending and stats["kills"] >= 3 and (run_dir / "last.pt").exists() and (run_dir / PREVIOUS_CHECKPOINT_NAME).exists():
            _damage(pending.pop(0), run_dir / "last.pt")
            stats["damaged"] += 1
    err = _finish(_worker(run_dir))
    stats["fallbacks"] += err.count("resuming from the previous checkpoint")
    return stats


@pytest.mark.slow
def test_runs_killed_at_random_points_end_bit_for_bit_equal(tmp_path):
    """N = 6 SIGKILLs at random steps and moments (inside saves too), the newest checkpoint
    damaged twice (a flipped byte, then truncated); the resumed run ends with the same
    weights, history and random states as one that never stopped."""
    straight_dir = tmp_path / "straight"
    _finish(_worker(straight_dir))
    killed_dir = tmp_path / "killed"
    seed = int(os.environ.get("SNN_ROBUST_KILL_SEED", "0"))
    kills = int(os.environ.get("SNN_ROBUST_KILLS", "6"))
    stats = kill_and_resume(killed_dir, kills, random.Random(seed), ["flipped", "truncated"])
    print(f"kill test (seed {seed}): {stats}")
    a, b = load_checkpoint(straight_dir / "last.pt"), load_checkpoint(killed_dir / "last.pt")
    assert a["step"] == b["step"] == 30 and same_tensors(a["model"], b["model"])
    assert strip_time(a["history"]) == strip_time(b["history"])
    assert torch.equal(a["training_step"]["generator"], b["training_step"]["generator"])
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"]) and a["rng"]["numpy"] == b["rng"]["numpy"]
    assert (straight_dir / "metrics.csv").read_text().count("\n") == (killed_dir / "metrics.csv").read_text().count("\n")
    assert not list(killed_dir.glob(".last.pt.*.tmp"))
    assert kills <= stats["kills"] <= 3 * kills and stats["damaged"] == 2
    # every damaged newest checkpoint was replaced by the previous one (a kill between the two
    # renames of a save also resumes from the previous one)
    assert stats["fallbacks"] >= stats["damaged"]


def test_a_fresh_run_never_falls_back_into_an_older_run(tmp_path):
    """resume=False over an older run's folder: the older checkpoints are not kept as
    previous.pt, so a damaged newest checkpoint cannot revive the older run."""
    run(tmp_path, max_steps=7, checkpoint_every=1)  # the older run, with last.pt and previous.pt
    reseed_globals(0)
    run(tmp_path, max_steps=1)  # a fresh run saves once
    assert not (tmp_path / PREVIOUS_CHECKPOINT_NAME).exists()
    assert load_checkpoint(tmp_path / "last.pt")["step"] == 1
    _damage("flipped", tmp_path / "last.pt")
    with pytest.raises(CheckpointError, match="no good checkpoint is left"):
        run(tmp_path, resume=True)
