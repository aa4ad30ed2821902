"""Margin bounds over every event recording within ``k`` flipped events of the observed one
(method.md section 4): no sampling at all. See :mod:`snn_robust.certificates`."""
from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..bounds.api import Method, compute_bounds
from ..bounds.graph import bound_graph, bound_view
from ..bounds.rounding import accumulation_error, unit_roundoff
from ..bounds.spatial import BoundAvgPool2d, BoundConv2d, BoundFlatten, BoundLinear, BoundOp
from ..coding import SpikeFrames
from ..errors import UnsupportedLayerError
from ..evaluate import _batches, _device
from ..metrics import ErrorResult, summarize
from ..network import SpikingNetwork
from ..validation import check_int

__all__ = ["event_certified_error", "event_l0_bounds"]


# -- 2. the whole l_0 ball of an event recording ---------------------------------------------
def _sum_k_smallest(gains: Tensor, k: int, dim: int) -> Tensor:
    """Sum of the ``k`` most negative entries along ``dim`` (negative ones only): the
    largest decrease that ``k`` independent flips with these gains can make."""
    k = min(k, gains.shape[dim])
    if k == 0:
        return gains.sum(dim) * 0
    return gains.topk(k, dim, largest=False).values.clamp(max=0).sum(dim)


class _FlipBudgetOp(BoundOp):
    """The first affine layer (Linear, Conv2d, AvgPool2d) of a network, seen over binary
    inputs within ``k`` flips of the observation.

    For ``y = f(x) + b`` with ``f`` linear and a binary ``x``, flipping element ``i``
    changes ``y_j`` by the gain ``g_ji = f_ji (1 - 2 x_i)``, independently of the other
    flips, so over ``|x' - x|_0 <= k``:
    ``min y_j = y_j(x) + (sum of the k most negative g_ji)`` and symmetrically for the
    max: exact. S-IBP uses this per step (``interval``; a budget over the whole recording
    lets one step use all ``k`` flips, so this is sound for both budgets). S-CROWN's final
    linear bound ``sum_t a_t . x'_t + c`` is concretised the same way with the gains of
    ``a`` over the whole recording (``per_step=False``) or per step: exact for the set.

    It is called with ``l == u ==`` the observed frames (``[M, X...]``).
    """

    def __init__(self, op: BoundOp, k: int, steps: int, per_step: bool) -> None:
        super().__init__(op.module, op.name)
        self.op, self.k, self.steps, self.per_step = op, k, steps, per_step
        # one budget over the recording ties the steps together: full S-CROWN must walk its
        # rows over all the recording's steps (bounds/intermediate.py)
        self.couples_steps = not per_step

    def _gains(self, x: Tensor) -> tuple[Tensor, tuple[int, ...]]:
        """Flip gains of every output, ``[M, N, G(, L)]`` with the candidates along dim 2,
        and the output shape; ``G`` covers each output's receptive field."""
        sign = 1 - 2 * x  # +1: adding an event, -1: removing one
        mod = self.module
        if isinstance(self.op, BoundLinear):
            return sign.unsqueeze(1) * mod.weight.unsqueeze(0), (mod.out_features,)
        M, C, H, W = x.shape
        if isinstance(self.op, BoundConv2d):
            # zero padding unfolds to sign 0: positions outside the frame cannot be flipped
            cols = F.unfold(sign, mod.kernel_size, mod.dilation, mod.padding, mod.stride)  # [M, C*kh*kw, L]
            g = mod.weight.flatten(1)[None, :, :, None] * cols.unsqueeze(1)  # [M, O, C*kh*kw, L]
            out_ch = mod.out_channels
        else:
            op = self.op
            cols = F.unfold(sign, op.kernel, 1, op.pad, op.stride)
            g = cols.reshape(M, C, -1, cols.shape[-1]) / (op.kernel[0] * op.kernel[1])
            out_ch = C
        out_hw = mod(x[:1]).shape[-2:]
        return g, (out_ch, *out_hw)

    def interval(self, l: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
        value = self.module(l)
        if self.k == 0:
            return value, value
        # chunks of rows bound the gain tensor's memory (about 2^24 elements)
        rows = max(1, (1 << 24) // max(1, self._gains(l[:1])[0].numel()))
        down, up = [], []
        for x in l.split(rows):
            g, shape = self._gains(x)
            down.append(_sum_k_smallest(g, self.k, 2).reshape(x.shape[0], *shape))
            up.append((-_sum_k_smallest(-g, self.k, 2)).reshape(x.shape[0], *shape))
        return value + torch.cat(down), value + torch.cat(up)

    def _largest_weights(self) -> Tensor:
        """Per output, an upper bound on the sum of the ``k`` largest ``|W_ji|`` of its
        window (``[N]`` or ``[O, 1, 1]``): the most that ``k`` flips can add to ``|W| . x``."""
        mod, k = self.module, self.k
        if isinstance(self.op, BoundAvgPool2d):
            size = self.op.kernel[0] * self.op.kernel[1]
            return torch.tensor(min(k, size) / size)
        w = mod.weight.detach().abs().flatten(1)
        top = -_sum_k_smallest(-w, k, 1)
        return top if isinstance(self.op, BoundLinear) else top.reshape(-1, 1, 1)

    def rounding_error(self, l: Tensor, u: Tensor) -> Tensor:
        """Floating point (:mod:`~snn_robust.bounds.rounding`). A recording ``x'`` within
        the budget has at most ``nnz(x) + k`` nonzero inputs, of magnitude at most
        ``mag = |W| . x + (k largest |W_ji|) + |b|``. Any forward pass on ``x'`` errs by at
        most ``gamma_{nnz+k+1} mag``; :meth:`interval` (the float value at ``x`` plus a float
        sum of ``k`` gains) by at most ``gamma_{nnz+k+2} mag``. Both together are under
        ``accumulation_error(mag, nnz + k) = 2 gamma_{nnz+k+4} mag``. The inputs are not
        fixed, so this is never 0, unlike a point input's error."""
        mod = self.module
        with torch.no_grad():
            magnitude = self.op.abs_linear(l) + self._largest_weights().to(l.dtype)
            magnitude = magnitude + self.op.abs_bias(magnitude)  # |b| per output; 0 for a pool
            if isinstance(self.op, BoundAvgPool2d):
                fan_in = self.op.kernel[0] * self.op.kernel[1]
            else:
                fan_in = mod.weight[0].numel()
            nnz = (l != 0).flatten(1).sum(1).reshape(-1, *([1] * (magnitude.dim() - 1)))
            terms = (nnz + self.k).clamp(max=fan_in).to(l.dtype)
            return accumulation_error(magnitude, terms, unit_roundoff(l.dtype, l.device, self.op.rounding_op))

    def backward(self, A: Tensor, l: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
        return self.op.backward(A, l, u)

    def concretize(self, A: Tensor, l: Tensor, u: Tensor) -> Tensor:
        A_in, bias = self.op.backward(A, l, u)  # [M, S, X...], [M, S]
        M, S = A_in.shape[:2]
        A_in = A_in.reshape(M, S, -1)
        x = l.reshape(M, 1, -1)
        value = torch.bmm(A_in, l.reshape(M, -1, 1)).squeeze(-1) + bias
        gains = A_in * (1 - 2 * x)
        if self.per_step:
            return value + _sum_k_smallest(gains, self.k, 2)
        # one budget over the recording: the flip term couples the steps; it goes on the
        # first step's rows, the caller sums the rows over the steps
        T, B = self.steps, M // self.steps
        whole = gains.reshape(T, B, S, -1).permute(1, 2, 0, 3).reshape(B, S, -1)
        flip = _sum_k_smallest(whole, self.k, 2)
        return torch.cat([value[:B] + flip, value[B:]])


def _flip_budget_view(network: SpikingNetwork, k: int, steps: int, per_step: bool) -> SpikingNetwork:
    """The network (sharing every module) with its first affine layer seen over the flip
    budget; the bound engine then propagates from there unchanged."""
    graph = bound_graph(network)
    stage = graph[0]
    first = 0
    while first < len(stage.ops) and isinstance(stage.ops[first], BoundFlatten):
        first += 1
    if first == len(stage.ops):
        raise UnsupportedLayerError(
            f"event_l0_bounds needs a Linear, Conv2d or AvgPool2d layer in front of the first LIF layer "
            f"({stage.name}); the network feeds the events to it directly"
        )
    op = stage.ops[first]
    if not isinstance(op, (BoundLinear, BoundConv2d, BoundAvgPool2d)):
        raise UnsupportedLayerError(
            f"event_l0_bounds: the first spatial layer {op.name} ({type(op.module).__name__}) is not supported there; "
            "it bounds a Linear, Conv2d or AvgPool2d reading the events exactly (put one first), or certify sampled "
            "picks with SpikeL0"
        )
    if isinstance(op, BoundConv2d) and op.module.groups != 1:
        raise UnsupportedLayerError(f"event_l0_bounds: layer {op.name} (Conv2d) has groups={op.module.groups}; only groups=1")
    ops = list(stage.ops)
    ops[first] = _FlipBudgetOp(op, k, steps, per_step)
    return bound_view(network, [dataclasses.replace(stage, ops=ops), *graph[1:]])  # shares the modules


def event_l0_bounds(
    network: SpikingNetwork,
    events: Tensor,
    k: int,
    labels: Tensor | None = None,
    method: Method = "crown-ibp",
    *,
    per_step: bool = False,
    steps: int | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    """Certified bounds over every event recording within ``k`` flips of ``events``.

    The set: binary recordings ``x'`` (``[T', B, X...]``) with at most ``k`` elements
    different from the observed ``x`` (events added or removed) in the whole recording
    (``per_step=False``) or in each step's frame (``per_step=True``). Unlike
    :class:`~snn_robust.SpikeL0`, nothing is sampled: the bound holds for every such
    recording. The first affine layer is bounded exactly over the set (see
    :class:`_FlipBudgetOp`), the rest by the engine of :func:`~snn_robust.compute_bounds`.

    Args:
        network: the :class:`SpikingNetwork` (spike input) whose first spatial layer after
            any Flatten is a Linear, Conv2d or AvgPool2d.
        events: binary ``[T, B, X...]``; the first ``steps`` frames (default: all) are used.
        k: the flip budget, an integer ``>= 0``.
        labels, method: as for :func:`~snn_robust.compute_bounds`, and so is the result
            (margin lower bounds ``[B, C-1]`` with labels, else rate bounds ``(lb, ub)``).

    Example: ``margins = event_l0_bounds(net, frames, k=3, labels=y)``; verified where
    ``(margins > 0).all(1)``.
    """
    if not isinstance(network, SpikingNetwork):
        raise TypeError(f"event_l0_bounds needs a SpikingNetwork, got {type(network).__name__}")
    if network.input_coding != "spike":
        raise ValueError("event_l0_bounds needs a spike-input network (input_coding='spike')")
    k = check_int("k (the flip budget)", k, 0)
    if not isinstance(events, Tensor) or events.dim() < 3 or not events.is_floating_point():
        raise ValueError(
            f"events must be a floating-point tensor [T, B, X...], got {getattr(events, 'shape', type(events))}"
        )
    if not ((events == 0) | (events == 1)).all():
        raise ValueError("events must be binary (0/1)")
    events = SpikeFrames(steps).encode(events)  # the first ``steps`` frames, checked
    view = _flip_budget_view(network, k, events.shape[0], per_step)
    return compute_bounds(view, events, events, labels=labels, method=method)


def event_certified_error(
    network: SpikingNetwork,
    data: Any,
    k: int,
    *,
    per_step: bool = False,
    steps: int | None = None,
    method: Method = "crown-ibp",
    batch_size: int = 32,
    max_samples: int | None = None,
) -> ErrorResult:
    """Verified error over the whole l_0 ball: share of samples for which some recording
    within ``k`` flips (of the whole recording, or of each step's frame with ``per_step``)
    may be misclassified according to :func:`event_l0_bounds`. ``data``: sample-major
    binary frames ``[N, T, X...]`` and labels ``[N]`` (or batches). Deterministic: no
    seeds."""
    device = _device(network)
    unverified, n = 0, 0
    for x, y in _batches(data, batch_size, max_samples, device, SpikeFrames()):
        with torch.no_grad():
            margins = event_l0_bounds(network, x, k, y, method, per_step=per_step, steps=steps)
        unverified += int((~(margins > 0).all(1)).sum())
        n += y.shape[0]
    details = {"perturbation": "event l_0", "k": k, "per_step": per_step, "steps": steps, "method": method}
    return summarize([unverified / max(n, 1)], [], n, details)
