"""Model files: a paper network's weights with the record needed to rebuild it.

A model file (``model.pt``) is what ``snn-robust train`` / ``robust-train`` and the recipes
write and what ``attack`` / ``certify`` read: ``{"format": MODEL_FORMAT, "arch", "dataset",
"state_dict", "meta", "environment"}``, plain data with a SHA-256
(:func:`snn_robust.fileio.save_checked`), rebuilt with :func:`snn_robust.models.paper_model`.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch

from . import distributed
from .fileio import DamagedFileError, read_checked, save_checked
from .models import paper_model
from .network import SpikingNetwork
from .provenance import environment
from .training import NonFiniteError, non_finite_parameters
from .validation import non_finite_names

__all__ = ["MODEL_FORMAT", "ModelFileError", "load_model", "save_model"]

log = logging.getLogger(__name__)

MODEL_FORMAT = "snn-robust-model/1"


class ModelFileError(ValueError):
    """A model file cannot be used: damaged, not plain data, not an snn-robust model, or
    holding non-finite weights. The message names the file."""


def save_model(path: str | os.PathLike[str], net: SpikingNetwork, *, arch: str, dataset: str,
               **meta: Any) -> Path:
    """Write a model file that :func:`load_model` (and the CLI) can rebuild: the paper
    architecture and dataset, the weights, and any JSON-able ``meta`` (training config,
    perturbation, environment), as plain data with a SHA-256 (:func:`save_checked`).
    Refuses (``NonFiniteError``) a network with NaN or infinite weights. Under several
    processes only rank 0 writes (the others return ``path`` without writing)."""
    bad = non_finite_parameters(net)
    if bad:
        raise NonFiniteError(f"refusing to save {path}: non-finite weights in {', '.join(bad)}")
    if not distributed.is_main():
        return Path(path)
    state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    return save_checked({"format": MODEL_FORMAT, "arch": arch, "dataset": dataset, "state_dict": state,
                         "meta": meta, "environment": environment()}, path)


def load_model(path: str | os.PathLike[str], device: torch.device | str = "cpu") -> tuple[SpikingNetwork, dict[str, Any]]:
    """Rebuild a network saved by :func:`save_model`; returns ``(net, info)`` where ``info``
    holds ``arch``, ``dataset`` and ``meta``.

    The file is read with ``torch.load(weights_only=True)`` (nothing in it can run code) and
    its SHA-256 is verified; model files from before checksums are read with a warning.

    Raises:
        FileNotFoundError: no file at ``path``.
        ModelFileError: damaged, hostile or foreign file, or non-finite weights.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"model file {p} does not exist")
    try:
        ck, verified = read_checked(p)
    except DamagedFileError as exc:
        raise ModelFileError(f"not a readable model file: {exc}") from None
    if not isinstance(ck, dict) or ck.get("format") != MODEL_FORMAT:
        raise ModelFileError(f"{p} is not an snn-robust model file (expected format {MODEL_FORMAT!r}; "
                             "make one with 'snn-robust train' or 'snn-robust robust-train')")
    if not verified:
        log.warning("%s carries no checksum (written by an older version); its integrity is not verified", p)
    state = ck.get("state_dict")
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise ModelFileError(f"{p} is damaged: its weights are missing or not tensors")
    bad = non_finite_names(state.items())
    if bad:
        raise ModelFileError(f"{p} holds non-finite weights in {', '.join(bad)}; it was refused")
    try:
        net = paper_model(ck["arch"], ck["dataset"])
        net.load_state_dict(state)
    except (KeyError, ValueError, TypeError, RuntimeError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelFileError(f"{p} does not match its architecture record ({reason})") from None
    net.to(device).eval()
    return net, {"arch": ck["arch"], "dataset": ck["dataset"], "meta": ck.get("meta", {})}
