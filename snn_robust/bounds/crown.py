"""S-CROWN: the backward linear bound of a specification (Algorithm 2).

Shape glossary: ``T`` steps, ``B`` batch, ``S`` specification rows, ``N`` a layer's
neurons (flattened), ``M = T * B``.

For a specification ``C`` (``[B, S, classes]``) the bound is on ``C . rate`` with
``rate = (1/T) sum_t s_t[K]``. Starting from the coefficients ``C / T`` on every output
spike, each stage is walked backward in time:

* fire (Eq. 8): the coefficient on ``s_t`` moves onto ``m_t`` through the lower line
  (positive coefficient) or the upper line (negative coefficient) of the relaxation;
* reset (Eq. 10 for a hard reset; exact for a soft one): the coefficient on ``m_t``
  reaches ``m_{t-1}`` and ``s_{t-1}`` through ``alpha z_{t-1}`` or
  ``alpha m_{t-1} - kappa th s_{t-1}``;
* spatial: the coefficient on ``m_t`` times ``scale`` goes back through the spatial
  layers (exact transposes, all steps at once) onto the previous layer's spikes.

At the input the linear bound is concretised over the box,
``sum_t A_t . mid_t - |A_t| . rad_t + bias``. The intermediate membrane intervals come
from S-IBP (CROWN-IBP).

Cost notes (method.md section 8). A lower and an upper relaxation line differ only on
unstable neurons, so a backward step is "upper line everywhere, plus the difference
where the coefficient is positive", and the constant terms go straight into the bias as
batched dot products, without materialising their products. At the input, the first
spatial layer is never transposed in full: ``A . mid`` is the coefficient on that
layer's output times the centre S-IBP already computed, and ``|A| . rad`` is needed only
where ``rad != 0`` (the unstable input elements, a small share for sampled bounds).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..network import SpikingNetwork
from .ibp import IBPResult
from .relaxations import fire_relaxation, reset_relaxation
from .spatial import BoundFlatten

__all__ = ["Relaxation", "s_crown", "s_crown_optimized"]


@dataclass
class Relaxation:
    """Per-neuron weights ``[T, B, N...]`` choosing one stage's relaxations within their
    valid families (see ``fire_relaxation`` / ``reset_relaxation``); ``None`` keeps the
    default choice."""

    fire_lower: Tensor | None = None
    fire_upper: Tensor | None = None
    reset_lower: Tensor | None = None
    reset_upper: Tensor | None = None


def _dot(coef: Tensor, vec: Tensor) -> Tensor:
    """``sum_N coef * vec`` for ``coef`` ``[B, S, N]`` and ``vec`` ``[B, N]`` -> ``[B, S]``."""
    return torch.bmm(coef, vec.unsqueeze(-1)).squeeze(-1)


def _lines(lower_slope: Tensor, upper_slope: Tensor) -> tuple[Tensor, Tensor | None]:
    """``(upper, lower - upper)`` flattened to ``[T, B, N]``; the difference is ``None``
    where it vanishes everywhere (e.g. the paper's reset planes have equal slopes)."""
    up = upper_slope.flatten(2)
    diff = (lower_slope - upper_slope).flatten(2)
    return up, (diff if bool(diff.any()) else None)


def _select(coef: Tensor, pos: Tensor, up: Tensor, diff: Tensor | None) -> Tensor:
    """``coef * line`` with the lower line where ``coef > 0`` (``pos = relu(coef)``)."""
    out = coef * up.unsqueeze(1)
    return out if diff is None else torch.addcmul(out, pos, diff.unsqueeze(1))


def _bias(coef: Tensor, pos: Tensor, up: Tensor, diff: Tensor | None) -> Tensor:
    out = _dot(coef, up)
    return out if diff is None else out + _dot(pos, diff)


def _per_neuron(value: Tensor, like: Tensor) -> Tensor:
    """A neuron parameter broadcast to ``[N]`` (or kept scalar)."""
    return value if value.numel() == 1 else value.expand(like.shape[2:]).flatten()


def _stage_backward(
    stage, membrane, stability, A: Tensor, adaptive: bool, weights: Relaxation | None = None,
    charge_err: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Coefficients ``[T, B, S, N]`` on a stage's spikes -> on its spatial input ``sp``
    (times ``scale``), and the bias ``[B, S]`` collected on the way. ``charge_err``
    (``[T, B, N...]``) bounds the rounding of each float membrane against the exact charge
    ``scale * sp + carry`` of the exact spatial layers, and is paid for in the bias
    (``c . m_float >= c . m_exact - |c| . err``; without gradient: the term is ~1e-6 of
    the bound and its gradient is noise)."""
    lif = stage.lif
    ml, mu = membrane
    T, B, S = A.shape[:3]
    w = weights if weights is not None else Relaxation()
    fire = fire_relaxation(ml, mu, stability, w.fire_lower, w.fire_upper)
    f_d, f_dd = _lines(fire.dl, fire.du)
    f_b, f_db = _lines(fire.bl, fire.bu)
    alpha = _per_neuron(lif.alpha, ml)
    scale = _per_neuron(lif.input_scale, ml)
    if lif.reset == "zero":
        r = reset_relaxation(ml, mu, stability, adaptive, w.reset_lower, w.reset_upper)
        # alpha >= 0 commutes with the sign test, so fold it into the planes
        r_a, r_da = _lines(alpha * r.al.flatten(2), alpha * r.au.flatten(2))
        r_b, r_db = _lines(alpha * r.bl.flatten(2), alpha * r.bu.flatten(2))
        r_c, r_dc = _lines(alpha * r.cl.flatten(2), alpha * r.cu.flatten(2))
    else:
        drop = -(_per_neuron(lif.kappa, ml) * _per_neuron(lif.threshold, ml))

    # a constant scale of 1 (snnTorch, the paper) needs no product; one host sync per stage
    unit_scale = scale.numel() == 1 and not scale.requires_grad and float(scale) == 1.0

    def at(x: Tensor | None, t: int) -> Tensor | None:
        return None if x is None else x[t]

    bias = A.new_zeros(B, S)
    lam_sp: list[Tensor] = [None] * T  # type: ignore[list-item]
    carry_m = carry_s = None
    for t in reversed(range(T)):
        lam_s = A[t] if carry_s is None else A[t] + carry_s
        pos = lam_s.clamp(min=0) if (f_dd is not None or f_db is not None) else None
        lam_m = _select(lam_s, pos, f_d[t], at(f_dd, t))
        bias = bias + _bias(lam_s, pos, f_b[t], at(f_db, t))
        if carry_m is not None:
            lam_m = lam_m + carry_m
        if charge_err is not None:
            bias = bias - _dot(lam_m.detach().abs(), charge_err[t].flatten(1))
        lam_sp[t] = lam_m if unit_scale else lam_m * scale
        if t == 0:
            break
        if lif.reset == "zero":  # carry = alpha z_{t-1}, z relaxed by planes in (m, s)
            needs_pos = any(d is not None for d in (r_da, r_db, r_dc))
            pos_m = lam_m.clamp(min=0) if needs_pos else None
            carry_m = _select(lam_m, pos_m, r_a[t - 1], at(r_da, t - 1))
            carry_s = _select(lam_m, pos_m, r_b[t - 1], at(r_db, t - 1))
            bias = bias + _bias(lam_m, pos_m, r_c[t - 1], at(r_dc, t - 1))
        else:  # soft reset: carry = alpha m - kappa th s, exact
            carry_m = lam_m * alpha
            carry_s = lam_m * drop
    return torch.stack(lam_sp), bias


def _concretize_spikes(A: Tensor, spikes: tuple[Tensor, Tensor]) -> Tensor:
    """``min`` of ``sum_t A_t . s_t`` (``A`` ``[T, B, S, N]``) over the spike box
    ``[s^l, s^u]``: ``A . s^l + min(A, 0) . (s^u - s^l)``, ``[B, S]``."""
    sl, su = spikes
    T, B = sl.shape[:2]
    sl, width = sl.reshape(T * B, -1, 1), (su - sl).reshape(T * B, -1, 1)
    flat = A.reshape(T * B, A.shape[2], -1)
    value = torch.bmm(flat, sl) + torch.bmm(flat.clamp(max=0), width)
    return value.reshape(T, B, -1).sum(0)


def s_crown(
    network: SpikingNetwork,
    ibp: IBPResult,
    lower: Tensor,
    upper: Tensor,
    spec: Tensor,
    adaptive: bool = False,
    relaxations: list[Relaxation] | None = None,
    stops: bool = False,
) -> Tensor:
    """Lower bounds ``[B, S]`` of ``spec @ rate`` over the input box ``[lower, upper]``.

    ``adaptive`` selects, per unstable neuron, the tighter pair of reset planes (see
    :func:`~snn_robust.bounds.relaxations.reset_relaxation`); ``False`` is the paper's
    relaxation exactly. ``relaxations`` (one per stage) overrides both choices.

    ``stops=True`` also concretises the linear bound at every hidden spike layer (the
    coefficients reached on ``s[k]``, all steps, minimised over S-IBP's spike box) and
    returns, per row, the maximum of those values and the bound at the input. Every one
    of them is a sound bound (S-IBP's spike box holds every reachable spike train), so
    their maximum is; it costs one product per layer, and it keeps what the last layers'
    relaxations gained when the earlier layers' relaxations would lose it again.

    Floating point: every float membrane differs from the exact expression the backward
    pass substitutes for it (the charge of the exact spatial layers applied to the float
    spikes) by at most its error bound (``ibp.charge_errors``, which carries the spatial
    layers' rounding too), so each substitution pays ``|coefficient| . error`` in the bias.
    """
    T, B = lower.shape[:2]
    S = spec.shape[1]
    n_out = ibp.spikes[-1][0][0, 0].numel()
    A = (spec / T).reshape(B, S, n_out).unsqueeze(0).expand(T, B, S, n_out)
    bias = spec.new_zeros(B, S)
    best: Tensor | None = None
    charge_errs = ibp.charge_errors or [None] * len(network.stages)

    for k in reversed(range(len(network.stages))):
        stage = network.stages[k]
        weights = relaxations[k] if relaxations is not None else None
        A, b = _stage_backward(stage, ibp.membrane[k], ibp.stability[k], A, adaptive, weights, charge_errs[k])
        bias = bias + b
        ops, boxes = stage.ops, ibp.op_inputs[k]
        # the first stage stops at its first non-reshaping layer and concretises there
        first = 0
        if k == 0:
            while first < len(ops) and isinstance(ops[first], BoundFlatten):
                first += 1
        sp_shape = ibp.membrane[k][0].shape[2:]
        flat = A.reshape(T * B, S, *sp_shape)
        for i in reversed(range(first + 1 if k == 0 and first < len(ops) else 0, len(ops))):
            flat, b = ops[i].backward(flat, *boxes[i])
            bias = bias + b.reshape(T, B, S).sum(0)
        if k == 0 and first < len(ops):
            value = ops[first].concretize(flat, *boxes[first]).reshape(T, B, S).sum(0) + bias
            return value if best is None else torch.maximum(best, value)
        A = flat.reshape(T, B, S, -1)
        if stops and k > 0:
            here = _concretize_spikes(A, ibp.spikes[k - 1]) + bias
            best = here if best is None else torch.maximum(best, here)

    mid = ((upper + lower) / 2).reshape(T, B, 1, -1)
    rad = ((upper - lower) / 2).reshape(T, B, 1, -1)
    value = (A * mid).sum(-1) - (A.abs() * rad).sum(-1)
    value = value.sum(0) + bias
    return value if best is None else torch.maximum(best, value)


def s_crown_optimized(
    network: SpikingNetwork,
    ibp: IBPResult,
    lower: Tensor,
    upper: Tensor,
    spec: Tensor,
    iterations: int = 20,
    lr: float = 0.2,
    init: float = 0.0,
) -> Tensor:
    """S-CROWN with optimised relaxations (alpha-CROWN [35] carried to spiking neurons).

    Every unstable neuron's fire lines and reset planes are convex combinations within
    their valid families, so any weights in ``[0, 1]`` give a sound bound. The weights
    (per step, sample and neuron) start at 0 (constant fire bounds: on the output layer
    this is exactly S-IBP's bound) and are optimised by projected Adam to maximise the
    summed lower bound; the bound of the final weights is returned, differentiable with respect
    to the network's parameters (the weights themselves are constants there).
    """
    if not any(bool(st.unstable.any()) for st in ibp.stability):
        # every relaxation is a constant or exact: nothing to optimise
        return s_crown(network, ibp, lower, upper, spec)
    frozen = IBPResult(
        ibp.op_inputs, [(l.detach(), u.detach()) for l, u in ibp.membrane], ibp.stability, ibp.spikes,
        ibp.charge_errors,
    )
    params = []
    for k, stage in enumerate(network.stages):
        shape = ibp.membrane[k][0].shape
        n = 4 if stage.lif.reset == "zero" else 2
        params.append([torch.full(shape, init, dtype=lower.dtype, device=lower.device, requires_grad=True) for _ in range(n)])

    def relaxations(ps) -> list[Relaxation]:
        return [Relaxation(*p) for p in ps]

    flat = [p for ps in params for p in ps]
    opt = torch.optim.Adam(flat, lr=lr)
    with torch.enable_grad():
        for _ in range(iterations):
            opt.zero_grad()
            bound = s_crown(network, frozen, lower.detach(), upper.detach(), spec, relaxations=relaxations(params))
            (-bound.sum()).backward(inputs=flat)
            opt.step()
            with torch.no_grad():
                for p in flat:
                    p.clamp_(0.0, 1.0)
    final = [[p.detach() for p in ps] for ps in params]
    return s_crown(network, ibp, lower, upper, spec, relaxations=relaxations(final))
