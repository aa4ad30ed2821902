"""What a training run carries across a restart: RNG states, the checkpoint files (atomic,
checksummed, with the previous one kept: :class:`CheckpointFiles`) and the run's whole state
(:class:`FitState`, whose ``state_dict`` / ``load_state_dict`` are the one definition of a
checkpoint's content)."""
from __future__ import annotations

import logging
import os
import random
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from .. import distributed
from ..fileio import DamagedFileError, load_checked, remove_stale_temporaries, save_checked
from ..validation import non_finite_names
from .config import _config_mismatch
from .logs import _environment, _Mean
from .steps import TrainingStep

log = logging.getLogger("snn_robust.training")

CHECKPOINT_NAME = "last.pt"
#: The checkpoint before ``last.pt``, kept so that a damaged newest one costs one interval.
PREVIOUS_CHECKPOINT_NAME = "previous.pt"
CHECKPOINT_FORMAT = 1


class CheckpointError(ValueError):
    """A run cannot resume from its checkpoint folder: the checkpoints are damaged with no
    good one left, or were written with a different configuration."""


def capture_rng_state(*generators: torch.Generator | None) -> dict[str, Any]:
    """The global RNG states (torch CPU, every CUDA device if CUDA is initialised, Python
    ``random``, NumPy) and the states of the given generators, in a form
    ``torch.load(weights_only=True)`` reads back."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "generators": [None if g is None else g.get_state() for g in generators],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Mapping[str, Any], *generators: torch.Generator | None) -> None:
    """Inverse of :func:`capture_rng_state` (generators in the same order)."""
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    saved = state.get("generators", [])
    if len(saved) != len(generators):
        raise ValueError(f"the saved RNG state holds {len(saved)} generator states, {len(generators)} generators were given")
    for g, s in zip(generators, saved):
        if g is not None and s is not None:
            g.set_state(s)


def atomic_save(obj: Any, path: str | os.PathLike[str], *, keep_previous: str | os.PathLike[str] | None = None) -> Path:
    """``torch.save`` that never leaves a half-written file at ``path`` and records a SHA-256
    of the content (:func:`snn_robust.fileio.save_checked`; written through the one atomic
    writer :func:`snn_robust.fileio.atomic_write`: temporary file, fsync, ``os.replace``).
    With ``keep_previous``, the file being replaced is kept under that name. ``obj`` must be
    plain data (tensors, numbers, strings, containers) so that :func:`load_checkpoint` reads
    it back without unpickling code."""
    return save_checked(obj, path, keep_previous=keep_previous)


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device | None = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`fit` (or :func:`atomic_save`): its checksum is
    verified and only plain data is rebuilt (``weights_only=True``: no code from the file is
    run). Raises :class:`~snn_robust.fileio.DamagedFileError` for a damaged or hostile file."""
    return load_checked(path, map_location=map_location)


def _rank_state(ck: Mapping[str, Any], rank: int, world: int, seed: int) -> dict[str, Any]:
    """This rank's training-step and RNG states from a checkpoint: its own when the
    checkpoint was written by as many processes, rank 0's (the main fields) on rank 0; a
    rank the checkpoint did not have starts its coding stream from
    :func:`~snn_robust.distributed.rank_seed` at the saved step (the same data order and
    weights, other random coding draws than an uninterrupted run)."""
    saved = ck.get("ranks")
    if saved is not None and len(saved) == world:
        return saved[rank]
    if rank == 0:
        return {"training_step": ck["training_step"], "rng": ck["rng"]}
    # a generator state fits one device type only, so the new stream is given as a seed
    state = {**ck["training_step"], "generator": None}
    return {"training_step": state, "rng": ck["rng"], "reseed": distributed.rank_seed(seed, rank) ^ int(ck["step"])}


class CheckpointFiles:
    """The checkpoint pair of a run: ``folder/last.pt`` and ``folder/previous.pt``, the one it
    replaced (so that a damaged newest checkpoint costs one interval).

    ``previous.pt`` must come from this run: until :meth:`newest` has found a checkpoint of
    it, the first :meth:`save` drops an older ``previous.pt`` and does not keep the older
    ``last.pt`` (a fallback must never revive another run)."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / CHECKPOINT_NAME
        self.previous = folder / PREVIOUS_CHECKPOINT_NAME
        self.keep_previous = False

    def remove_stale(self) -> None:
        """Delete temporary files left by a save that was killed."""
        remove_stale_temporaries(self.path)

    def newest(self) -> dict[str, Any] | None:
        """The newest usable checkpoint: ``last.pt``, else ``previous.pt`` with a warning (a
        damaged ``last.pt`` is renamed ``last.pt.damaged`` so that the next save does not rotate
        it over the good previous one); ``None`` when neither exists.

        A checkpoint is usable when its checksum holds, it has this format and its weights are
        finite. Raises :class:`CheckpointError` when files exist but none is usable."""
        path, previous = self.path, self.previous
        problems: list[str] = []
        for candidate in (path, previous):
            if not candidate.exists():
                continue
            try:
                ck = load_checkpoint(candidate, map_location="cpu")
            except DamagedFileError as exc:
                problems.append(str(exc))
                continue
            if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT or not isinstance(ck.get("model"), dict):
                found = ck.get("format") if isinstance(ck, dict) else type(ck).__name__
                problems.append(f"{candidate} is not a fit checkpoint (format {found!r}, expected {CHECKPOINT_FORMAT})")
                continue
            bad = non_finite_names((k, v) for k, v in ck["model"].items() if torch.is_tensor(v))
            if bad:
                problems.append(f"{candidate} holds non-finite weights in {', '.join(bad)}")
                continue
            if candidate == previous:
                reason = "; ".join(problems) if problems else f"{path} is missing (interrupted while saving)"
                log.warning("resuming from the previous checkpoint %s, one checkpoint interval back: %s", previous, reason)
                if path.exists():
                    os.replace(path, path.with_name(path.name + ".damaged"))
            self.keep_previous = True
            return ck
        if problems:
            raise CheckpointError(f"cannot resume: {'; '.join(problems)}; no good checkpoint is left in {path.parent} "
                                  f"(delete {path.name} and {previous.name} there to start over)")
        return None

    def save(self, state: Mapping[str, Any]) -> None:
        """Write ``state`` atomically as ``last.pt``; the file it replaces becomes ``previous.pt``."""
        if not self.keep_previous:
            self.previous.unlink(missing_ok=True)
        atomic_save(state, self.path, keep_previous=self.previous if self.keep_previous else None)
        self.keep_previous = True


class FitState:
    """Everything of a :func:`~snn_robust.training.fit` run that a checkpoint holds, in one
    object: :meth:`state_dict` writes and :meth:`load_state_dict` reads the same fields, so
    save and resume cannot drift apart.

    The checkpoint (format :data:`CHECKPOINT_FORMAT`, plain data) holds the run's identity
    (``config``: ``TrainConfig.to_dict()``; ``perturbation``: the repr of the perturbation
    set trained against, its eps being ``config["eps"]``), ``model``, ``optimizer``,
    ``lr_scheduler``, ``training_step`` (step counter, eps schedule, coding generator),
    ``rng`` (the global RNG states), the counters ``epoch`` / ``batch`` (within the epoch) /
    ``step``, ``time`` (training seconds across resumptions), ``history`` (the logged rows),
    the running means ``epoch_mean`` / ``span_mean``, ``environment`` (versions) and, written
    by several processes, ``ranks`` (each rank's ``training_step`` and ``rng``).

    Args:
        net, optimizer, lr_scheduler, training_step: the live objects whose states are saved.
        config: ``TrainConfig.to_dict()`` of the run.
        perturbation: the perturbation set's repr (the run's identity with ``config``).
        rank, world: this process's rank and the number of processes.
    """

    def __init__(self, net: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 lr_scheduler: torch.optim.lr_scheduler.LRScheduler, training_step: TrainingStep,
                 config: Mapping[str, Any], perturbation: str, *, rank: int = 0, world: int = 1) -> None:
        self.net, self.optimizer, self.lr_scheduler, self.training_step = net, optimizer, lr_scheduler, training_step
        self.config, self.perturbation = dict(config), perturbation
        self.rank, self.world = rank, world
        self.epoch, self.batch, self.step, self.elapsed = 0, 0, 0, 0.0
        self.history: dict[str, list[dict[str, Any]]] = {"epochs": [], "steps": []}
        self.epoch_mean, self.span_mean = _Mean(), _Mean()
        self.start_clock()

    def start_clock(self) -> None:
        """Count training time from now on (on top of :attr:`elapsed`)."""
        self._started = time.perf_counter()

    def now(self) -> float:
        """Training seconds so far, across resumptions."""
        return self.elapsed + (time.perf_counter() - self._started)

    def rank_state(self) -> dict[str, Any]:
        """This process's random streams: its training step's state and the global RNG states."""
        return {"training_step": self.training_step.state_dict(), "rng": capture_rng_state()}

    def state_dict(self, ranks: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """The checkpoint content; ``ranks``: every process's :meth:`rank_state` (several
        processes, gathered by the caller: the gather is a collective)."""
        return {
            "format": CHECKPOINT_FORMAT,
            "config": self.config,
            "perturbation": self.perturbation,
            "model": self.net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "lr_scheduler": self.lr_scheduler.state_dict(),
            **self.rank_state(),
            "epoch": self.epoch, "batch": self.batch, "step": self.step, "time": self.now(),
            "history": self.history,
            "epoch_mean": self.epoch_mean.state_dict(),
            "span_mean": self.span_mean.state_dict(),
            "environment": _environment(),
            **({"ranks": ranks} if ranks is not None else {}),
        }

    def load_state_dict(self, state: Mapping[str, Any], *, source: str = "the checkpoint") -> None:
        """Restore everything :meth:`state_dict` wrote. Raises :class:`CheckpointError`
        (naming ``source``) when ``state`` was written with another config (fields other
        than :data:`~snn_robust.training.config.RESUMABLE_CHANGES`) or perturbation set."""
        diff = _config_mismatch(state["config"], self.config)
        if diff:
            raise CheckpointError(f"cannot resume {source} with a different config ({'; '.join(diff)}); "
                                  "use the original config or a new checkpoint_dir")
        if state["perturbation"] != self.perturbation:
            raise CheckpointError(f"cannot resume {source}: it was trained with {state['perturbation']}, now {self.perturbation}")
        self.net.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.lr_scheduler.load_state_dict(state["lr_scheduler"])
        own = _rank_state(state, self.rank, self.world, int(self.config["seed"]))
        self.training_step.load_state_dict(own["training_step"])
        restore_rng_state(own["rng"])
        if "reseed" in own:
            if self.training_step.generator is not None:
                self.training_step.generator.manual_seed(own["reseed"])
            log.warning("rank %d: the checkpoint was written by %s processes, now %d: this rank's random coding "
                        "stream restarts from a seed (weights, data order and step are exact)", self.rank,
                        len(state["ranks"]) if "ranks" in state else 1, self.world)
        self.epoch, self.batch, self.step, self.elapsed = state["epoch"], state["batch"], state["step"], state["time"]
        self.history = state["history"]
        self.epoch_mean.load_state_dict(state["epoch_mean"])
        self.span_mean.load_state_dict(state["span_mean"])
        self.start_clock()
