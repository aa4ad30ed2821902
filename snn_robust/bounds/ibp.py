"""S-IBP: forward interval propagation through a spiking network (Algorithm 1).

Shape glossary: ``T`` steps, ``B`` batch, ``M = T * B`` folded, ``N...`` a layer's
neuron shape.

Per stage (the spatial layers in front of one LIF layer, then that layer):

* spatial update, Eq. 11: the interval of ``sp_t`` from the input spikes' interval,
  all steps at once (the layers are stateless, so time folds into the batch), each
  layer's interval widened by its own floating-point error bound;
* charge: ``m_t in scale * [sp^l_t, sp^u_t] + [c^l_{t-1}, c^u_{t-1}]``, widened by the
  charge's error bound, so that ``[m^l_t, m^u_t]`` holds every float membrane that any
  forward pass (ours, snnTorch's, SpikingJelly's) computes for an input in the box
  (:mod:`~snn_robust.bounds.rounding`);
* fire, Eq. 7: ``s^l_t = [m^l_t > th]``, ``s^u_t = [m^u_t >= th]`` (through the
  surrogate, so the bounds are differentiable for training): exact for ``>`` and ``>=``
  firing, since the interval already contains every float membrane;
* reset, Eq. 9 (hard) or the exact soft-reset range: the carry interval.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..network import SpikingNetwork
from ..neuron import spike
from .relaxations import Stability, reset_interval, soft_reset_interval, stability
from .rounding import charge_error, point_outputs_exact, unit_roundoff

__all__ = ["IBPResult", "s_ibp"]


@dataclass
class IBPResult:
    """Everything S-CROWN needs from the forward pass, per stage."""

    op_inputs: list[list[tuple[Tensor, Tensor]]] = field(default_factory=list)  # [M, X...] per op
    membrane: list[tuple[Tensor, Tensor]] = field(default_factory=list)  # [T, B, N...]
    stability: list[Stability] = field(default_factory=list)  # over [T, B, N...]
    spikes: list[tuple[Tensor, Tensor]] = field(default_factory=list)  # [T, B, N...]
    # floating-point error bounds (no gradient), per stage: how far each float membrane can lie from
    # the exact charge of the exact spatial layers applied to the float inputs [T, B, N...]
    charge_errors: list[Tensor] = field(default_factory=list)

    def rates(self) -> tuple[Tensor, Tensor]:
        """Bounds ``[B, C]`` on the output rates (mean output spikes over the steps)."""
        sl, su = self.spikes[-1]
        return sl.mean(0).flatten(1), su.mean(0).flatten(1)


def s_ibp(network: SpikingNetwork, lower: Tensor, upper: Tensor) -> IBPResult:
    """Propagate the input interval ``[lower, upper]`` (``[T, B, ...]``) forward."""
    result = IBPResult()
    l, u = lower, upper
    for stage in network.stages:
        T, B = l.shape[:2]
        fl, fu = l.reshape(T * B, *l.shape[2:]), u.reshape(T * B, *u.shape[2:])
        inputs = []
        sp_err = None  # the stage's carried spatial rounding error, for S-CROWN
        for op in stage.ops:
            inputs.append((fl, fu))
            err = op.rounding_error(fl, fu)
            fl, fu = op.interval(fl, fu)
            if err is not None:
                fl, fu = fl - err, fu + err
            with torch.no_grad():
                if sp_err is not None:
                    sp_err = op.propagate_error(sp_err)
                sp_err = err if sp_err is None else (sp_err if err is None else sp_err + err)
        spl, spu = fl.reshape(T, B, *fl.shape[1:]), fu.reshape(T, B, *fu.shape[1:])

        lif = stage.lif
        alpha, th, scale = lif.alpha, lif.threshold, lif.input_scale
        kappa = lif.kappa
        u = unit_roundoff(spl.dtype, spl.device)
        with torch.no_grad():
            sp_abs = torch.maximum(spl.abs(), spu.abs())
            a_d, s_d = alpha.detach(), scale.detach()
            soft_v = (th.detach() if lif.reset == "subtract" else 0.0)
        cl = cu = torch.zeros_like(spl[0])
        v_abs = torch.zeros_like(sp_abs[0])
        m_prev = s_prev = torch.zeros_like(spl[0])
        exact_points = point_outputs_exact()
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
                m_point = lif.charge(m_prev, s_prev, spl[t])
                ml, mu = torch.where(point, m_point, ml), torch.where(point, m_point, mu)
            st = stability(ml, mu, th)
            if lif.reset == "zero":
                zl, zu = reset_interval(ml, mu, st)
                cl, cu = alpha * zl, alpha * zu
            else:
                cl, cu = soft_reset_interval(ml, mu, st, alpha, kappa, th)
            with torch.no_grad():  # |v|, the membrane after this step's reset, for the next charge
                v_abs = torch.maximum(ml.abs(), mu.abs()) + soft_v
            m_prev, s_prev = ml, st.fires.to(ml.dtype)
            mls.append(ml)
            mus.append(mu)
            errs.append(err if sp_err is None else err + s_d * sp_err.reshape(T, B, *sp_err.shape[1:])[t])
        ml, mu = torch.stack(mls), torch.stack(mus)
        st = stability(ml, mu, th)
        # s^u = 0 iff surely silent (mu < th_lo); s^l = 1 iff surely firing (ml > th_hi).
        sl = spike(ml - st.th_hi, ">", lif.surrogate)
        su = spike(mu - st.th_lo, ">=", lif.surrogate)

        result.op_inputs.append(inputs)
        result.membrane.append((ml, mu))
        result.stability.append(st)
        result.spikes.append((sl, su))
        result.charge_errors.append(torch.stack([e.expand_as(ml[0]) for e in errs]))
        l, u = sl, su
    return result
