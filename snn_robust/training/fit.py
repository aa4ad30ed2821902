"""The ready training loop :func:`fit` (natural or robust per a :class:`TrainConfig`) with
atomic checkpoints, exact resume, metric logs and progress."""
from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from .. import distributed
from ..bounds.rounding import use_ieee_float32
from ..coding import Coding
from ..fileio import atomic_write_text
from ..network import SpikingNetwork
from ..perturbations import Perturbation
from ..validation import check_positive_int
from .config import TrainConfig, _make_lr_scheduler, _make_optimizer, per_iteration_lr
from .logs import _environment, _Mean, _MetricsLog, _row
from .sampler import EpochBatchSampler
from .state import CHECKPOINT_NAME, CheckpointError, CheckpointFiles, FitState
from .steps import CleanLoss, NonFiniteError, RobustTrainingStep, TrainingStep, non_finite_parameters

log = logging.getLogger("snn_robust.training")


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` / ``"cuda:N"`` or a ``torch.device``.
    On CUDA it switches TF32 off (:func:`snn_robust.use_ieee_float32`): with TF32 the bounds
    take its unit roundoff and are far too loose to train or certify with."""
    if isinstance(device, torch.device):
        dev = device
    elif device == "auto":
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    elif isinstance(device, str) and (device == "cpu" or device.split(":")[0] == "cuda"):
        dev = torch.device(device)
    else:
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' (or 'cuda:N') or a torch.device, got {device!r}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was requested but CUDA is not available; use device='cpu' or 'auto'")
    if dev.type == "cuda":
        use_ieee_float32()
    return dev


@dataclass
class FitResult:
    """What :func:`fit` returns; the network is trained in place.

    ``history`` holds ``"epochs"`` (one row per finished epoch) and ``"steps"`` (one row per
    ``log_every`` steps) as lists of dicts; ``completed`` is False when ``max_steps`` stopped
    the run early (resume it with ``resume=True``)."""

    history: dict[str, list[dict[str, Any]]]
    step: int
    epoch: int
    completed: bool
    checkpoint: Path | None


def fit(
    net: SpikingNetwork,
    dataset: Dataset,
    perturbation: Perturbation | Coding,
    config: TrainConfig,
    *,
    run_dir: str | os.PathLike[str] | None = None,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    resume: bool = False,
    checkpoint_every: int | None = None,
    log_every: int | None = None,
    max_steps: int | None = None,
    device: str | torch.device = "auto",
    progress: bool = True,
    evaluate: Callable[[SpikingNetwork], Mapping[str, float]] | None = None,
    batch_transform: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]] | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    num_workers: int = 0,
) -> FitResult:
    """Train ``net`` in place on ``dataset`` (items ``(x, label)``), natural or robust per
    ``config``.

    Args:
        net: the network (moved to ``device``).
        dataset: a map-style dataset; batches are drawn by :class:`EpochBatchSampler`, whose
            order depends only on ``(config.seed, epoch)``. Random transforms inside the
            dataset are outside the resumable state.
        perturbation: the input coding and (robust) kind of perturbation set; the run trains
            against ``config.training_set(perturbation)``, this kind at radius ``config.eps``
            (ramped by the schedule), so its own eps must be 0 or ``config.eps``. Natural
            training needs only the coding: a coding object (``RateCoding(config.steps)``,
            ``SpikeFrames(config.steps)``, ``DirectCoding(config.steps)``) does too.
        config: see :class:`TrainConfig`.
        run_dir: writes ``config.json`` (config and versions), ``metrics.csv`` /
            ``metrics.jsonl`` (one row per epoch) and, with ``log_every``, ``steps.csv`` /
            ``steps.jsonl`` (means over each ``log_every`` steps). Columns: ``epoch``,
            ``step``, ``clean_acc`` and ``clean_loss`` (on the training batches), ``loss``,
            robust only: ``bound_loss``, ``verified`` (share of batch samples with all
            margins > 0), ``eps``; then ``lr``, ``grad_norm``, ``time`` (training seconds so
            far, across resumptions) and ``evaluate``'s keys.
        checkpoint_dir: where ``last.pt`` is written atomically (default: ``run_dir``; no
            checkpoints when both are ``None``): at every epoch end, every
            ``checkpoint_every`` steps, and when ``max_steps`` stops the run. It holds the
            model, optimizer, LR scheduler, training step (step counter, eps schedule,
            coding generator), all RNG states, epoch / batch / step counters, the running
            epoch means and the history, as plain data with a SHA-256 (see
            :mod:`snn_robust.fileio`). The checkpoint it replaces is kept as
            ``previous.pt``; temporary files left by a killed save are deleted on start.
        resume: continue from ``checkpoint_dir/last.pt`` if it exists (same weights, eps,
            data order and random streams as a run that never stopped); the config must
            match except for :data:`RESUMABLE_CHANGES`. A damaged, truncated or missing
            ``last.pt`` falls back to ``previous.pt`` with a warning.
        max_steps: stop after this many steps in total (checkpointed; resumable).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``.
        progress: show progress over the steps (a tqdm bar on a terminal, a plain line per
            tenth of the steps otherwise; :func:`snn_robust.progress.progress_bar`).
        evaluate: called with the network (in eval mode) at each epoch end; its floats join
            the epoch row.
        batch_transform: applied to each ``(x, labels)`` batch before it goes to the device,
            e.g. ``lambda x, y: (x.transpose(0, 1), y)`` for spike data stored ``[B, T, ...]``.
        optimizer: use this optimizer instead of the one ``config`` describes.
        num_workers: DataLoader workers.

    Several processes (``torchrun``, or after ``torch.distributed.init_process_group`` in
    your program; :mod:`snn_robust.distributed`): call ``fit`` on every process with the
    same arguments. ``config.batch_size`` is the global batch: each process trains on its
    share of every batch, the gradients are averaged into the global batch's, all processes
    start from rank 0's weights and keep identical ones; only rank 0 writes ``run_dir`` and
    checkpoints and shows progress; metrics are global-batch means. ``resume`` reads rank
    0's checkpoint (sent to the others) and works with any number of processes. ``evaluate``
    runs on every process (see :func:`snn_robust.distributed.shard`).

    Raises:
        NonFiniteError: a loss, gradient norm or weight became NaN or infinite (the message
            names the step); the run stops there and that state is never checkpointed.
        CheckpointError: ``resume`` found checkpoints but none is usable, or they were
            written with another config.
    """
    from ..progress import format_row, progress_bar

    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    if isinstance(dataset, DataLoader):
        raise TypeError("fit takes the dataset, not a DataLoader: it draws its own resumable batch order (pass loader.dataset)")
    if isinstance(perturbation, Coding):
        if config.robust:
            raise TypeError(f"a robust run needs a perturbation set (DigitalLinf, SpikeL0, DirectLinf), got the coding "
                            f"{perturbation!r}; a coding object is enough for natural training only")
    else:
        perturbation = config.training_set(perturbation)  # the radius comes from the config alone
    for name, value in (("checkpoint_every", checkpoint_every), ("log_every", log_every), ("max_steps", max_steps)):
        if value is not None:
            check_positive_int(name, value)
    dev = resolve_device(device)
    net.to(dev)
    # several processes (snn_robust.distributed): shards of each global batch, averaged
    # gradients, rank 0 alone writes files, logs and progress
    rank, world = distributed.rank(), distributed.world_size()
    main = rank == 0
    distributed.broadcast_module(net)
    run_path = Path(run_dir) if run_dir is not None else None
    ckpt_dir = Path(checkpoint_dir) if checkpoint_dir is not None else run_path
    ckpt_path = ckpt_dir / CHECKPOINT_NAME if ckpt_dir is not None else None

    sampler = EpochBatchSampler(len(dataset), config.batch_size, shuffle=config.shuffle, seed=config.seed,
                                drop_last=config.drop_last, rank=rank, world_size=world)
    per_epoch = sampler.batches_per_epoch
    generator = torch.Generator(device=dev).manual_seed(distributed.rank_seed(config.seed, rank))
    clean_loss = CleanLoss(config.clean_loss, config.clean_scale)
    step_fn: TrainingStep
    if config.robust:
        step_fn = RobustTrainingStep(
            perturbation, config.eps_schedule(per_epoch), steps=config.steps, bound_steps=config.bound_steps,
            method=config.method, clean_weight=config.clean_weight, bound_weight=config.bound_weight,
            bound_scale=config.bound_scale, clean_loss=clean_loss, clip_norm=config.clip_norm, generator=generator,
            clean_weight_start=config.clean_weight_start, unstable_weight=config.unstable_weight,
        )
    else:
        step_fn = TrainingStep(perturbation, steps=config.steps, clean_loss=clean_loss, clip_norm=config.clip_norm, generator=generator)
    opt = optimizer if optimizer is not None else _make_optimizer(net, config)
    lr_sched = _make_lr_scheduler(opt, config, per_epoch)
    per_step_lr = per_iteration_lr(config)

    state = FitState(net, opt, lr_sched, step_fn, config.to_dict(), repr(perturbation), rank=rank, world=world)
    files = CheckpointFiles(ckpt_dir) if ckpt_dir is not None else None
    ck = None
    if main:
        try:
            if files is not None:
                files.remove_stale()
            ck = files.newest() if resume and files is not None else None
        except CheckpointError as exc:  # raised on every rank, none waits for the checkpoint
            ck = exc
    ck = distributed.broadcast_object(ck)  # other ranks need no shared file system
    if isinstance(ck, CheckpointError):
        raise ck
    if ck is not None:
        state.load_state_dict(ck, source=str(ckpt_path))
        log.info("resumed %s at epoch %d, batch %d (step %d)", ckpt_path, state.epoch, state.batch, state.step)
    elif resume:
        log.debug("no checkpoint at %s yet: training from the start", ckpt_path)  # the normal fresh run

    epoch_log = steps_log = None
    if run_path is not None and main:
        run_path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_path / "config.json", json.dumps(
            {"config": config.to_dict(), "perturbation": repr(perturbation), "network": repr(net), "environment": _environment()},
            indent=2))
        epoch_log = _MetricsLog(run_path, "metrics")
        epoch_log.reset(state.history["epochs"])
        if log_every is not None:
            steps_log = _MetricsLog(run_path, "steps")
            steps_log.reset(state.history["steps"])

    state.start_clock()
    limit = max_steps if max_steps is not None else math.inf
    total = config.epochs * per_epoch
    show_progress = progress and main  # the other ranks show nothing
    bar = progress_bar(total, "robust" if config.robust else "natural", enabled=show_progress,
                       initial=min(state.step, total))
    completed = False
    try:
        while state.epoch < config.epochs and state.step < limit:
            sampler.set_epoch(state.epoch, state.batch)
            # Its own generator, so that opening the loader draws nothing from torch's global RNG
            # (a resumed epoch opens one loader more than an uninterrupted run).
            loader_gen = torch.Generator().manual_seed(sampler.epoch_seed(state.epoch) ^ 0x5EED)
            loader = DataLoader(dataset, batch_sampler=sampler, num_workers=num_workers, generator=loader_gen)
            for x, y in loader:
                if batch_transform is not None:
                    x, y = batch_transform(x, y)
                x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
                metrics, n_global = distributed.mean_metrics(step_fn(net, opt, x, y), len(y), dev)
                if per_step_lr:
                    lr_sched.step()
                state.batch += 1
                state.step += 1
                state.epoch_mean.add(metrics, n_global)
                state.span_mean.add(metrics, n_global)
                bar.update(1)
                if show_progress:
                    shown = {k: f"{metrics[k]:.3g}" for k in ("loss", "clean_acc", "verified", "eps") if k in metrics}
                    bar.set_postfix(epoch=state.epoch, **shown, refresh=False)
                if log_every is not None and state.step % log_every == 0:
                    row = _row(state.span_mean, state.epoch, state.step, state.now())
                    state.history["steps"].append(row)
                    if steps_log is not None:
                        steps_log.append(row)
                    state.span_mean = _Mean()
                due = checkpoint_every is not None and state.step % checkpoint_every == 0
                if state.batch < per_epoch and (state.step >= limit or due):
                    _save(state, files)
                    if state.step >= limit:
                        break
            if state.batch < per_epoch:  # stopped by max_steps inside the epoch
                break
            extra = None
            if evaluate is not None:
                net.eval()
                extra = dict(evaluate(net))
                net.train()
            row = _row(state.epoch_mean, state.epoch, state.step, state.now(), extra)
            state.history["epochs"].append(row)
            if epoch_log is not None:
                epoch_log.append(row)
            if main:
                log.info("%s", format_row(row, config.epochs, "robust" if config.robust else "natural"))
            if not per_step_lr:
                lr_sched.step()
            state.epoch, state.batch = state.epoch + 1, 0
            state.epoch_mean = _Mean()
            _save(state, files)
        completed = state.epoch >= config.epochs
    finally:
        bar.close()
    return FitResult(history=state.history, step=state.step, epoch=state.epoch, completed=completed, checkpoint=ckpt_path)


def _save(state: FitState, files: CheckpointFiles | None) -> None:
    """Checkpoint ``state`` (rank 0 writes; with several processes every rank must call this,
    since each one's random streams are gathered)."""
    if files is None:
        return
    bad = non_finite_parameters(state.net)
    if bad:  # the training step stops first; this guards models changed from outside
        raise NonFiniteError(f"step {state.step}: refusing to checkpoint non-finite weights in {', '.join(bad)}")
    # each rank's random streams, so that a resume with the same number of processes is exact
    ranks = distributed.gather(state.rank_state()) if state.world > 1 else None
    if state.rank == 0:
        files.save(state.state_dict(ranks))
