"""Input perturbation sets (Section 3.2, Algorithm 1).

Shape glossary: ``T`` steps, ``B`` batch, ``X...`` one sample's shape.

Each set turns a clean input into input bounds ``(lower, upper)`` of shape
``[T, B, X...]`` for :func:`~snn_robust.compute_bounds`, and knows its input coding
(``coding(steps)``, an :mod:`snn_robust.coding` object) and the clean encoding of the same
input (``encode``), so a certificate and a forward pass see the same coding.
``bernoulli_encode`` is re-exported from :mod:`snn_robust.coding`, its home.

What a certificate covers (the paper says so in Section 3.2): for ``DigitalLinf`` and
``SpikeL0`` it holds for the *sampled* random map / picks only: every input that the
sampled bounds contain is covered, not the whole ball. ``DirectLinf`` bounds the whole
l_inf ball of an analog input.

Checks: ``eps`` must be a finite number in ``[0, 1]`` (``[0, high - low]`` for
``DirectLinf``; strings such as ``'0.1'`` and ``True`` are refused at construction), and
inputs must be finite floating tensors: a NaN pixel would compare false everywhere and
pass a range test, so it is refused with a ``ValueError`` naming the input.

Radius convention: ``eps`` is the l_inf *radius*, ``x^u = x + eps``, ``x^l = x - eps``,
as in the authors' code (the paper's text writes ``eps/2``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from .coding import Coding, DirectCoding, RateCoding, SpikeFrames, bernoulli_encode
from .validation import check_finite, check_number, check_positive_int

__all__ = ["Perturbation", "DigitalLinf", "SpikeL0", "DirectLinf", "bernoulli_encode"]


def _set_eps(obj: "Perturbation", high: float = 1.0) -> None:
    """Check ``obj.eps`` (a finite number in ``[0, high]``; ``'0.1'``, ``True`` and NaN are
    refused) and store it as a ``float`` in the frozen dataclass."""
    eps = check_number(f"{type(obj).__name__}: eps", obj.eps, 0.0, high)
    object.__setattr__(obj, "eps", eps)


def _check_tensor(x: Tensor, who: str, layout: str, min_dim: int) -> None:
    """``x`` is a finite floating tensor with at least ``min_dim`` dimensions."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{who} expects a tensor {layout}, got {type(x).__name__}")
    if x.dim() < min_dim:
        raise ValueError(f"{who} expects {layout}, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{who} expects a floating-point tensor {layout}, got {x.dtype}; convert with x.float()")
    check_finite(x, f"{who}: input x {tuple(x.shape)}", "clean the data (NaN pixels cannot be certified)")


def _uniform(shape, like: Tensor, generator: torch.Generator | None) -> Tensor:
    return torch.rand(shape, generator=generator, device=like.device, dtype=like.dtype)


class Perturbation:
    """Base class of the input perturbation sets.

    ``coding_type`` is the input coding (:mod:`snn_robust.coding`) the set perturbs;
    :meth:`coding` gives it with ``steps`` steps and :meth:`encode` the clean input of a
    forward pass through it. ``sampled``: whether the bounds depend on the generator."""

    coding_type: ClassVar[type[Coding]] = RateCoding
    #: whether :meth:`bounds` draws from its generator (sampled maps / picks)
    sampled: ClassVar[bool] = True
    eps: float

    @property
    def input_coding(self) -> str:
        """What the network's first layer takes (``SpikingNetwork.input_coding``)."""
        return self.coding_type.first_layer

    def coding(self, steps: int) -> Coding:
        """This set's input coding with ``steps`` steps (``T``)."""
        return self.coding_type(check_positive_int("steps", steps))

    def _check(self, x: Tensor) -> None:
        """Refuse an input this set cannot take (``ValueError`` / ``TypeError`` naming it)."""

    def bounds(self, x: Tensor, steps: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def encode(self, x: Tensor, steps: int, generator: torch.Generator | None = None) -> Tensor:
        """The clean input ``[T, B, X...]`` whose certificate :meth:`bounds` gives."""
        self._check(x)
        return self.coding(steps).encode(x, generator)

    def with_eps(self, eps: float) -> "Perturbation":
        """The same set at another radius (used by eps schedules)."""
        return type(self)(**{**self.__dict__, "eps": eps})


@dataclass(frozen=True)
class DigitalLinf(Perturbation):
    """l_inf ball of radius ``eps`` around a digital image in ``[0, 1]``, rate coded.

    One random map ``rand_t`` per step is shared by both bounds (Algorithm 1):
    ``x^u_t = [x + eps > rand_t]``, ``x^l_t = [x - eps > rand_t]``. Any image ``x'`` with
    ``|x' - x| <= eps`` coded with the same maps gives spikes between the two.
    Input ``x``: ``[B, X...]`` in ``[0, 1]``.

    Example: ``lower, upper = DigitalLinf(0.1).bounds(images, steps=3)``
    """

    eps: float
    coding_type: ClassVar[type[Coding]] = RateCoding

    def __post_init__(self) -> None:
        _set_eps(self)

    def _check(self, x: Tensor) -> None:
        _check_tensor(x, "DigitalLinf", "images [B, X...]", 2)
        if x.numel() and (x.min() < 0 or x.max() > 1):
            raise ValueError(f"DigitalLinf expects images in [0, 1], got range [{x.min():g}, {x.max():g}]")

    def bounds(self, x: Tensor, steps: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        self._check(x)
        check_positive_int("steps", steps)
        rand = _uniform((steps, *x.shape), x, generator)
        upper = ((x + self.eps).unsqueeze(0) > rand).to(x.dtype)
        lower = ((x - self.eps).unsqueeze(0) > rand).to(x.dtype)
        return lower, upper


@dataclass(frozen=True)
class SpikeL0(Perturbation):
    """l_0 picks on a binary spike input (Eq. 12, Algorithm 1).

    In each of the first ``steps`` frames of ``x`` (``[T, B, X...]``, binary),
    ``round(eps * size(x_t))`` elements per sample are picked uniformly at random and
    made unstable (``x^u = 1``, ``x^l = 0``); the rest keep their value.
    """

    eps: float
    coding_type: ClassVar[type[Coding]] = SpikeFrames

    def __post_init__(self) -> None:
        _set_eps(self)

    def _frames(self, x: Tensor, steps: int) -> Tensor:
        check_positive_int("steps", steps)
        _check_tensor(x, "SpikeL0", "a spike input [T, B, X...]", 3)
        if steps > x.shape[0]:
            raise ValueError(f"SpikeL0: steps={steps} exceeds the input's {x.shape[0]} frames")
        if not ((x == 0) | (x == 1)).all():
            raise ValueError(f"SpikeL0 expects a binary (0/1) spike input x, got values in [{x.min():g}, {x.max():g}]")
        return x[:steps]

    def picks(self, x: Tensor, steps: int, generator: torch.Generator | None = None) -> Tensor:
        """Boolean mask ``[steps, B, X...]`` of the picked (unstable) elements."""
        frames = self._frames(x, steps)
        T, B = frames.shape[:2]
        size = math.prod(frames.shape[2:])
        k = int(round(self.eps * size))
        scores = _uniform((T, B, size), frames, generator)
        mask = torch.zeros(T, B, size, dtype=torch.bool, device=x.device)
        if k:
            mask.scatter_(2, scores.topk(k, dim=2).indices, True)
        return mask.reshape(frames.shape)

    def bounds(self, x: Tensor, steps: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        frames = self._frames(x, steps)
        mask = self.picks(x, steps, generator)
        return frames.masked_fill(mask, 0.0), frames.masked_fill(mask, 1.0)

    def encode(self, x: Tensor, steps: int, generator: torch.Generator | None = None) -> Tensor:
        return self.coding(steps).encode(self._frames(x, steps), generator)


@dataclass(frozen=True)
class DirectLinf(Perturbation):
    """l_inf ball of radius ``eps`` around an analog input fed directly as current at
    every step ("direct" coding), clipped to ``[low, high]``. Input ``x``: ``[B, X...]``.
    The bounds cover the whole ball (no sampling involved)."""

    eps: float
    low: float = 0.0
    high: float = 1.0
    coding_type: ClassVar[type[Coding]] = DirectCoding
    sampled: ClassVar[bool] = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "low", check_number("DirectLinf: low", self.low))
        object.__setattr__(self, "high", check_number("DirectLinf: high", self.high))
        if not self.low < self.high:
            raise ValueError(f"DirectLinf: need low < high, got {self.low} and {self.high}")
        _set_eps(self, self.high - self.low)

    def _check(self, x: Tensor) -> None:
        _check_tensor(x, "DirectLinf", "analog inputs [B, X...]", 2)

    def bounds(self, x: Tensor, steps: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        check_positive_int("steps", steps)
        self._check(x)
        lower = (x - self.eps).clamp(self.low, self.high)
        upper = (x + self.eps).clamp(self.low, self.high)
        return lower.unsqueeze(0).expand(steps, *x.shape), upper.unsqueeze(0).expand(steps, *x.shape)
