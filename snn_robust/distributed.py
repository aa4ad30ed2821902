"""Several processes (``torchrun``, or a user's own ``torch.distributed`` run) for :func:`fit`.

Data parallel, with the arithmetic of one process on the same global batch:

* :class:`~snn_robust.training.EpochBatchSampler` with ``rank`` / ``world_size`` gives each
  process a contiguous share of every global batch (:func:`shard_range`), so every sample is
  seen once per epoch and the union of the shares is the one-process batch.
* Each process computes its clean and certified losses as means over its share ``n_r``;
  :func:`average_gradients` all-reduces ``sum_r n_r * grad_r`` and divides by ``N = sum_r n_r``,
  which is the gradient of the mean over the global batch (the losses are per-sample means),
  so the optimizer step is the one-process step and the weights stay identical on every rank.
  The network shares the user's parameters (:mod:`snn_robust.adapters`), so averaging the
  gradients of ``net.parameters()`` trains the user's modules; no DDP wrapper is needed.
* Metrics are averaged the same way (:func:`mean_metrics`); only rank 0 writes checkpoints,
  logs and progress; :func:`gather` collects per-rank evaluation results.

Backend: ``gloo`` for CPU, ``nccl`` for CUDA (:func:`backend_for`). Everything here is a
no-op returning the one-process answer when ``torch.distributed`` is not initialised.
"""
from __future__ import annotations

import hashlib
import logging
import os
import sys
from typing import Any, Iterable, Mapping

import torch
import torch.distributed as dist
from torch import Tensor

from .validation import check_int

__all__ = [
    "average_gradients",
    "any_rank",
    "backend_for",
    "barrier",
    "broadcast_module",
    "broadcast_object",
    "combine_errors",
    "gather",
    "init_from_env",
    "is_initialized",
    "is_main",
    "launched_by_torchrun",
    "mean_metrics",
    "rank",
    "rank_seed",
    "shard",
    "shard_range",
    "shutdown",
    "world_size",
]


def is_initialized() -> bool:
    """Whether a ``torch.distributed`` process group is up."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if is_initialized() else 0


def world_size() -> int:
    """The number of processes (1 without a process group)."""
    return dist.get_world_size() if is_initialized() else 1


def is_main() -> bool:
    """True on the process that writes files and logs (rank 0)."""
    return rank() == 0


def backend_for(device: torch.device | str) -> str:
    """``"nccl"`` for a CUDA device, ``"gloo"`` otherwise."""
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


def launched_by_torchrun() -> bool:
    """Whether the environment holds torchrun's ``RANK`` / ``WORLD_SIZE`` / ``MASTER_ADDR``."""
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"))


def init_from_env(device: torch.device) -> torch.device:
    """Join the process group torchrun describes in the environment (backend from
    ``device``) and return this process's device: ``cuda:LOCAL_RANK`` for CUDA, ``device``
    otherwise. Without torchrun's variables, or with a group already up, nothing changes."""
    if not launched_by_torchrun() or is_initialized():
        return device
    if device.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if local >= torch.cuda.device_count():
            raise ValueError(f"LOCAL_RANK {local} but this machine has {torch.cuda.device_count()} CUDA devices; "
                             "start at most that many processes per node (--nproc_per_node)")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    dist.init_process_group(backend_for(device))
    return device


def shutdown(*, synchronize: bool = False, exit_code: int | None = None) -> None:
    """Leave the process group (if one is up).

    ``synchronize``: first wait until every rank gets here, so that no rank tears down its
    connections while another still works (rank 0 writing the model file). Use it only where
    every rank is known to arrive (a command that succeeded): after an error it would wait for
    ranks that never come.

    ``exit_code``: then end the process at once with this code, after flushing the standard
    streams and the logging handlers, skipping the interpreter's finalization. Gloo's worker
    threads can still hold work objects whose tensors reference Python objects after the
    group is destroyed; freeing them while the interpreter is torn down calls
    ``std::terminate`` ("terminate called without an active exception", SIGABRT), which
    torchrun reports as a failed job although every file was written. For command-line
    entry points only: a library caller keeps its own process."""
    if exit_code is not None:  # refused before the group is left: a bad code must not end the job half-done
        check_int("shutdown: exit_code", exit_code)
    if is_initialized():
        if synchronize:
            dist.barrier()
        dist.destroy_process_group()
    if exit_code is not None:
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # closed or broken pipe: nothing left to save
                pass
        os._exit(exit_code)


def barrier() -> None:
    """Wait until every rank gets here (e.g. until rank 0 has written a file the others read)."""
    if is_initialized():
        dist.barrier()


def shard_range(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """``[start, stop)`` of rank ``rank``'s contiguous share of ``n`` items: the first
    ``n % world_size`` ranks get one more (``torch.tensor_split``'s rule)."""
    base, extra = divmod(n, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def rank_seed(seed: int, rank: int) -> int:
    """The seed of rank ``rank``'s random coding stream: ``seed`` itself on rank 0 (so one
    process draws what it always drew), an independent 63-bit hash of ``(seed, rank)`` else."""
    if rank == 0:
        return int(seed)
    digest = hashlib.sha256(f"snn-robust-rank:{seed}:{rank}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def _reduce_device(tensors: Iterable[Tensor] = ()) -> torch.device:
    """Where a collective's tensors must live: the given tensors' device, else the current
    CUDA device under nccl, else the CPU."""
    for t in tensors:
        return t.device
    if is_initialized() and str(dist.get_backend()) == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def average_gradients(params: list[torch.nn.Parameter], n_local: int) -> int:
    """Replace each ``p.grad`` by ``sum_r n_r * grad_r / N`` over the ranks (``n_r``: rank
    r's batch share, ``N``: the global batch), one all-reduce per gradient dtype plus one
    for ``N`` and which gradients exist; a missing gradient counts as zero (and stays
    ``None`` when it is missing on every rank). Returns ``N``; without a process group
    returns ``n_local`` and leaves the gradients alone."""
    if not is_initialized() or not params:
        return n_local
    dev = _reduce_device(params)
    meta = torch.tensor([float(p.grad is not None) for p in params] + [float(n_local)], device=dev, dtype=torch.float64)
    dist.all_reduce(meta)
    total = int(round(float(meta[-1])))
    present = meta[:-1].tolist()
    by_dtype: dict[torch.dtype, list[torch.nn.Parameter]] = {}
    for p, on_some_rank in zip(params, present):
        if on_some_rank:
            by_dtype.setdefault(p.dtype, []).append(p)
    for dtype, group in by_dtype.items():
        flat = torch.cat([(p.grad.detach() if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in group])
        flat.mul_(n_local)
        dist.all_reduce(flat)
        flat.div_(total)
        offset = 0
        for p in group:
            chunk = flat[offset : offset + p.numel()].view_as(p)
            offset += p.numel()
            if p.grad is None:
                p.grad = chunk.clone()
            else:
                p.grad.copy_(chunk)
    return total


def any_rank(flag: bool, device: torch.device | None = None) -> bool:
    """True on every rank when ``flag`` is true on some rank (so that all ranks stop
    together instead of waiting on a collective a stopped rank never joins)."""
    if not is_initialized():
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device or _reduce_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def mean_metrics(metrics: Mapping[str, float], n_local: int, device: torch.device | None = None) -> tuple[dict[str, float], int]:
    """Metrics averaged over the ranks weighted by their batch shares (the one-process
    batch mean of a per-sample mean such as ``clean_acc``), and the global batch size.
    Every rank must pass the same keys."""
    if not is_initialized():
        return dict(metrics), n_local
    keys = sorted(metrics)
    t = torch.tensor([float(metrics[k]) * n_local for k in keys] + [float(n_local)], dtype=torch.float64,
                     device=device or _reduce_device())
    dist.all_reduce(t)
    total = float(t[-1])
    return {k: float(v) / total for k, v in zip(keys, t[:-1].tolist())}, int(round(total))


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` from rank ``src`` on every rank (picklable objects; tensors come back on the
    device they were sent from, CPU for checkpoints)."""
    if not is_initialized():
        return obj
    box = [obj if rank() == src else None]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def gather(obj: Any) -> list[Any]:
    """Every rank's ``obj`` on every rank, in rank order (``[obj]`` with one process)."""
    if not is_initialized():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_module(module: torch.nn.Module) -> None:
    """Copy rank 0's parameters and buffers to every rank (what DDP does at wrapping), so
    that processes that built their networks from different seeds start equal."""
    if not is_initialized():
        return
    with torch.no_grad():
        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t.data, src=0)


def shard(data: Tensor | tuple[Tensor, ...]) -> Tensor | tuple[Tensor, ...]:
    """This rank's contiguous share (:func:`shard_range`) of a tensor or a tuple of tensors
    along their first (sample) dimension, e.g. ``shard((x_test, y_test))`` for sharded
    evaluation; everything without a process group."""
    items = data if isinstance(data, tuple) else (data,)
    if not items or not all(isinstance(t, Tensor) and t.dim() > 0 for t in items):
        raise TypeError("shard takes a tensor or a tuple of tensors with a sample dimension first")
    n = len(items[0])
    if any(len(t) != n for t in items):
        raise ValueError(f"shard: the tensors hold different numbers of samples ({[len(t) for t in items]})")
    start, stop = shard_range(n, rank(), world_size())
    out = tuple(t[start:stop] for t in items)
    return out if isinstance(data, tuple) else out[0]


def combine_errors(result: Any) -> Any:
    """One :class:`~snn_robust.metrics.ErrorResult` from every rank's result on its
    :func:`shard`: each seed's error is the sample-weighted mean of the ranks' errors
    (``sum_r n_r e_r / N``, the error over all samples), ``num_samples`` their sum, the
    std recomputed over the combined seeds; ``details`` are rank 0's. Every rank gets it.
    The ranks must have used the same seeds."""
    from .metrics import ErrorResult, summarize

    if not isinstance(result, ErrorResult):
        raise TypeError(f"combine_errors takes an ErrorResult (clean_error, certified_error), got {type(result).__name__}")
    if world_size() == 1:
        return result  # untouched: n * e / n need not give back e's last bit
    results = gather(result)
    if any(r.seeds != results[0].seeds for r in results):
        raise ValueError(f"combine_errors: the ranks used different seeds ({[r.seeds for r in results]})")
    total = sum(r.num_samples for r in results)
    per_seed = [sum(r.num_samples * r.per_seed[i] for r in results) / total for i in range(len(results[0].per_seed))]
    return summarize(per_seed, results[0].seeds, total, results[0].details)
