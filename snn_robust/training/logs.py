"""Metric rows and the CSV / JSON-lines files :func:`~snn_robust.training.fit` writes."""
from __future__ import annotations

import csv
import json
import platform
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from .state import _Mean

_ROW_ORDER = ("epoch", "step", "clean_acc", "clean_loss", "bound_loss", "loss", "verified", "eps", "lr", "grad_norm", "time")


def _row(mean: _Mean, epoch: int, step: int, elapsed: float, extra: Mapping[str, float] | None = None) -> dict[str, Any]:
    values = mean.means()
    # eps and lr are reported as in the last step of the span, not averaged.
    for k in ("eps", "lr"):
        if k in mean.last:
            values[k] = mean.last[k]
    row: dict[str, Any] = {"epoch": epoch, "step": step}
    row.update({k: values[k] for k in _ROW_ORDER if k in values})
    row["time"] = elapsed
    if extra:
        row.update({k: float(v) for k, v in extra.items()})
    return row


class _MetricsLog:
    """One CSV and one JSON-lines file with the same rows. The CSV columns are the first
    row's keys (later extra keys only go to the JSON lines)."""

    def __init__(self, folder: Path, stem: str) -> None:
        self.csv_path = folder / f"{stem}.csv"
        self.jsonl_path = folder / f"{stem}.jsonl"
        self.columns: list[str] | None = None

    def reset(self, rows: list[dict[str, Any]]) -> None:
        self.columns = None
        self.csv_path.write_text("")
        self.jsonl_path.write_text("")
        for row in rows:
            self.append(row)

    def append(self, row: dict[str, Any]) -> None:
        with open(self.jsonl_path, "a") as f:
            f.write(json.dumps(row) + "\n")
        with open(self.csv_path, "a", newline="") as f:
            if self.columns is None:
                self.columns = list(row)
                csv.DictWriter(f, self.columns).writeheader()
            csv.DictWriter(f, self.columns, extrasaction="ignore").writerow(row)


def _environment() -> dict[str, str]:
    from .. import __version__

    return {"snn_robust": __version__, "torch": str(torch.__version__), "numpy": str(np.__version__), "python": platform.python_version()}
