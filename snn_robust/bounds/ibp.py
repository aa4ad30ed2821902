"""S-IBP: forward interval propagation through a spiking network (Algorithm 1).

Shape glossary: ``T`` steps, ``B`` batch, ``M = T * B`` folded, ``N...`` a layer's
neuron shape.

Per stage (the spatial layers in front of one LIF layer, then that layer):

* spatial update, Eq. 11: the interval of ``sp_t`` from the input spikes' interval,
  all steps at once (the layers are stateless, so time folds into the batch), each
  layer's interval widened by its own floating-point error bound;
* the LIF layer (charge, fire, reset over the steps, each membrane interval widened by
  its own error bound): :meth:`BoundLIF.interval <snn_robust.bounds.lif.BoundLIF.interval>`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..network import SpikingNetwork
from .graph import bound_graph
from .relaxations import Stability
from .spatial import BoundLinear

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
    # the centre module(mid) of the first stage's input layer when it is a BoundLinear (S-CROWN's
    # concretisation there reuses it); None: computed again where needed
    input_centre: Tensor | None = None

    def rates(self) -> tuple[Tensor, Tensor]:
        """Bounds ``[B, C]`` on the output rates (mean output spikes over the steps)."""
        sl, su = self.spikes[-1]
        return sl.mean(0).flatten(1), su.mean(0).flatten(1)


def s_ibp(
    network: SpikingNetwork, lower: Tensor, upper: Tensor, clips: dict[int, tuple[Tensor, Tensor]] | None = None
) -> IBPResult:
    """Propagate the input interval ``[lower, upper]`` (``[T, B, ...]``) forward.
    ``clips[k]``: sound bounds on stage ``k``'s membranes (``[T, B, N...]`` each, full
    S-CROWN's) that its intervals are intersected with, step by step."""
    result = IBPResult()
    l, u = lower, upper
    for k, stage in enumerate(bound_graph(network)):
        T, B = l.shape[:2]
        fl, fu = l.reshape(T * B, *l.shape[2:]), u.reshape(T * B, *u.shape[2:])
        inputs = []
        sp_err = None  # the stage's carried spatial rounding error, for S-CROWN
        first = stage.input_op() if k == 0 else -1
        for i, op in enumerate(stage.ops):
            inputs.append((fl, fu))
            err = op.rounding_error(fl, fu)
            if i == first and isinstance(op, BoundLinear):
                fl, fu, result.input_centre = op.interval_and_centre(fl, fu)
            else:
                fl, fu = op.interval(fl, fu)
            if err is not None:
                fl, fu = fl - err, fu + err
            with torch.no_grad():
                if sp_err is not None:
                    sp_err = op.propagate_error(sp_err)
                sp_err = err if sp_err is None else (sp_err if err is None else sp_err + err)
        spl, spu = fl.reshape(T, B, *fl.shape[1:]), fu.reshape(T, B, *fu.shape[1:])
        out = stage.neuron.interval(spl, spu, sp_err, None if clips is None else clips.get(k))

        result.op_inputs.append(inputs)
        result.membrane.append(out.membrane)
        result.stability.append(out.stability)
        result.spikes.append(out.spikes)
        result.charge_errors.append(out.charge_errors)
        l, u = out.spikes
    return result
