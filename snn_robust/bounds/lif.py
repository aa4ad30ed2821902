"""The LIF layer as a bound operator: S-IBP's charge/fire/reset recurrence (Algorithm 1)
and S-CROWN's coefficient recurrence (Algorithm 2) over the steps.

Shape glossary: ``T`` steps, ``B`` batch, ``S`` specification rows, ``N...`` the layer's
neuron shape (``N`` flattened).

:class:`BoundLIF` is to a :class:`~snn_robust.LIF` layer what
:class:`~snn_robust.bounds.spatial.BoundOp` is to a spatial layer: ``interval`` maps the
interval of the spatial input ``sp`` to the membrane and spike intervals, ``backward``
maps coefficients on the spikes to coefficients on ``sp`` plus a bias. The relaxations
(:mod:`~snn_robust.bounds.relaxations`) are chosen inside it. What differs between reset
kinds lives in one small :class:`Reset` object per kind (:class:`HardReset`,
:class:`SoftReset`, looked up by ``LIF.reset`` in :data:`RESETS`): a new reset kind is
one such class (and its forward arithmetic in :meth:`LIF.charge`).

The recurrences over ``T`` are the module-level functions :func:`ibp_recurrence` and
:func:`crown_recurrence`, with plain tensor arguments (and the stateless ``Reset``
object): the place a fused kernel replaces the Python loop (:mod:`snn_robust.kernels`).

Per step of S-IBP (for the widening see :mod:`~snn_robust.bounds.rounding`):

* charge: ``m_t in scale * [sp^l_t, sp^u_t] + [c^l_{t-1}, c^u_{t-1}]``, widened by the
  charge's error bound, so that ``[m^l_t, m^u_t]`` holds every float membrane that any
  forward pass (ours, snnTorch's, SpikingJelly's) computes for an input in the box; a
  fixed input with a fixed carry gets the one float the network's own ``LIF.charge``
  gives;
* fire, Eq. 7: ``s^l_t = [m^l_t > th]``, ``s^u_t = [m^u_t >= th]`` (through the
  surrogate, so the bounds are differentiable for training): exact for ``>`` and ``>=``
  firing, since the interval already contains every float membrane;
* reset, Eq. 9 (hard) or the exact soft-reset range: the carry interval.

Per step of S-CROWN, walking backward in time:

* fire (Eq. 8): the coefficient on ``s_t`` moves onto ``m_t`` through the lower line
  (positive coefficient) or the upper line (negative coefficient) of the relaxation;
* reset (Eq. 10 for a hard reset; exact for a soft one): the coefficient on ``m_t``
  reaches ``m_{t-1}`` and ``s_{t-1}`` through ``alpha z_{t-1}`` or
  ``alpha m_{t-1} - kappa th s_{t-1}``;
* the coefficient on ``m_t`` times ``scale`` is the coefficient on ``sp_t``.

Cost notes (method.md section 8). A lower and an upper relaxation line differ only on
unstable neurons, so a backward step is "upper line everywhere, plus the difference
where the coefficient is positive" (:class:`Lines`), and the constant terms go straight
into the bias as batched dot products, without materialising their products.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple

import torch
from torch import Tensor

from .. import kernels
from ..neuron import LIF, spike
from .relaxations import Stability, fire_relaxation, reset_interval, reset_relaxation, soft_reset_interval, stability
from .rounding import charge_error, point_outputs_exact, unit_roundoff

__all__ = [
    "BoundLIF", "LIFInterval", "Relaxation", "Lines", "CarryLines", "Reset", "HardReset", "SoftReset", "RESETS",
    "ibp_recurrence", "crown_recurrence",
]


@dataclass
class Relaxation:
    """Per-neuron weights ``[T, B, N...]`` choosing one stage's relaxations within their
    valid families (see ``fire_relaxation`` / ``reset_relaxation``); ``None`` keeps the
    default choice."""

    fire_lower: Tensor | None = None
    fire_upper: Tensor | None = None
    reset_lower: Tensor | None = None
    reset_upper: Tensor | None = None


class Lines(NamedTuple):
    """A lower and an upper line's coefficient, as ``up`` (the upper one) and ``diff``
    (lower - upper, ``None`` where it vanishes everywhere). ``per_step``: ``[T, B, N]``;
    otherwise one value for every step and sample (a neuron parameter, ``[N]`` or a
    scalar)."""

    up: Tensor
    diff: Tensor | None
    per_step: bool = True

    def at(self, t: int) -> tuple[Tensor, Tensor | None]:
        """``(up, diff)`` at step ``t``, broadcastable against coefficients ``[B, S, N]``."""
        if not self.per_step:
            return self.up, self.diff
        return self.up[t].unsqueeze(1), None if self.diff is None else self.diff[t].unsqueeze(1)

    def vec(self, t: int) -> tuple[Tensor, Tensor | None]:
        """``(up, diff)`` at step ``t`` as ``[B, N]`` vectors (per-step lines only)."""
        return self.up[t], None if self.diff is None else self.diff[t]


class CarryLines(NamedTuple):
    """The carry ``c_t`` bounded by lines in ``(m_t, s_t)``: ``c >= m_l m + s_l s + c_l``
    and ``c <= m_u m + s_u s + c_u`` (as :class:`Lines`; ``const`` is ``None`` for a
    carry without a constant term)."""

    m: Lines
    s: Lines
    const: Lines | None


def _dot(coef: Tensor, vec: Tensor) -> Tensor:
    """``sum_N coef * vec`` for ``coef`` ``[B, S, N]`` and ``vec`` ``[B, N]`` -> ``[B, S]``."""
    return torch.bmm(coef, vec.unsqueeze(-1)).squeeze(-1)


def _lines(lower_slope: Tensor, upper_slope: Tensor) -> Lines:
    """``(upper, lower - upper)`` flattened to ``[T, B, N]``; the difference is ``None``
    where it vanishes everywhere (e.g. the paper's reset planes have equal slopes)."""
    up = upper_slope.flatten(2)
    diff = (lower_slope - upper_slope).flatten(2)
    return Lines(up, diff if bool(diff.any()) else None)


def _select(coef: Tensor, pos: Tensor | None, up: Tensor, diff: Tensor | None) -> Tensor:
    """``coef * line`` with the lower line where ``coef > 0`` (``pos = relu(coef)``)."""
    out = coef * up
    return out if diff is None else torch.addcmul(out, pos, diff)


def _bias(coef: Tensor, pos: Tensor | None, up: Tensor, diff: Tensor | None) -> Tensor:
    out = _dot(coef, up)
    return out if diff is None else out + _dot(pos, diff)


def _per_neuron(value: Tensor, like: Tensor) -> Tensor:
    """A neuron parameter broadcast to ``[N]`` (or kept scalar)."""
    return value if value.numel() == 1 else value.expand(like.shape[2:]).flatten()


class Reset:
    """What one reset kind contributes to the bounds (stateless; one instance per kind
    in :data:`RESETS`). Subclasses give the carry's interval (S-IBP), its lines
    (S-CROWN) and the bound on ``|v|``, the membrane after the reset."""

    name: str = ""
    weights: int = 0  # relaxation weights of the carry (Relaxation.reset_lower / reset_upper) it optimises

    def interval(
        self, ml: Tensor, mu: Tensor, st: Stability, alpha: Tensor, kappa: Tensor, th: Tensor
    ) -> tuple[Tensor, Tensor]:
        """The carry interval ``[c^l_t, c^u_t]`` for membranes in ``[ml, mu]``."""
        raise NotImplementedError

    def offset(self, th: Tensor) -> Tensor | float:
        """``|v_t| <= max(|m^l_t|, |m^u_t|) + offset``, no gradient (for the next charge's
        error bound)."""
        raise NotImplementedError

    def lines(
        self, ml: Tensor, mu: Tensor, st: Stability, alpha: Tensor, kappa: Tensor, th: Tensor,
        adaptive: bool, weights: Relaxation,
    ) -> CarryLines:
        """The carry's relaxation in ``(m, s)``; ``alpha`` is per neuron (``[N]`` or a
        scalar), the membranes ``[T, B, N...]``."""
        raise NotImplementedError


class HardReset(Reset):
    """``c = alpha m (1 - s)``: the product ``z = m (1 - s)`` relaxed by Eq. 9 (S-IBP)
    and the planes of Eq. 10 or the other faces of its hull (S-CROWN), times ``alpha``."""

    name = "zero"
    weights = 2

    def interval(self, ml, mu, st, alpha, kappa, th):
        zl, zu = reset_interval(ml, mu, st)
        return alpha * zl, alpha * zu

    def offset(self, th):
        return 0.0

    def lines(self, ml, mu, st, alpha, kappa, th, adaptive, weights):
        r = reset_relaxation(ml, mu, st, adaptive, weights.reset_lower, weights.reset_upper)
        # alpha >= 0 commutes with the sign test, so fold it into the planes
        return CarryLines(
            _lines(alpha * r.al.flatten(2), alpha * r.au.flatten(2)),
            _lines(alpha * r.bl.flatten(2), alpha * r.bu.flatten(2)),
            _lines(alpha * r.cl.flatten(2), alpha * r.cu.flatten(2)),
        )


class SoftReset(Reset):
    """``c = alpha m - kappa th s``: linear in ``(m, s)``, so S-CROWN is exact; S-IBP
    takes the exact range over the membrane interval (``soft_reset_interval``)."""

    name = "subtract"
    weights = 0

    def interval(self, ml, mu, st, alpha, kappa, th):
        return soft_reset_interval(ml, mu, st, alpha, kappa, th)

    def offset(self, th):
        return th.detach()

    def lines(self, ml, mu, st, alpha, kappa, th, adaptive, weights):
        drop = -(_per_neuron(kappa, ml) * _per_neuron(th, ml))
        return CarryLines(Lines(alpha, None, per_step=False), Lines(drop, None, per_step=False), None)


RESETS: dict[str, Reset] = {r.name: r for r in (HardReset(), SoftReset())}
"""The bound side of each ``LIF.reset`` kind."""


class LIFInterval(NamedTuple):
    """S-IBP through one LIF layer: membrane and spike intervals ``[T, B, N...]``, the
    stability masks, and the floating-point error bound of each float membrane against
    the exact charge of the exact spatial layers (no gradient)."""

    membrane: tuple[Tensor, Tensor]
    stability: Stability
    spikes: tuple[Tensor, Tensor]
    charge_errors: Tensor


def ibp_recurrence(
    spl: Tensor,
    spu: Tensor,
    alpha: Tensor,
    scale: Tensor,
    th: Tensor,
    kappa: Tensor,
    reset: Reset,
    charge: Callable[[Tensor, Tensor, Tensor], Tensor] | None = None,
    sp_err: Tensor | None = None,
    clip: tuple[Tensor, Tensor] | None = None,
) -> tuple[Tensor, Tensor, list[Tensor]]:
    """The S-IBP charge/reset recurrence over ``T`` (module docstring): membrane bounds
    ``ml, mu`` (``[T, B, N...]``) from the spatial input's ``[spl, spu]``.

    ``charge(m_prev, s_prev, sp)`` is the network's own charge arithmetic, used for the
    neurons whose input and carry are both fixed points (``"same-kernel"`` error model;
    ``None``: no such shortcut). ``sp_err`` (``[T * B, N...]``) is the spatial layers'
    carried rounding error, added (times ``scale``) to the returned per-step charge
    errors (each ``[B, N...]`` or broadcastable to it) for S-CROWN. ``clip`` (``[T, B, N...]``
    each): other sound membrane bounds (full S-CROWN's), intersected with each step's
    interval before its carry is taken."""
    T, B = spl.shape[:2]
    u = unit_roundoff(spl.dtype)  # the charge is elementwise: IEEE on every device, TF32 or not
    fused = kernels.fused_ibp_recurrence(spl, spu, alpha, scale, th, kappa, reset.name, charge, sp_err, u, clip)
    if fused is not None:  # the CUDA kernel of this loop (snn_robust.kernels), where it applies
        return fused
    with torch.no_grad():
        sp_abs = torch.maximum(spl.abs(), spu.abs())
        a_d, s_d = alpha.detach(), scale.detach()
        v_offset = reset.offset(th)
    cl = cu = torch.zeros_like(spl[0])
    v_abs = torch.zeros_like(sp_abs[0])
    m_prev = s_prev = torch.zeros_like(spl[0])
    exact_points = charge is not None
    mls, mus, errs = [], [], []
    for t in range(T):
        with torch.no_grad():
            err = charge_error(sp_abs[t], v_abs, a_d, s_d, u)
            point = (spl[t] == spu[t]) & (cl == cu) if exact_points else None
            if point is not None:
                err = err * ~point
        ml, mu = scale * spl[t] + cl - err, scale * spu[t] + cu + err
        if point is not None and bool(point.any()):
            # a fixed input and a fixed carry: the membrane is the one float that the
            # network's own charge arithmetic gives (rounding module docstring)
            m_point = charge(m_prev, s_prev, spl[t])
            ml, mu = torch.where(point, m_point, ml), torch.where(point, m_point, mu)
        if clip is not None:
            ml, mu = torch.maximum(ml, clip[0][t]), torch.minimum(mu, clip[1][t])
        st = stability(ml, mu, th)
        cl, cu = reset.interval(ml, mu, st, alpha, kappa, th)
        with torch.no_grad():  # |v|, the membrane after this step's reset, for the next charge
            v_abs = torch.maximum(ml.abs(), mu.abs()) + v_offset
        m_prev, s_prev = ml, st.fires.to(ml.dtype)
        mls.append(ml)
        mus.append(mu)
        errs.append(err if sp_err is None else err + s_d * sp_err.reshape(T, B, *sp_err.shape[1:])[t])
    return torch.stack(mls), torch.stack(mus), errs


def crown_recurrence(
    A: Tensor,
    fire_slope: Lines,
    fire_const: Lines,
    carry: CarryLines,
    scale: Tensor | None,
    charge_err: Tensor | None = None,
    A_m: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """The S-CROWN coefficient recurrence over ``T``, backward (module docstring):
    coefficients ``A`` (``[T, B, S, N]``) on the spikes -> on the spatial input (times
    ``scale``; ``None``: a scale of 1, no product), and the bias ``[B, S]`` collected.

    ``fire_slope`` / ``fire_const``: ``s_t`` between lines ``d m_t + b`` (per step);
    ``carry``: ``c_{t-1}`` between lines in ``(m_{t-1}, s_{t-1})``; ``charge_err``
    (``[T, B, N...]``): each float membrane's error bound, paid as ``|coef| . err``;
    ``A_m`` (``[T, B, S, N]``): coefficients directly on the membranes (a backward pass
    that starts at this layer's membranes, full S-CROWN)."""
    fused = kernels.fused_crown_recurrence(A, fire_slope, fire_const, carry, scale, charge_err, A_m)
    if fused is not None:  # the CUDA kernel of this loop (snn_robust.kernels), where it applies
        return fused
    T, B, S = A.shape[:3]
    bias = A.new_zeros(B, S)
    lam_sp: list[Tensor] = [None] * T  # type: ignore[list-item]
    carry_m = carry_s = None
    fire_pos = fire_slope.diff is not None or fire_const.diff is not None
    carry_pos = any(lines is not None and lines.diff is not None for lines in carry)
    for t in reversed(range(T)):
        lam_s = A[t] if carry_s is None else A[t] + carry_s
        # relu, not clamp: its gradient at 0 is the same in every torch release (relaxations.reset_interval)
        pos = torch.relu(lam_s) if fire_pos else None
        lam_m = _select(lam_s, pos, *fire_slope.at(t))
        bias = bias + _bias(lam_s, pos, *fire_const.vec(t))
        if carry_m is not None:
            lam_m = lam_m + carry_m
        if A_m is not None:
            lam_m = lam_m + A_m[t]
        if charge_err is not None:
            bias = bias - _dot(lam_m.detach().abs(), charge_err[t].flatten(1))
        lam_sp[t] = lam_m if scale is None else lam_m * scale
        if t == 0:
            break
        pos_m = torch.relu(lam_m) if carry_pos else None
        carry_m = _select(lam_m, pos_m, *carry.m.at(t - 1))
        carry_s = _select(lam_m, pos_m, *carry.s.at(t - 1))
        if carry.const is not None:
            bias = bias + _bias(lam_m, pos_m, *carry.const.vec(t - 1))
    return torch.stack(lam_sp), bias


class BoundLIF:
    """A :class:`~snn_robust.LIF` layer seen by the bound engine (module docstring).

    Reads the layer's live parameters (``alpha``, ``threshold``, ``input_scale``,
    ``kappa``, learnable or not) on every call; the reset kind's share is ``self.reset``
    (:data:`RESETS`)."""

    def __init__(self, lif: LIF, name: str) -> None:
        if lif.reset not in RESETS:
            raise ValueError(f"layer {name} ({lif.layer_kind}): reset {lif.reset!r} has no bound; known: {tuple(RESETS)}")
        self.lif = lif
        self.name = name
        self.reset = RESETS[lif.reset]

    @property
    def relaxation_weights(self) -> int:
        """How many per-neuron weight tensors a :class:`Relaxation` of this layer takes
        (the two fire lines, then the reset's)."""
        return 2 + self.reset.weights

    def interval(
        self, spl: Tensor, spu: Tensor, sp_err: Tensor | None = None, clip: tuple[Tensor, Tensor] | None = None
    ) -> LIFInterval:
        """S-IBP of the layer for spatial inputs in ``[spl, spu]`` (``[T, B, N...]``);
        ``sp_err`` (``[T * B, N...]`` or ``None``) is the spatial layers' carried error;
        ``clip``: other sound membrane bounds to intersect with (:func:`ibp_recurrence`)."""
        lif = self.lif
        th = lif.threshold
        charge = lif.charge if point_outputs_exact() else None
        ml, mu, errs = ibp_recurrence(
            spl, spu, lif.alpha, lif.input_scale, th, lif.kappa, self.reset, charge, sp_err, clip
        )
        st = stability(ml, mu, th)
        # s^u = 0 iff surely silent (mu < th_lo); s^l = 1 iff surely firing (ml > th_hi).
        sl = spike(ml - st.th_hi, ">", lif.surrogate)
        su = spike(mu - st.th_lo, ">=", lif.surrogate)
        return LIFInterval((ml, mu), st, (sl, su), torch.stack([e.expand_as(ml[0]) for e in errs]))

    def backward(
        self,
        A: Tensor,
        membrane: tuple[Tensor, Tensor],
        stability: Stability,
        adaptive: bool = False,
        weights: Relaxation | None = None,
        charge_err: Tensor | None = None,
        A_m: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Coefficients ``[T, B, S, N]`` on the layer's spikes -> on its spatial input
        ``sp`` (times ``scale``), and the bias ``[B, S]`` collected on the way.
        ``charge_err`` (``[T, B, N...]``) bounds the rounding of each float membrane
        against the exact charge ``scale * sp + carry`` of the exact spatial layers, and
        is paid for in the bias (``c . m_float >= c . m_exact - |c| . err``; without
        gradient: the term is ~1e-6 of the bound and its gradient is noise). ``A_m``
        (``[T, B, S, N]``): coefficients on the membranes too (:func:`crown_recurrence`)."""
        lif = self.lif
        ml, mu = membrane
        w = weights if weights is not None else Relaxation()
        fire = fire_relaxation(ml, mu, stability, w.fire_lower, w.fire_upper)
        fire_slope, fire_const = _lines(fire.dl, fire.du), _lines(fire.bl, fire.bu)
        alpha = _per_neuron(lif.alpha, ml)
        scale = _per_neuron(lif.input_scale, ml)
        carry = self.reset.lines(ml, mu, stability, alpha, lif.kappa, lif.threshold, adaptive, w)
        # a constant scale of 1 (snnTorch, the paper) needs no product; one host sync per stage
        unit_scale = scale.numel() == 1 and not scale.requires_grad and float(scale) == 1.0
        return crown_recurrence(A, fire_slope, fire_const, carry, None if unit_scale else scale, charge_err, A_m)

