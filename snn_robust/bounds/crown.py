"""S-CROWN: the backward linear bound of a specification (Algorithm 2).

Shape glossary: ``T`` steps, ``B`` batch, ``S`` specification rows, ``N...`` a layer's
neuron shape, ``M = T * B``.

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

At the input the linear bound is concretised over the box
``sum_t A_t . mid_t - |A_t| . rad_t + bias``. The intermediate membrane intervals come
from S-IBP (CROWN-IBP).
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..network import SpikingNetwork
from .ibp import IBPResult
from .relaxations import fire_relaxation, reset_relaxation

__all__ = ["s_crown"]


def _sum_neurons(x: Tensor) -> Tensor:
    """``[B, S, N...] -> [B, S]``."""
    return x.flatten(2).sum(-1)


def s_crown(
    network: SpikingNetwork,
    ibp: IBPResult,
    lower: Tensor,
    upper: Tensor,
    spec: Tensor,
    adaptive: bool = False,
) -> Tensor:
    """Lower bounds ``[B, S]`` of ``spec @ rate`` over the input box ``[lower, upper]``.

    ``adaptive`` selects, per unstable neuron, the tighter pair of reset planes (see
    :func:`~snn_robust.bounds.relaxations.reset_relaxation`); ``False`` is the paper's
    relaxation exactly.
    """
    T, B = lower.shape[:2]
    S = spec.shape[1]
    out_shape = ibp.spikes[-1][0].shape[2:]
    A = (spec / T).reshape(B, S, *out_shape).unsqueeze(0).expand(T, B, S, *out_shape)
    bias = spec.new_zeros(B, S)

    for k in reversed(range(len(network.stages))):
        stage = network.stages[k]
        lif = stage.lif
        ml, mu = ibp.membrane[k]
        st = ibp.stability[k]
        fire = fire_relaxation(ml, mu, st)
        reset = reset_relaxation(ml, mu, st, adaptive) if lif.reset == "zero" else None
        alpha, th, scale, kappa = lif.alpha, lif.threshold, lif.input_scale, lif.kappa

        lam_sp: list[Tensor] = [None] * T  # type: ignore[list-item]
        carry_m = carry_s = None
        for t in reversed(range(T)):
            lam_s = A[t] if carry_s is None else A[t] + carry_s
            pos, neg = lam_s.clamp(min=0), lam_s.clamp(max=0)
            lam_m = pos * fire.dl[t].unsqueeze(1) + neg * fire.du[t].unsqueeze(1)
            bias = bias + _sum_neurons(pos * fire.bl[t].unsqueeze(1) + neg * fire.bu[t].unsqueeze(1))
            if carry_m is not None:
                lam_m = lam_m + carry_m
            lam_sp[t] = lam_m * scale
            if t == 0:
                break
            if reset is None:  # soft reset: c = alpha m - kappa th s, exact
                carry_m = alpha * lam_m
                carry_s = -(kappa * th) * lam_m
            else:  # hard reset: c = alpha z, z relaxed by planes in (m, s)
                g = alpha * lam_m
                gp, gn = g.clamp(min=0), g.clamp(max=0)
                r = [x[t - 1].unsqueeze(1) for x in reset]
                al, bl, cl, au, bu, cu = r
                carry_m = gp * al + gn * au
                carry_s = gp * bl + gn * bu
                bias = bias + _sum_neurons(gp * cl + gn * cu)

        A = torch.stack(lam_sp)  # [T, B, S, N...]
        flat = A.reshape(T * B, S, *A.shape[3:])
        for op, (il, iu) in zip(reversed(stage.ops), reversed(ibp.op_inputs[k])):
            flat, b = op.backward(flat, il, iu)
            bias = bias + b.reshape(T, B, S).sum(0)
        A = flat.reshape(T, B, S, *flat.shape[2:])

    mid = ((upper + lower) / 2).unsqueeze(2)
    rad = ((upper - lower) / 2).unsqueeze(2)
    value = (A * mid).flatten(3).sum(-1) - (A.abs() * rad).flatten(3).sum(-1)
    return value.sum(0) + bias
