"""S-CROWN: the backward linear bound of a specification (Algorithm 2).

Shape glossary: ``T`` steps, ``B`` batch, ``S`` specification rows, ``N`` a layer's
neurons (flattened), ``M = T * B``.

For a specification ``C`` (``[B, S, classes]``) the bound is on ``C . rate`` with
``rate = (1/T) sum_t s_t[K]``. Starting from the coefficients ``C / T`` on every output
spike, each stage is walked backward in time:

* the LIF layer (fire, Eq. 8; reset, Eq. 10 or exact for a soft reset; the input scale),
  all steps backward: :meth:`BoundLIF.backward <snn_robust.bounds.lif.BoundLIF.backward>`;
* spatial: the coefficient on ``sp`` goes back through the spatial layers (exact
  transposes, all steps at once) onto the previous layer's spikes.

At the input the linear bound is concretised over the box,
``sum_t A_t . mid_t - |A_t| . rad_t + bias``. The intermediate membrane intervals come
from S-IBP (CROWN-IBP).

Cost notes (method.md section 8; the LIF layer's are in :mod:`~snn_robust.bounds.lif`).
At the input, the first spatial layer is never transposed in full: ``A . mid`` is the coefficient on that
layer's output times the centre S-IBP already computed, and ``|A| . rad`` is needed only
where ``rad != 0`` (the unstable input elements, a small share for sampled bounds).
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..network import SpikingNetwork
from .graph import bound_graph
from .ibp import IBPResult
from .lif import Relaxation

__all__ = ["Relaxation", "s_crown", "s_crown_optimized"]


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
    start: tuple[int, Tensor] | None = None,
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

    ``start = (k, A_m)`` (``spec`` unused): bound ``sum_t A_m[t] . m_t[k]`` instead, the
    membranes of stage ``k`` (``A_m`` ``[T, B, S, N]``; full S-CROWN's intermediate bounds,
    :mod:`~snn_robust.bounds.intermediate`).
    """
    T, B = lower.shape[:2]
    graph = bound_graph(network)
    if start is None:
        top, A_m = len(graph), None
        S = spec.shape[1]
        n_out = ibp.spikes[-1][0][0, 0].numel()
        A = (spec / T).reshape(B, S, n_out).unsqueeze(0).expand(T, B, S, n_out)
    else:
        top, A_m = start[0] + 1, start[1]
        S = A_m.shape[2]
        A = torch.zeros_like(A_m)
    bias = A.new_zeros(B, S)
    best: Tensor | None = None
    charge_errs = ibp.charge_errors or [None] * len(graph)

    for k in reversed(range(top)):
        stage = graph[k]
        weights = relaxations[k] if relaxations is not None else None
        A, b = stage.neuron.backward(
            A, ibp.membrane[k], ibp.stability[k], adaptive, weights, charge_errs[k], A_m if k == top - 1 else None
        )
        bias = bias + b
        ops, boxes = stage.ops, ibp.op_inputs[k]
        # the first stage stops at its first non-reshaping layer and concretises there
        first = stage.input_op() if k == 0 else 0
        sp_shape = ibp.membrane[k][0].shape[2:]
        flat = A.reshape(T * B, S, *sp_shape)
        for i in reversed(range(first + 1 if k == 0 and first < len(ops) else 0, len(ops))):
            flat, b = ops[i].backward(flat, *boxes[i])
            bias = bias + b.reshape(T, B, S).sum(0)
        if k == 0 and first < len(ops):
            centre = ibp.input_centre  # S-IBP's centre of this layer (a Linear's), not computed again
            op = ops[first]
            value = op.concretize(flat, *boxes[first]) if centre is None else op.concretize(flat, *boxes[first], centre)
            value = value.reshape(T, B, S).sum(0) + bias
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
        ibp.charge_errors, None if ibp.input_centre is None else ibp.input_centre.detach(),
    )
    params = []
    for k, stage in enumerate(bound_graph(network)):
        shape = ibp.membrane[k][0].shape
        params.append([
            torch.full(shape, init, dtype=lower.dtype, device=lower.device, requires_grad=True)
            for _ in range(stage.neuron.relaxation_weights)
        ])

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
