"""What a training run carries between steps and across a restart: RNG states, checkpoint
files (atomic, checksummed, with a previous one kept) and the running metric means."""
from __future__ import annotations

import logging
import os
import random
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from .. import distributed
from ..fileio import DamagedFileError, load_checked, save_checked
from ..validation import non_finite_names

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


class _Mean:
    """Batch-size-weighted running means of metric floats (checkpointable)."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.weight = 0.0
        self.last: dict[str, float] = {}

    def add(self, metrics: Mapping[str, float], weight: float) -> None:
        for k, v in metrics.items():
            self.sums[k] = self.sums.get(k, 0.0) + v * weight
        self.weight += weight
        self.last = dict(metrics)

    def means(self) -> dict[str, float]:
        return {k: s / self.weight for k, s in self.sums.items()} if self.weight else {}

    def state_dict(self) -> dict[str, Any]:
        return {"sums": dict(self.sums), "weight": self.weight, "last": dict(self.last)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.sums, self.weight, self.last = dict(state["sums"]), float(state["weight"]), dict(state["last"])


def _checkpoint_to_resume(path: Path) -> dict[str, Any] | None:
    """The newest usable checkpoint: ``last.pt``, else ``previous.pt`` with a warning (a
    damaged ``last.pt`` is renamed ``last.pt.damaged`` so that the next save does not rotate
    it over the good previous one); ``None`` when neither exists.

    A checkpoint is usable when its checksum holds, it has this format and its weights are
    finite. Raises :class:`CheckpointError` when files exist but none is usable."""
    previous = path.with_name(PREVIOUS_CHECKPOINT_NAME)
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
        return ck
    if problems:
        raise CheckpointError(f"cannot resume: {'; '.join(problems)}; no good checkpoint is left in {path.parent} "
                              f"(delete {path.name} and {previous.name} there to start over)")
    return None


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
