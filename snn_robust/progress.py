"""Progress reports that read well both in a terminal and in a log file.

:func:`progress_bar` is a tqdm bar when stderr is a terminal. When it is not (a log file, a
pipe, CI), a redrawn bar would pile ``\\r`` updates onto one line, so the same calls write a
plain log line instead at every tenth of the work (at most one per :data:`QUIET_S`
seconds, none for work that ends sooner): count, share, measured time per unit and the time
left at that rate. :func:`format_row` turns a training metrics row into one line of
text, :func:`format_duration` a number of seconds into ``"2 min 05 s"``.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Mapping
from typing import Any

__all__ = ["PlainProgress", "format_duration", "format_row", "progress_bar"]

log = logging.getLogger(__name__)

#: :class:`PlainProgress` writes no line sooner than this many seconds after its previous line
#: (or its start), so short evaluations stay silent and long stages report every tenth.
QUIET_S = 10.0


def format_duration(seconds: float) -> str:
    """``"45 s"``, ``"2 min 05 s"``, ``"1 h 03 min"``."""
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    minutes, sec = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {sec:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


#: How :func:`format_row` shows the columns of a metrics row: label and kind.
_SHOWN = {
    "loss": ("loss", "num"), "clean_loss": ("clean loss", "num"), "bound_loss": ("bound loss", "num"),
    "clean_acc": ("clean acc", "pct"), "verified": ("verified", "pct"), "eps": ("eps", "num"), "lr": ("lr", "num"),
}


def format_row(row: Mapping[str, Any], epochs: int | None = None, name: str = "") -> str:
    """One training metrics row (``epoch``, ``loss``, ``clean_acc``, ..., ``time``) as text:
    ``"robust epoch 2/3: loss 0.412, clean acc 91.2 %, verified 12.0 %, eps 0.12 (34 s in all)"``.
    Columns it does not know are shown as ``name value``."""
    epoch = row.get("epoch")
    head = f"{name} epoch" if name else "epoch"
    if epoch is not None:
        head += f" {int(epoch) + 1}/{epochs}" if epochs else f" {int(epoch) + 1}"
    parts = []
    for key, value in row.items():
        if key in ("epoch", "step", "time") or not isinstance(value, (int, float)):
            continue
        label, kind = _SHOWN.get(key, (key.replace("_", " "), "num"))
        parts.append(f"{label} {100 * value:.1f} %" if kind == "pct" else f"{label} {value:.4g}")
    tail = f" ({format_duration(row['time'])} in all)" if isinstance(row.get("time"), (int, float)) else ""
    return f"{head}: {', '.join(parts)}{tail}"


class PlainProgress:
    """The part of tqdm's interface that snn-robust uses (``update``, ``set_postfix``,
    ``close``), writing one log line per tenth of ``total`` instead of a redrawn bar."""

    def __init__(self, total: int | None, desc: str, *, initial: int = 0, unit: str = "step",
                 logger: logging.Logger | None = None) -> None:
        self.total, self.desc, self.unit = total, desc, unit
        self.n = self._start = int(initial)
        self._t0 = self._last = time.perf_counter()
        self._reported = False
        self._next = self._mark_after(self.n)
        self._postfix = ""
        self._log = logger or log
        self._closed = False

    def _mark_after(self, n: int) -> int:
        if not self.total:
            return sys.maxsize
        tenth = max(1, self.total // 10)
        return (n // tenth + 1) * tenth

    def set_postfix(self, ordered_dict: Mapping[str, Any] | None = None, refresh: bool = True, **kwargs: Any) -> None:
        values = {**(ordered_dict or {}), **kwargs}
        self._postfix = ", ".join(f"{k} {v}" for k, v in values.items())

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.n >= self._next and (self.total is None or self.n < self.total):
            self._next = self._mark_after(self.n)
            if time.perf_counter() - self._last >= QUIET_S:
                self._report()

    def _report(self) -> None:
        done = self.n - self._start
        elapsed = time.perf_counter() - self._t0
        units = self.unit + ("es" if self.unit.endswith(("ch", "s", "sh", "x")) else "s")
        text = f"{self.desc}: {self.n}"
        text += f"/{self.total} {units} ({100 * self.n / self.total:.0f} %)" if self.total else f" {units}"
        if done > 0:
            per = elapsed / done
            text += f", {per:.3g} s/{self.unit}"
            if self.total and self.n < self.total:
                text += f", about {format_duration(per * (self.total - self.n))} left"
            elif self.total:
                text += f", {format_duration(elapsed)} in all"
        if self._postfix:
            text += f"; {self._postfix}"
        self._log.info("%s", text)
        self._last, self._reported = time.perf_counter(), True

    def close(self) -> None:
        # The closing line only completes a series: work that never reported stays silent.
        if not self._closed and self.n > self._start and self._reported:
            self._report()
        self._closed = True


def progress_bar(total: int | None, desc: str, *, enabled: bool = True, initial: int = 0, unit: str = "step",
                 leave: bool = True) -> Any:
    """A tqdm bar on a terminal, :class:`PlainProgress` lines otherwise; with
    ``enabled=False`` a disabled tqdm (no output at all)."""
    from tqdm.auto import tqdm

    if not enabled or sys.stderr.isatty():
        return tqdm(total=total, initial=initial, desc=desc, unit=unit, disable=not enabled, leave=leave,
                    dynamic_ncols=True)
    return PlainProgress(total, desc, initial=initial, unit=unit)
