"""Attacks on spike inputs (binary ``[T, B, X...]``, l_0 budget): the paper's
spike-compatible attack and greedy gradient-guided flips. See :mod:`snn_robust.attacks`."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import Tensor

from ..coding import Coding, SpikeFrames
from ..metrics import is_correct
from ..network import SpikingNetwork
from ..neuron import Rectangular
from ..validation import check_number, check_positive_int
from .common import (
    Attack,
    Callback,
    _count,
    _flat,
    _input_grad,
    _select,
    _spike_start,
    _unflat,
    attack_surrogate,
    spike_compatible_direction,
)

__all__ = ["SpikeCompatibleAttack", "GreedyFlip"]


# -- spike inputs -----------------------------------------------------------------------
class _SpikeAttack(Attack):
    """What the attacks on spike inputs share: the input kind and its coding (the frames as
    they are, time-major)."""

    input_kind: ClassVar[str] = "spike"

    def coding(self, net: SpikingNetwork, steps: int) -> Coding:
        return SpikeFrames()


@dataclass(frozen=True)
class SpikeCompatibleAttack(_SpikeAttack):
    """Spike-compatible gradient attack on a spike input (Liang et al., TNNLS 2021; Eq. 6, spike case).

    Each iteration computes the input gradient through BPTT and the surrogate, turns it into
    a ternary spike-compatible step (:func:`spike_compatible_direction`) and flips the
    sampled elements, largest ``|g|`` first. Where the step proposes no flip at all for a
    sample (gradient zero on the admissible elements, or every sampled direction impossible
    for a spike), ``random_fraction * D`` random admissible elements that still hold their
    clean value are flipped instead (the "restricted spike flipper" for vanishing
    gradients; ``random_fraction=None`` means the per-iteration fraction).

    Budget, per sample, with ``D = T * prod(X)``:

    * total: at most ``floor(eps * D)`` elements differ from the clean input at any time;
    * per iteration: at most ``floor(iter_fraction * D)`` elements change (flips back to the
      clean value count here too, and are always allowed by the total budget).
      ``iter_fraction=None`` means ``eps / 2``, the paper's setting for FC networks; pass
      ``eps / 6`` for CONV networks (Section 4.1);
    * with ``box=(lower, upper)`` only positions with ``lower != upper`` change, so the result
      stays in the box (for a box from :class:`~snn_robust.SpikeL0` that contains ``x``).

    With ``early_stop`` a sample stops changing once the network misclassifies it (the
    network is deterministic on spike inputs, so the success is exact).

    Example: ``SpikeCompatibleAttack(eps=0.02).attack(net, spikes, labels, gen)``
    """

    eps: float
    n_iter: int = 20
    iter_fraction: float | None = None
    random_fraction: float | None = None
    early_stop: bool = True
    loss: Literal["ce", "margin"] = "ce"
    surrogate: Rectangular | None = None

    def __post_init__(self) -> None:
        self._check_common()
        for field in ("iter_fraction", "random_fraction"):
            if getattr(self, field) is not None:
                check_number(f"{type(self).__name__}: {field}", getattr(self, field), 0.0, 1.0)

    @property
    def step_fraction(self) -> float:
        """The per-iteration fraction in effect (``eps / 2`` unless given)."""
        return self.eps / 2 if self.iter_fraction is None else self.iter_fraction

    def budgets(self, size: int) -> tuple[int, int, int]:
        """``(total, per_iteration, random)`` element counts for a sample of ``size`` elements."""
        total = _count(self.eps, size)
        per_iter = _count(self.step_fraction, size)
        rand_frac = self.step_fraction if self.random_fraction is None else self.random_fraction
        return total, per_iter, min(per_iter, _count(rand_frac, size))

    def attack(self, net: SpikingNetwork, x: Tensor, y: Tensor, generator: torch.Generator | None = None, *,
               callback: Callback | None = None, box: tuple[Tensor, Tensor] | None = None) -> Tensor:
        name = type(self).__name__
        admissible, x0 = _spike_start(x, y, box, name)
        xf = x0.clone()
        B, D = xf.shape
        k_total, k_iter, k_rand = self.budgets(D)
        done = torch.zeros(B, dtype=torch.bool, device=x.device)
        with attack_surrogate(net, self.surrogate):
            for i in range(self.n_iter):
                rates, grad = _input_grad(net, _unflat(xf, x), y, self.loss)
                if self.early_stop:
                    done |= ~is_correct(rates, y)
                free = admissible & ~done[:, None]
                g = _flat(grad)
                direction = spike_compatible_direction(xf, g, generator, free)
                cand = direction != 0
                fresh = xf == x0
                remaining = k_total - (~fresh).sum(1)
                flips = _select(cand, g.abs(), fresh, k_iter, remaining)
                stuck = ~done & ~cand.any(1)
                if k_rand and stuck.any():
                    scores = torch.rand(xf.shape, generator=generator, device=xf.device, dtype=xf.dtype)
                    flips |= _select(free & fresh & stuck[:, None], scores, fresh, k_rand, remaining)
                xf = torch.where(flips, 1 - xf, xf)
                if callback is not None:
                    callback(i, _unflat(xf, x))
        return _unflat(xf, x)


@dataclass(frozen=True)
class GreedyFlip(_SpikeAttack):
    """Greedy gradient-guided flip attack on a spike input (a stronger reference for spikes).

    Each iteration recomputes the input gradient ``g`` and scores every admissible element
    by the first-order loss gain of flipping it, ``g_i * (1 - 2 s_i)`` (raising a 0, lowering
    a 1); the ``flips_per_iter`` highest positive gains are flipped. Flips are never undone,
    so after at most ``ceil(total / flips_per_iter)`` iterations the budget is spent. Where no
    element has a positive gain, ``random_fallback`` flips random admissible elements instead.

    The attack is run once per entry of ``surrogates`` (the gradient surrogate used while
    attacking; ``None``: the model's own), each run from the clean input; a sample keeps the
    first run's result that the network misclassifies (an exact check), else the last run's.
    The default pairs the model's surrogate with a wide rectangle, since the narrow training
    window often gives no gradient at all on a trained network.

    Budget, per sample, with ``D = T * prod(X)``, for every run and so for the result:

    * total: at most ``floor(eps * D)`` elements differ from the clean input;
    * per iteration: at most ``flips_per_iter`` elements change (``None``: the total spread
      evenly over ``n_iter`` iterations, ``ceil(total / n_iter)``);
    * with ``box=(lower, upper)`` only positions with ``lower != upper`` change.

    With ``early_stop`` a sample stops once misclassified. ``callback(i, x_i)`` sees every
    run's iterates; ``i`` restarts from 0 (and ``x`` from the clean input) with each run.

    Example: ``GreedyFlip(eps=0.02).attack(net, spikes, labels, gen)``
    """

    eps: float
    n_iter: int = 10
    flips_per_iter: int | None = None
    random_fallback: bool = True
    early_stop: bool = True
    loss: Literal["ce", "margin"] = "ce"
    surrogates: tuple[Rectangular | None, ...] = (None, Rectangular(half_width=2.0))

    def __post_init__(self) -> None:
        self._check_common()
        name = type(self).__name__
        if self.flips_per_iter is not None:
            check_positive_int(f"{name}: flips_per_iter", self.flips_per_iter)
        if not isinstance(self.surrogates, tuple) or not self.surrogates:
            raise ValueError(f"{name}: surrogates must be a non-empty tuple (None for the model's own), "
                             f"got {self.surrogates!r}")

    def budgets(self, size: int) -> tuple[int, int]:
        """``(total, per_iteration)`` element counts for a sample of ``size`` elements."""
        total = _count(self.eps, size)
        per_iter = self.flips_per_iter if self.flips_per_iter is not None else max(1, math.ceil(total / self.n_iter))
        return total, min(per_iter, total)

    def attack(self, net: SpikingNetwork, x: Tensor, y: Tensor, generator: torch.Generator | None = None, *,
               callback: Callback | None = None, box: tuple[Tensor, Tensor] | None = None) -> Tensor:
        name = type(self).__name__
        admissible, x0 = _spike_start(x, y, box, name)
        best = x0.clone()
        broken = torch.zeros(x0.shape[0], dtype=torch.bool, device=x.device)
        if self.budgets(x0.shape[1])[0] == 0:
            return x.clone()
        for surrogate in self.surrogates:
            with attack_surrogate(net, surrogate):
                out = self._run(net, x, x0, y, generator, admissible, callback)
            with torch.no_grad():
                success = ~is_correct(net(_unflat(out, x)), y)
            best = torch.where(broken[:, None], best, out)
            broken |= success
            if bool(broken.all()):
                break
        return _unflat(best, x)

    def _run(self, net, like, x0, y, generator, admissible, callback) -> Tensor:
        xf = x0.clone()
        B, D = xf.shape
        k_total, k_iter = self.budgets(D)
        done = torch.zeros(B, dtype=torch.bool, device=xf.device)
        for i in range(self.n_iter):
            rates, grad = _input_grad(net, _unflat(xf, like), y, self.loss)
            if self.early_stop:
                done |= ~is_correct(rates, y)
            fresh = xf == x0
            free = admissible & fresh & ~done[:, None]
            remaining = k_total - (~fresh).sum(1)
            gain = _flat(grad) * (1 - 2 * xf)
            cand = free & (gain > 0)
            flips = _select(cand, gain, fresh, k_iter, remaining)
            stuck = ~done & ~cand.any(1)
            if self.random_fallback and stuck.any():
                scores = torch.rand(xf.shape, generator=generator, device=xf.device, dtype=xf.dtype)
                flips |= _select(free & stuck[:, None], scores, fresh, k_iter, remaining)
            xf = torch.where(flips, 1 - xf, xf)
            if callback is not None:
                callback(i, _unflat(xf, like))
            if bool(((remaining - flips.sum(1)) <= 0).logical_or(done).all()):
                break
        return xf
