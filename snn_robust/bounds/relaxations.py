"""Relaxations of the LIF neuron's two nonlinear pieces, as pure functions.

Shape glossary: every tensor here is elementwise over the neuron shape ``[B, N...]``
(or ``[T, B, N...]``); ``th`` broadcasts against it.

The pieces are the fire function ``s = fire(m - th)`` (Eq. 1-2, 7, 8) and the reset,
``z = m (1 - s)`` for a hard reset (Eq. 9, 10) or the linear ``alpha m - kappa th s`` for
a soft one. Each relaxation holds for every ``m`` in ``[ml, mu]``.

**Where the threshold is.** ``>`` firing fires on ``m > th`` and is silent at ``m == th``;
``>=`` fires at ``m == th``. Both are handled by one rule: a neuron is *stable* only when
its whole interval lies strictly on one side of ``th`` (``ml > th``: fires under both
comparisons; ``mu < th``: silent under both); an interval that touches or straddles ``th``
is unstable, with the step anywhere in it. There is no fixed band around the threshold:
the membrane intervals given here already contain every floating-point membrane that a
forward pass can compute, in any summation order (S-IBP widens each one by its own
rounding-error bound, see :mod:`snn_robust.bounds.rounding`), so the comparison with
``th`` is exact.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

__all__ = [
    "LINE_ROOM",
    "Stability",
    "stability",
    "FireRelaxation",
    "fire_relaxation",
    "fire_interval",
    "ResetRelaxation",
    "reset_relaxation",
    "reset_interval",
    "soft_reset_interval",
]

LINE_ROOM = 2.0**-8
"""Smallest room between a membrane bound and the threshold for a fire line, relative to
``max(1, |th|)`` (see :func:`fire_relaxation`)."""


class Stability(NamedTuple):
    """Masks over the neurons: surely firing, surely silent, or unstable. ``th_lo`` and
    ``th_hi`` are the ends of the set where the step may lie (both ``th``: the membrane
    intervals carry the floating-point error themselves)."""

    fires: Tensor
    silent: Tensor
    unstable: Tensor
    th_lo: Tensor
    th_hi: Tensor


def stability(ml: Tensor, mu: Tensor, th: Tensor) -> Stability:
    """Classify neurons by their membrane interval ``[ml, mu]`` against ``th``:
    ``fires`` iff ``ml > th``, ``silent`` iff ``mu < th``, otherwise unstable (the
    interval touches or straddles ``th``); ``>`` and ``>=`` firing agree on the stable
    ones. ``[ml, mu]`` must already contain every floating-point membrane value (see the
    module docstring)."""
    fires = ml > th
    silent = mu < th
    return Stability(fires, silent, ~(fires | silent), th, th)


def fire_interval(st: Stability) -> tuple[Tensor, Tensor]:
    """S-IBP of the fire function (Eq. 7): ``s^l = 1`` iff surely firing, ``s^u = 0``
    iff surely silent."""
    return st.fires.float(), (~st.silent).float()


class FireRelaxation(NamedTuple):
    """``dl * m + bl <= s <= du * m + bu`` on ``[ml, mu]``."""

    dl: Tensor
    bl: Tensor
    du: Tensor
    bu: Tensor


def fire_relaxation(
    ml: Tensor, mu: Tensor, st: Stability, lower_weight: Tensor | None = None, upper_weight: Tensor | None = None
) -> FireRelaxation:
    """S-CROWN relaxation of the fire function (Eq. 8, typo fixed).

    Stable neurons are constants (``s = 1`` or ``s = 0``, slopes 0). For an unstable
    neuron, with the step somewhere in ``[th_lo, th_hi]``, the valid lines are

    * lower: ``s >= 0`` and ``s >= (m - th_hi) / (mu - th_hi)`` (through ``(th_hi, 0)``
      and ``(mu, 1)``), and every convex combination ``lambda * line + (1 - lambda) * 0``;
    * upper: ``s <= 1`` and ``s <= (m - ml) / (th_lo - ml)`` (through ``(ml, 0)`` and
      ``(th_lo, 1)``), and every ``mu * line + (1 - mu) * 1``.

    Without weights, the paper's choice: the lower line with ``s <= 1`` if
    ``mu - th >= th - ml``, else ``s >= 0`` with the upper line. It minimises the area
    between each bound and the step (either bound's area criterion reduces to the same
    comparison). ``lower_weight`` / ``upper_weight`` (in ``[0, 1]``, per neuron) pick any
    other member of the two families (optimised slopes, as in alpha-CROWN [35]). A line
    whose room (``mu - th`` or ``th - ml``) is below ``LINE_ROOM * max(1, |th|)`` is never
    used (its slope would make the backward pass's float error exceed the grid tolerance;
    a zero room would divide by zero); the constant bound replaces it.
    """
    zero = torch.zeros_like(ml)
    one = torch.ones_like(ml)
    a = mu - st.th_hi  # room above the threshold
    b = st.th_lo - ml  # room below the threshold
    # a line with a tiny room has a huge slope, and the backward pass would then sum huge
    # terms that cancel: float error far above the 1/T' grid's tolerance. The constants are
    # always valid, so lines need a room of at least 2^-8 max(1, |th|) (slope <= 256).
    room = LINE_ROOM * torch.clamp(st.th_hi.abs(), min=1.0)
    lower_ok = st.unstable & (a >= room)
    upper_ok = st.unstable & (b >= room)
    if lower_weight is None or upper_weight is None:
        th = (st.th_lo + st.th_hi) / 2
        lower_line = lower_ok & (mu - th >= th - ml)
        lower_weight = lower_line.to(ml.dtype)
        upper_weight = (upper_ok & ~lower_line).to(ml.dtype)
    wl = torch.where(lower_ok, lower_weight, zero)
    wu = torch.where(upper_ok, upper_weight, zero)
    inv_a = torch.where(lower_ok, 1.0 / torch.where(lower_ok, a, one), zero)
    inv_b = torch.where(upper_ok, 1.0 / torch.where(upper_ok, b, one), zero)
    dl = wl * inv_a
    bl = st.fires.to(ml.dtype) - wl * st.th_hi * inv_a
    du = wu * inv_b
    bu = (~st.silent).to(ml.dtype) - wu * (1.0 + ml * inv_b)
    return FireRelaxation(dl, bl, du, bu)


def reset_interval(ml: Tensor, mu: Tensor, st: Stability) -> tuple[Tensor, Tensor]:
    """S-IBP of the hard-reset product ``z = m (1 - s)`` (Eq. 9).

    Silent: ``[ml, mu]``; firing: ``[0, 0]``; unstable: the silent part of the interval
    gives ``m`` in ``[ml, min(mu, th_hi)]`` and the firing part gives 0, so
    ``z in [min(0, ml), max(0, min(mu, th_hi))]`` (Eq. 9 has ``th`` as the upper end;
    ``min(mu, th_hi)`` is never looser).
    """
    zero = torch.zeros_like(ml)
    # relu, not clamp: torch changed clamp's gradient at the clamp point between releases
    # (2.11 passes it, 2.14 does not); relu's is 0 there in all of them, as in the CUDA kernel.
    zl = torch.where(st.silent, ml, torch.where(st.fires, zero, -torch.relu(-ml)))
    zu = torch.where(st.silent, mu, torch.where(st.fires, zero, torch.relu(torch.minimum(mu, st.th_hi))))
    return zl, zu


class ResetRelaxation(NamedTuple):
    """``al*m + bl*s + cl <= z <= au*m + bu*s + cu`` for ``z = m (1 - s)``."""

    al: Tensor
    bl: Tensor
    cl: Tensor
    au: Tensor
    bu: Tensor
    cu: Tensor


def reset_relaxation(
    ml: Tensor,
    mu: Tensor,
    st: Stability,
    adaptive: bool = False,
    lower_weight: Tensor | None = None,
    upper_weight: Tensor | None = None,
) -> ResetRelaxation:
    """S-CROWN relaxation of the hard-reset product ``z = m (1 - s)`` (Eq. 10).

    Stable silent: ``z = m``; stable firing: ``z = 0``. Unstable: the reachable points
    ``(m, s, z)`` are ``(m, 0, m)`` for ``m`` up to the step and ``(m, 1, 0)`` past it;
    their convex hull is the tetrahedron on ``(ml, 0, ml)``, ``(th, 0, th)``,
    ``(th, 1, 0)``, ``(mu, 1, 0)``. Its four faces are the four valid planes:

    * upper ``z <= th_hi (1 - s)`` and lower ``z >= ml (1 - s)``: the paper's Eq. 10;
    * upper ``z <= m - th_lo s`` and lower ``z >= m - mu s``: the two other faces.

    Any convex combination of the two upper (lower) faces is valid too; the weight of the
    paper's face is 1 by default. ``adaptive=True`` sets it to 0 (the other face) on the
    neurons where that face has the smaller gap to the hull, integrated over the
    ``(m, s)`` region: the paper's pair when ``mu - th >= th - ml`` (mostly firing), the
    other pair otherwise (mostly silent, where ``z`` follows ``m``). ``lower_weight`` /
    ``upper_weight`` give the weights per neuron (optimised planes).
    """
    silent = st.silent.to(ml.dtype)
    unstable = st.unstable.to(ml.dtype)
    if lower_weight is None or upper_weight is None:
        th = (st.th_lo + st.th_hi) / 2
        other = st.unstable & (mu - th < th - ml) if adaptive else torch.zeros_like(st.unstable)
        lower_weight = upper_weight = (~other).to(ml.dtype)
    wl, wu = lower_weight * unstable, upper_weight * unstable
    vl, vu = unstable - wl, unstable - wu  # weights of the other faces
    th_hi = st.th_hi.expand_as(ml)
    th_lo = st.th_lo.expand_as(ml)
    # lower: wl * ml (1 - s) + vl * (m - mu s) ; upper: wu * th_hi (1 - s) + vu * (m - th_lo s)
    al = silent + vl
    bl = -(wl * ml + vl * mu)
    cl = wl * ml
    au = silent + vu
    bu = -(wu * th_hi + vu * th_lo)
    cu = wu * th_hi
    return ResetRelaxation(al, bl, cl, au, bu, cu)


def soft_reset_interval(
    ml: Tensor, mu: Tensor, st: Stability, alpha: Tensor, kappa: Tensor, th: Tensor
) -> tuple[Tensor, Tensor]:
    """S-IBP of the soft-reset carry ``c = alpha m - kappa th s`` with ``s = fire(m)``.

    The carry is a function of ``m`` alone, linear on each side of the step with a drop
    of ``kappa th`` at it, so its exact range over ``[ml, mu]`` is the union of the two
    pieces (``alpha >= 0``): silent part ``alpha [ml, min(mu, th_hi)]``, firing part
    ``alpha [max(ml, th_lo), mu] - kappa th``. Bounding ``m`` and ``s`` separately
    would lose this coupling.
    """
    drop = kappa * th
    silent_l, silent_u = alpha * ml, alpha * torch.minimum(mu, st.th_hi)
    fire_l, fire_u = alpha * torch.maximum(ml, st.th_lo) - drop, alpha * mu - drop
    lower = torch.where(st.silent, alpha * ml, torch.where(st.fires, alpha * ml - drop, torch.minimum(silent_l, fire_l)))
    upper = torch.where(st.silent, alpha * mu, torch.where(st.fires, alpha * mu - drop, torch.maximum(silent_u, fire_u)))
    return lower, upper
