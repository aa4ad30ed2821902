"""Several processes: sharding of the batches, and 2-process gloo training with fit against
one process (same global batch and seed), only rank 0 writing, and a killed run resuming.

The processes are started with torch.multiprocessing (spawn); the model is test_training's
tiny FC network with direct coding (DirectLinf: no random coding draws, so one process and
two draw nothing different and the weights must agree up to float summation order).
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from snn_robust import DirectLinf, LIF, SpikingNetwork, distributed
from snn_robust.evaluate import clean_error
from snn_robust.training import EpochBatchSampler, TrainConfig, fit, load_checkpoint

from test_training import tiny_data

# 40 samples, batch 8: 5 steps per epoch, 2 epochs; robust from the start (eps ramps over 1 epoch)
CONFIG = TrainConfig.robust(0.05, epochs=2, batch_size=8, ramp_epochs=1, hold_epochs=0, lr=0.05, steps=3, bound_steps=2)
TOTAL_STEPS = 10


def direct_net(seed: int = 0) -> SpikingNetwork:
    torch.manual_seed(seed)
    net = SpikingNetwork([nn.Flatten(), nn.Linear(16, 12), LIF(), nn.Linear(12, 4), LIF()], input_coding="direct")
    with torch.no_grad():  # enough drive that the network spikes from the start
        for layer in net.layers:
            if isinstance(layer, nn.Linear):
                layer.weight.mul_(2.0)
    return net


def weights(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


# --------------------------------------------------------------------------------------------
# Sharding (no processes needed)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 60), batch=st.integers(1, 16), world=st.integers(1, 5), drop_last=st.booleans(),
       shuffle=st.booleans(), epoch=st.integers(0, 3))
def test_shards_cover_each_global_batch_once(n, batch, world, drop_last, shuffle, epoch):
    def make(rank: int, w: int) -> EpochBatchSampler:
        s = EpochBatchSampler(n, batch, shuffle=shuffle, seed=3, drop_last=drop_last, rank=rank, world_size=w)
        s.set_epoch(epoch)
        return s

    if drop_last and n < batch:
        return  # no batch at all: refused before sharding (test_training)
    try:
        shards = [list(make(r, world)) for r in range(world)]
    except ValueError as exc:  # refused only when some batch is smaller than the world
        assert "cannot be shared by" in str(exc)
        assert (n % batch if n % batch and not drop_last else batch) < world
        return
    whole = list(make(0, 1))
    assert all(len(s) == len(whole) for s in shards)
    for b, batch_indices in enumerate(whole):
        parts = [s[b] for s in shards]
        assert all(parts), "every rank gets a non-empty share"
        assert sum(parts, []) == batch_indices  # rank order = the one-process batch order


def test_a_last_batch_smaller_than_the_world_is_refused_with_the_fix():
    with pytest.raises(ValueError, match="cannot be shared by 4 processes.*drop_last=True"):
        EpochBatchSampler(10, 8, rank=0, world_size=4)  # last batch: 2 samples
    with pytest.raises(ValueError, match="rank must be"):
        EpochBatchSampler(16, 8, rank=2, world_size=2)


@given(n=st.integers(0, 50), world=st.integers(1, 7))
def test_shard_range_partitions(n, world):
    ranges = [distributed.shard_range(n, r, world) for r in range(world)]
    assert ranges[0][0] == 0 and ranges[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
    sizes = [b - a for a, b in ranges]
    assert max(sizes) - min(sizes) <= 1


def test_without_a_process_group_everything_is_the_one_process_answer():
    assert not distributed.is_initialized()
    assert (distributed.rank(), distributed.world_size(), distributed.is_main()) == (0, 1, True)
    assert distributed.mean_metrics({"a": 0.5}, 7) == ({"a": 0.5}, 7)
    assert distributed.gather("x") == ["x"] and distributed.broadcast_object(3) == 3
    assert distributed.rank_seed(5, 0) == 5 and distributed.rank_seed(5, 1) != distributed.rank_seed(5, 2)
    assert distributed.backend_for("cpu") == "gloo" and distributed.backend_for("cuda") == "nccl"
    x = torch.arange(6)
    assert distributed.shard(x) is not None and torch.equal(distributed.shard(x), x)
    with pytest.raises(ValueError, match="different numbers of samples"):
        distributed.shard((x, x[:5]))


# --------------------------------------------------------------------------------------------
# Two gloo processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker(rank: int, world: int, port: int, out: str, kill_at: int | None) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        # rank 1 builds a different network: fit must start every rank from rank 0's weights
        net = direct_net(seed=rank)
        seen = {"steps": 0}

        def transform(x, y):
            seen["steps"] += 1
            if kill_at is not None and rank == 0 and seen["steps"] == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)  # a hard kill mid-run, between checkpoints
            return x, y

        # every rank names its own run folder: only rank 0's may be written (no shared file system needed)
        result = fit(net, tiny_data(), DirectLinf(0.0), CONFIG, run_dir=Path(out) / f"rank{rank}", progress=False,
                     checkpoint_every=1, log_every=1, resume=True, batch_transform=transform)
        # sharded evaluation, gathered: the error over all samples on every rank
        x, y = tiny_data().tensors
        error = distributed.combine_errors(clean_error(net, distributed.shard((x, y)), coding="direct", progress=False))
        torch.save({"weights": weights(net), "history": result.history, "step": result.step, "error": error.to_dict()},
                   Path(out) / f"out{rank}.pt")
    except BaseException:
        dist.destroy_process_group()
        raise
    # as the command line ends under torchrun: without it, a rank that leaves first can abort
    # in the interpreter's finalization (gloo, torch 2.14: SIGABRT after every file is written)
    distributed.shutdown(synchronize=True, exit_code=0)


def spawn(world: int, out: Path, *, kill_at: int | None = None) -> None:
    mp.spawn(worker, args=(world, free_port(), str(out), kill_at), nprocs=world, join=True)


def one_process(run_dir: Path | None = None, **kwargs) -> tuple[dict[str, torch.Tensor], dict]:
    net = direct_net(0)
    result = fit(net, tiny_data(), DirectLinf(0.0), CONFIG, run_dir=run_dir, progress=False, log_every=1, **kwargs)
    return weights(net), result.history


def assert_close_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=atol, rtol=0), f"{k}: max diff {(a[k] - b[k]).abs().max():.3g}"


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    spawn(2, out)
    return out, [torch.load(out / f"out{r}.pt") for r in range(2)]


@pytest.mark.slow
def test_two_processes_train_like_one_with_the_same_global_batch(two_process_run):
    out, (r0, r1) = two_process_run
    for k in r0["weights"]:  # the all-reduce hands every rank the same bits
        assert torch.equal(r0["weights"][k], r1["weights"][k]), k
    assert r0["step"] == r1["step"] == TOTAL_STEPS
    single, history = one_process()
    assert any(not torch.equal(single[k], direct_net(0).state_dict()[k]) for k in single), "training changed nothing"
    assert_close_weights(r0["weights"], single, atol=1e-5)
    # the evaluation sharded over the ranks and gathered is the one-process evaluation
    net = direct_net(0)
    net.load_state_dict(r0["weights"])
    whole = clean_error(net, tiny_data().tensors, coding="direct", progress=False)
    assert r0["error"] == r1["error"]
    assert r0["error"]["num_samples"] == whole.num_samples == 40
    assert r0["error"]["per_seed"] == pytest.approx(whole.per_seed, abs=1e-12)
    # logged metrics are the global batch's means, as with one process
    for rows, ref in ((r0["history"]["steps"], history["steps"]), (r0["history"]["epochs"], history["epochs"])):
        assert len(rows) == len(ref)
        for row, one in zip(rows, ref):
            for key in ("clean_loss", "clean_acc", "bound_loss", "verified", "eps", "loss"):
                assert row[key] == pytest.approx(one[key], abs=1e-5), (key, row, one)


@pytest.mark.slow
def test_only_rank_0_writes(two_process_run):
    out, _ = two_process_run
    assert not (out / "rank1").exists()
    written = {p.name for p in (out / "rank0").iterdir()}
    assert {"last.pt", "metrics.csv", "steps.jsonl", "config.json"} <= written
    ck = load_checkpoint(out / "rank0" / "last.pt")
    assert len(ck["ranks"]) == 2 and ck["step"] == TOTAL_STEPS


@pytest.mark.slow
def test_a_killed_two_process_run_resumes_on_two_or_one_processes(tmp_path, two_process_run):
    _, (uninterrupted, _) = two_process_run
    with pytest.raises(mp.ProcessExitedException):
        spawn(2, tmp_path, kill_at=4)  # SIGKILL on rank 0 before its 4th step: 3 steps checkpointed
    ck = load_checkpoint(tmp_path / "rank0" / "last.pt")
    assert 0 < ck["step"] < TOTAL_STEPS
    # one process from the same checkpoint (a copy): same weights up to summation order
    shutil.copytree(tmp_path / "rank0", tmp_path / "single")
    single, _ = one_process(tmp_path / "single", resume=True)
    assert_close_weights(single, uninterrupted["weights"], atol=1e-5)
    spawn(2, tmp_path)
    resumed = torch.load(tmp_path / "out0.pt")
    assert resumed["step"] == TOTAL_STEPS
    for k in uninterrupted["weights"]:  # same processes, same order: the same bits
        assert torch.equal(resumed["weights"][k], uninterrupted["weights"][k]), k


def test_python_dash_m_is_the_command_torchrun_starts():
    done = subprocess.run([sys.executable, "-m", "snn_robust", "recipe", "no-such-recipe"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2 and "invalid choice: 'no-such-recipe'" in done.stderr


@pytest.mark.slow
def test_torchrun_trains_with_the_cli_on_two_processes(tmp_path):
    from test_recipes import write_fixture_root

    root = write_fixture_root(tmp_path / "data", n_train=64, n_test=8, n_nmnist=(1, 1))
    out = tmp_path / "fc.pt"
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "snn_robust", "-q",
         "--device", "cpu", "train", "--dataset", "mnist", "--arch", "fc", "--epochs", "1", "--batch-size", "16",
         "--train-samples", "64", "--out", str(out), "--data-root", str(root), "--no-verify-data"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("saved ") == 1  # rank 0 alone reports
    ck = load_checkpoint(tmp_path / "fc_run" / "last.pt")
    assert len(ck["ranks"]) == 2 and ck["step"] == 4 and out.exists()


SHUTDOWN_SCRIPT = """
import logging, sys, tempfile, torch.distributed as dist
from snn_robust import distributed
dist.init_process_group("gloo", init_method="file://" + tempfile.mkdtemp() + "/store", rank=0, world_size=1)
logging.basicConfig(stream=sys.stderr, level=logging.INFO)
print("written before the exit", end="")   # no newline: only a flush gets it out
logging.getLogger("x").info("logged before the exit")
distributed.shutdown(synchronize=True, exit_code=int(sys.argv[1]))
print("never reached")
"""


@pytest.mark.parametrize("code", [0, 3])
def test_shutdown_leaves_the_group_flushes_and_exits_with_the_code(code):
    # the command-line exit under torchrun: leave the group, flush, skip finalization
    done = subprocess.run([sys.executable, "-c", SHUTDOWN_SCRIPT, str(code)], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == code, done.stderr[-2000:]
    assert done.stdout == "written before the exit"
    assert "logged before the exit" in done.stderr


def test_shutdown_without_a_group_and_without_an_exit_code_does_nothing():
    assert not distributed.is_initialized()
    distributed.shutdown(synchronize=True)  # returns: no group to leave, no exit asked
    assert not distributed.is_initialized()


@pytest.mark.parametrize("code", [-1, 1.0, "0", True])
def test_shutdown_refuses_a_bad_exit_code_before_doing_anything(code):
    with pytest.raises(ValueError, match="exit_code must be a non-negative int"):
        distributed.shutdown(exit_code=code)
