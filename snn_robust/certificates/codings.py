"""The certificate over the coding randomness of a rate-coded input (method.md section 4):
a Clopper-Pearson lower bound on the probability, over the random coding maps, that the
whole l_inf ball is certified under the map drawn. See :mod:`snn_robust.certificates`."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..bounds.api import Method, compute_bounds
from ..evaluate import _batches, _device, _generators
from ..network import SpikingNetwork
from ..perturbations import DigitalLinf
from ..validation import check_positive_int

__all__ = ["CodingCertificate", "certify_over_codings", "clopper_pearson_lower", "coding_certificate_summary"]


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
    trials = check_positive_int("trials", trials)
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
    details: dict[str, Any] = field(default_factory=dict)

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
    n_maps = check_positive_int("n_maps", n_maps)
    max_rows = check_positive_int("max_rows", max_rows)
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
