"""Shared pieces of the attacks: the :class:`Attack` interface, the loss, input gradients
through BPTT, surrogate swapping, budget bookkeeping on flattened spike trains and the
spike-compatible direction. See :mod:`snn_robust.attacks` for the shapes and budgets."""
from __future__ import annotations

import contextlib
import dataclasses
import math
from typing import Callable, ClassVar, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

from ..coding import Coding
from ..metrics import label_and_runner_up
from ..network import SpikingNetwork
from ..neuron import LIF
from ..validation import check_number, check_positive_int

__all__ = ["Attack", "Callback", "LOSSES", "attack_surrogate", "spike_compatible_direction"]

Callback = Callable[[int, Tensor], None]
LOSSES = ("ce", "margin")


# -- shared pieces ----------------------------------------------------------------------
def _loss(rates: Tensor, labels: Tensor, kind: str) -> Tensor:
    """Summed (not averaged) over the batch, so a sample's gradient ignores the batch size."""
    if kind == "ce":
        return F.cross_entropy(rates, labels, reduction="sum")
    ry, runner_up = label_and_runner_up(rates, labels)
    return (runner_up - ry).sum()


@contextlib.contextmanager
def attack_surrogate(net: SpikingNetwork, surrogate: Callable[[Tensor, bool], Tensor] | None) -> Iterator[None]:
    """Temporarily give every LIF layer of ``net`` the surrogate ``surrogate`` (restored on
    exit, also on error; ``None`` changes nothing). Spikes are unchanged: a surrogate only
    shapes gradients. Not thread-safe: the network is shared state while inside."""
    if surrogate is None:
        yield
        return
    lifs = [m for m in net.modules() if isinstance(m, LIF)]
    saved = [lif.surrogate for lif in lifs]
    try:
        for lif in lifs:
            lif.surrogate = surrogate
        yield
    finally:
        for lif, old in zip(lifs, saved):
            lif.surrogate = old


def _input_grad(net: SpikingNetwork, spikes: Tensor, labels: Tensor, loss: str) -> tuple[Tensor, Tensor]:
    """Output rates ``[B, C]`` and the loss gradient w.r.t. every input element ``[T, B, X...]``."""
    s = spikes.detach().requires_grad_(True)
    with torch.enable_grad():
        rates = net(s)
        (grad,) = torch.autograd.grad(_loss(rates, labels, loss), s)
    return rates.detach(), grad


def _flat(x: Tensor) -> Tensor:
    """``[T, B, X...] -> [B, D]`` (sample-major, one row per sample)."""
    return x.transpose(0, 1).reshape(x.shape[1], -1)


def _unflat(f: Tensor, like: Tensor) -> Tensor:
    """Inverse of :func:`_flat` for a tensor shaped like ``like``."""
    return f.reshape(like.shape[1], like.shape[0], *like.shape[2:]).transpose(0, 1).contiguous()


def _count(fraction: float, size: int) -> int:
    """``floor(fraction * size)``, robust to float round-off (0.3 * 10 is 2.9999...)."""
    return int(math.floor(fraction * size + 1e-9))


def _check_labels(labels: Tensor, batch: int, cls: str) -> None:
    if not isinstance(labels, Tensor) or labels.dtype not in (torch.int64, torch.int32) or labels.shape != (batch,):
        got = f"{labels.dtype} {tuple(labels.shape)}" if isinstance(labels, Tensor) else type(labels).__name__
        raise ValueError(f"{cls}: labels must be an integer tensor of shape [{batch}], got {got}")


def _check_spikes(x: Tensor, labels: Tensor, cls: str) -> None:
    if not isinstance(x, Tensor) or x.dim() < 3:
        got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{cls} attacks a spike input, time-major [T, B, X...]; got {got}")
    if not x.is_floating_point() or not ((x == 0) | (x == 1)).all():
        raise ValueError(f"{cls} expects a binary (0/1) floating-point spike input")
    _check_labels(labels, x.shape[1], cls)


def _check_images(x: Tensor, labels: Tensor, cls: str) -> None:
    if not isinstance(x, Tensor) or x.dim() < 2 or not x.is_floating_point():
        got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{cls} attacks a digital input, a float image batch [B, X...]; got {got}")
    if x.min() < 0 or x.max() > 1:
        raise ValueError(f"{cls} expects images in [0, 1], got range [{x.min():g}, {x.max():g}]")
    _check_labels(labels, x.shape[0], cls)


def _spike_start(x: Tensor, labels: Tensor, box: tuple[Tensor, Tensor] | None, cls: str) -> tuple[Tensor, Tensor]:
    """Check a spike attack's input, labels and box; return the admissible positions and the
    clean input, both ``[B, D]``."""
    _check_spikes(x, labels, cls)
    return _check_box(box, x, cls), _flat(x)


def _check_box(box: tuple[Tensor, Tensor] | None, x: Tensor, cls: str) -> Tensor:
    """Admissible positions ``[B, D]``: where the box leaves the element free."""
    if box is None:
        return torch.ones(x.shape[1], x[:, 0].numel(), dtype=torch.bool, device=x.device)
    lower, upper = box
    if lower.shape != x.shape or upper.shape != x.shape:
        raise ValueError(
            f"{cls}: box bounds must have the input's shape {tuple(x.shape)}, got {tuple(lower.shape)} and "
            f"{tuple(upper.shape)}; build them with as many steps as the input has frames"
        )
    if ((x < lower) | (x > upper)).any():
        raise ValueError(f"{cls}: the clean input lies outside the box [lower, upper]")
    return _flat(lower != upper)


def _select(cand: Tensor, score: Tensor, increases: Tensor, limit: int, remaining: Tensor) -> Tensor:
    """Flips to apply, ``[B, D]`` bool: candidates in decreasing ``score`` order, at most
    ``limit`` per sample, of which at most ``remaining`` (per sample) move the input away
    from the clean one (``increases``); flips back to the clean value are always allowed."""
    score = torch.where(cand, score, torch.full_like(score, float("-inf")))
    order = score.argsort(dim=1, descending=True, stable=True)
    c = cand.gather(1, order)
    inc = increases.gather(1, order) & c
    ok = c & (~inc | (inc.cumsum(1) <= remaining[:, None]))
    ok &= ok.cumsum(1) <= limit
    out = torch.zeros_like(cand)
    return out.scatter_(1, order, ok)


def spike_compatible_direction(spikes: Tensor, grad: Tensor, generator: torch.Generator | None = None,
                               admissible: Tensor | None = None) -> Tensor:
    """The spike-compatible ternary step of Liang et al. (TNNLS 2021), ``[B, D] -> [B, D]``.

    For each sample, element ``i`` is sampled with probability ``|g_i| / max_j |g_j|`` (the
    maximum over the sample's admissible elements, so the strongest element is always
    sampled); a sampled element gives ``sign(g_i)``, which is kept only where a spike can
    move that way: ``+1`` (0 -> 1) where ``s_i = 0`` and ``g_i > 0``, ``-1`` (1 -> 0) where
    ``s_i = 1`` and ``g_i < 0``. Everything else is 0. A sample whose gradient vanishes on
    its admissible elements gets an all-zero row.
    """
    if admissible is not None:
        grad = grad * admissible
    mag = grad.abs()
    peak = mag.amax(1, keepdim=True)
    prob = torch.where(peak > 0, mag / peak.clamp_min(torch.finfo(mag.dtype).tiny), torch.zeros_like(mag))
    rand = torch.rand(prob.shape, generator=generator, device=prob.device, dtype=prob.dtype)
    sampled = rand < prob
    up = sampled & (grad > 0) & (spikes == 0)
    down = sampled & (grad < 0) & (spikes == 1)
    return up.to(spikes.dtype) - down.to(spikes.dtype)


class Attack:
    """The shared interface: ``attack(net, x, y, generator=None, *, callback=None) -> x_adv``.

    ``input_kind`` says what ``x`` is: ``"spike"`` (binary ``[T, B, X...]``) or ``"digital"``
    (images ``[B, X...]`` in ``[0, 1]``, rate coded inside the attack); :meth:`coding` is how
    such an input, clean or adversarial, reaches the network when it is scored."""

    input_kind: ClassVar[str]
    eps: float

    def coding(self, net: SpikingNetwork, steps: int) -> Coding:
        """The input coding under which this attack's inputs reach ``net`` (``steps``: T of
        an image coding)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement coding()")

    def attack(self, net: SpikingNetwork, x: Tensor, y: Tensor, generator: torch.Generator | None = None, *,
               callback: Callback | None = None) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} does not implement attack()")

    def __call__(self, net: SpikingNetwork, x: Tensor, y: Tensor, generator: torch.Generator | None = None,
                 **kwargs) -> Tensor:
        return self.attack(net, x, y, generator, **kwargs)

    def with_eps(self, eps: float) -> "Attack":
        """The same attack at another budget (parameters derived from ``eps`` follow it)."""
        return dataclasses.replace(self, eps=eps)

    def config(self) -> dict:
        """The attack's name and parameters, JSON-serialisable."""
        return {"name": type(self).__name__, **dataclasses.asdict(self)}

    def _check_common(self) -> None:
        name = type(self).__name__
        check_number(f"{name}: eps", self.eps, 0.0, 1.0)
        check_positive_int(f"{name}: n_iter", self.n_iter)
        if self.loss not in LOSSES:
            raise ValueError(f"{name}: loss must be one of {LOSSES}, got {self.loss!r}")
