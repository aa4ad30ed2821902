"""Certificates beyond the sampled ones of Section 3.2 (method.md section 4).

Shape glossary: ``T`` steps, ``B`` batch, ``C`` classes, ``S`` specification rows,
``M = T * B`` folded, ``X...`` one sample's input shape, ``D`` its size, ``N`` the
outputs of the first spatial layer.

The paper's certificate holds for *one draw* of the input randomness: the sampled
Bernoulli maps of :class:`~snn_robust.DigitalLinf`, the sampled picks of
:class:`~snn_robust.SpikeL0`. Two stronger, sound statements:

* :func:`certify_over_codings`: a lower confidence bound on the probability, over the
  random coding maps, that the whole l_inf ball is certified under the map drawn
  (Clopper-Pearson over ``n`` independent maps);
* :func:`event_l0_bounds`: margin bounds over *every* event recording within ``k``
  flipped events (added or removed) of the observed one, anywhere in the recording or
  per time step: no sampling at all.
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .bounds.api import Method, compute_bounds
from .bounds.rounding import accumulation_error, unit_roundoff
from .bounds.spatial import BoundAvgPool2d, BoundConv2d, BoundFlatten, BoundLinear, BoundOp
from .errors import UnsupportedLayerError
from .coding import SpikeFrames
from .evaluate import _batches, _device, _generators
from .metrics import ErrorResult, summarize
from .network import SpikingNetwork
from .perturbations import DigitalLinf

__all__ = [
    "CodingCertificate",
    "certify_over_codings",
    "clopper_pearson_lower",
    "coding_certificate_summary",
    "event_l0_bounds",
    "event_certified_error",
]


# -- 1. over the coding randomness ------------------------------------------------------------
def _binomial_upper_tail(successes: Tensor, trials: int, p: Tensor) -> Tensor:
    """``P[Bin(trials, p) >= successes]`` elementwise (float64), by summing the pmf in log space."""
    j = torch.arange(trials + 1, dtype=torch.float64, device=p.device)
    log_choose = torch.lgamma(torch.tensor(trials + 1.0, dtype=torch.float64)) - torch.lgamma(j + 1) - torch.lgamma(trials - j + 1)
    pc = p.clamp(1e-300, 1 - 1e-16).unsqueeze(-1)
    log_pmf = log_choose + j * torch.log(pc) + (trials - j) * torch.log1p(-pc)
    log_pmf = log_pmf.masked_fill(j < successes.unsqueeze(-1), float("-inf"))
    return log_pmf.logsumexp(-1).exp()


def clopper_pearson_lower(successes: Tensor, trials: int, confidence: float) -> Tensor:
    """One-sided Clopper-Pearson lower confidence bound on a binomial probability.

    For ``K`` successes in ``n`` trials the bound is the ``1 - confidence`` quantile of
    ``Beta(K, n - K + 1)`` (0 for ``K = 0``): the ``p_L`` with
    ``P[Bin(n, p_L) >= K] = 1 - confidence``. Then ``P[p_L <= p] >= confidence`` for every
    true ``p``. Computed by 64 bisection steps on the exact binomial tail in float64; the
    lower end of the final bracket is returned, so the rounding errs on the safe side.

    Example: ``clopper_pearson_lower(torch.tensor([20]), 20, 0.95)`` is ``0.05 ** (1/20)``.
    """
    if not isinstance(trials, int) or trials < 1:
        raise ValueError(f"trials must be a positive integer, got {trials!r}")
    if not 0.0 < float(confidence) < 1.0:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence!r}")
    k = torch.as_tensor(successes).to(torch.float64)
    if ((k < 0) | (k > trials) | (k != k.round())).any():
        raise ValueError(f"successes must be integers in [0, {trials}]")
    alpha = 1.0 - float(confidence)
    lo, hi = torch.zeros_like(k), torch.ones_like(k)
    for _ in range(64):
        mid = (lo + hi) / 2
        below = _binomial_upper_tail(k, trials, mid) <= alpha  # the tail grows with p
        lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
    return torch.where(k > 0, lo, torch.zeros_like(lo))


@dataclass
class CodingCertificate:
    """Per sample: ``certified[b]`` of ``n_maps`` independent coding maps certified the
    whole ball, and ``lower[b]``, the Clopper-Pearson bound: with probability at least
    ``confidence`` (over the maps drawn here), the probability over coding maps that the
    ball is certified is at least ``lower[b]``. The confidence holds per sample, not
    simultaneously for the batch."""

    certified: Tensor  # [B] int64
    lower: Tensor  # [B] float64
    n_maps: int
    confidence: float
    details: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"certified": self.certified.tolist(), "lower": self.lower.tolist(), "n_maps": self.n_maps,
                "confidence": self.confidence, "details": self.details}


def certify_over_codings(
    network: SpikingNetwork,
    images: Tensor,
    labels: Tensor,
    perturbation: DigitalLinf,
    n_maps: int,
    confidence: float = 0.99,
    *,
    steps: int = 10,
    method: Method = "crown-ibp",
    generator: torch.Generator | None = None,
    max_rows: int = 512,
) -> CodingCertificate:
    """Certificate over the random coding maps of a rate-coded input.

    Under one coding map ``r`` (uniform, ``[T', X...]``), every image ``x'`` with
    ``|x' - x|_inf <= eps`` is coded between ``[x - eps > r]`` and ``[x + eps > r]``
    (Algorithm 1). Let ``p(x)`` be the probability over ``r`` that ``method`` certifies the
    label for these bounds (every margin lower bound ``> 0``). Then, for every image ``x'``
    in the ball, even one chosen after seeing the map, the network classifies the coding
    of ``x'`` under ``r`` correctly with probability at least ``p(x)`` over ``r``. This
    draws ``n_maps`` independent maps per sample, counts the certified ones, ``K ~
    Bin(n_maps, p(x))``, and returns the one-sided Clopper-Pearson lower bound on ``p(x)``
    at ``confidence`` (:func:`clopper_pearson_lower`).

    Args:
        network: the :class:`SpikingNetwork` (spike input).
        images: ``[B, X...]`` in ``[0, 1]``; labels: ``LongTensor[B]``.
        perturbation: a :class:`~snn_robust.DigitalLinf` (its ``eps`` is the radius).
        n_maps: maps drawn per sample; confidence: in ``(0, 1)``.
        steps: the bounds' time steps ``T'``; method: any of :data:`~snn_robust.METHODS`.
        generator: for the maps (reproducible certificates); max_rows: samples times maps
            bounded in one call (memory).

    Example: ``cert = certify_over_codings(net, x, y, DigitalLinf(0.05), 100, 0.99)``.
    """
    if not isinstance(perturbation, DigitalLinf):
        raise TypeError(
            f"certify_over_codings needs a DigitalLinf perturbation (random coding maps), got "
            f"{type(perturbation).__name__}; DirectLinf bounds are deterministic (use compute_bounds), and for "
            "event inputs use event_l0_bounds (the whole l_0 ball)"
        )
    if not isinstance(n_maps, int) or n_maps < 1:
        raise ValueError(f"n_maps must be a positive integer, got {n_maps!r}")
    if not isinstance(max_rows, int) or max_rows < 1:
        raise ValueError(f"max_rows must be a positive integer, got {max_rows!r}")
    if not isinstance(labels, Tensor) or labels.shape != images.shape[:1]:
        raise ValueError(f"labels must be a tensor of shape [{images.shape[0]}], got {getattr(labels, 'shape', labels)}")
    clopper_pearson_lower(torch.zeros(1), n_maps, confidence)  # validates confidence before the costly part
    B = images.shape[0]
    per_call = max(1, max_rows // max(B, 1))
    counts = torch.zeros(B, dtype=torch.int64)
    done = 0
    while done < n_maps:
        m = min(per_call, n_maps - done)
        # map-major rows: row j * B + b is sample b under its j-th map; drawn map by map, so
        # the maps do not depend on how many are bounded per call
        boxes = [perturbation.bounds(images, steps, generator) for _ in range(m)]
        lower, upper = torch.cat([b[0] for b in boxes], 1), torch.cat([b[1] for b in boxes], 1)
        with torch.no_grad():
            margins = compute_bounds(network, lower, upper, labels=labels.repeat(m), method=method)
        counts += (margins > 0).all(1).reshape(m, B).sum(0).cpu()
        done += m
    details = {"perturbation": type(perturbation).__name__, "eps": float(perturbation.eps), "steps": steps,
               "method": method}
    return CodingCertificate(counts, clopper_pearson_lower(counts, n_maps, confidence), n_maps, float(confidence), details)


def coding_certificate_summary(
    network: SpikingNetwork,
    data: Any,
    perturbation: DigitalLinf,
    n_maps: int,
    confidence: float = 0.99,
    *,
    steps: int = 10,
    method: Method = "crown-ibp",
    seed: int = 0,
    batch_size: int = 32,
    max_samples: int | None = None,
) -> dict[str, Any]:
    """:func:`certify_over_codings` over a data set (``(images [N, X...], labels [N])`` or
    batches), summarised: ``certified_share``, the mean over samples of ``K / n_maps`` (an
    unbiased estimate of one minus the sampled certified error of Section 3.2);
    ``mean_lower``, the mean of the per-sample lower bounds; ``share_above_half``, the
    share of samples whose lower bound exceeds 1/2 (certified under most maps, at the
    confidence); and the per-sample ``certified`` counts and ``lower`` bounds."""
    device = _device(network)
    gen = _generators(seed, device, 4)[3]
    counts, lowers = [], []
    for x, y in _batches(data, batch_size, max_samples, device):
        cert = certify_over_codings(network, x, y, perturbation, n_maps, confidence, steps=steps, method=method,
                                    generator=gen)
        counts.append(cert.certified)
        lowers.append(cert.lower)
    k, low = torch.cat(counts), torch.cat(lowers)
    return {"perturbation": type(perturbation).__name__, "eps": float(perturbation.eps), "steps": steps, "method": method,
            "n_maps": n_maps, "confidence": float(confidence), "num_samples": int(k.numel()),
            "certified_share": float(k.double().mean() / n_maps), "mean_lower": float(low.mean()),
            "share_above_half": float((low > 0.5).double().mean()), "certified": k.tolist(), "lower": low.tolist()}


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
            return accumulation_error(magnitude, terms, unit_roundoff(l.dtype, l.device))

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
    stage = network.stages[0]
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
    view = copy.copy(network)  # shallow: shares the modules and parameters
    view.stages = [dataclasses.replace(stage, ops=ops), *network.stages[1:]]
    return view


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
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise ValueError(f"k (the flip budget) must be an integer >= 0, got {k!r}")
    if not isinstance(events, Tensor) or events.dim() < 3 or not events.is_floating_point():
        raise ValueError(
            f"events must be a floating-point tensor [T, B, X...], got {getattr(events, 'shape', type(events))}"
        )
    if not ((events == 0) | (events == 1)).all():
        raise ValueError("events must be binary (0/1)")
    if steps is not None:
        if not isinstance(steps, int) or not 1 <= steps <= events.shape[0]:
            raise ValueError(f"steps must be an integer in [1, {events.shape[0]}], got {steps!r}")
        events = events[:steps]
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
