"""Running metric means, metric rows and the CSV / JSON-lines files :func:`~snn_robust.training.fit`
writes, and the environment record."""
from __future__ import annotations

import csv
import json
import platform
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch


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
