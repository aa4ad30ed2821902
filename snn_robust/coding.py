"""Input coding: the one home of how data become a network's time-major input.

Shape glossary: ``T`` steps, ``B`` batch, ``X...`` one sample's shape.

A coding is a frozen object with ``encode(x, generator) -> [T, B, X...]`` (the clean input
of a forward pass) and ``first_layer``, what the network's first layer takes
(``SpikingNetwork.input_coding``: ``"spike"`` for binary spikes, ``"direct"`` for analog
current):

* :class:`RateCoding` ``(steps)``: images ``[B, X...]`` in ``[0, 1]``, Bernoulli rate coded,
  ``x_t = [x > rand_t]`` (Eq. 4, 13); random, so ``generator`` matters;
* :class:`SpikeFrames` ``(steps=None)``: binary spike frames, already time-major
  ``[T, B, X...]`` (e.g. N-MNIST), the first ``steps`` frames (all with ``None``);
* :class:`DirectCoding` ``(steps)``: analog images ``[B, X...]`` fed as current at every step.

Datasets and ``DataLoader`` batches hold spike frames *sample-major* ``[B, T, X...]``;
:meth:`Coding.batch` turns a data batch into what ``encode``, the perturbation sets and the
attacks take (:func:`time_major` for spike frames, nothing for images), so the transpose is
written once. Public entry points that took the older names (``"rate"``, ``"spike"``,
``"direct"``) convert them once with :func:`as_coding`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal

import torch
from torch import Tensor

from .validation import check_finite, check_positive_int

if TYPE_CHECKING:
    from .network import SpikingNetwork

__all__ = [
    "Coding",
    "RateCoding",
    "SpikeFrames",
    "DirectCoding",
    "CODING_NAMES",
    "as_coding",
    "image_coding",
    "bernoulli_encode",
    "time_major",
]

FirstLayer = Literal["spike", "direct"]


def time_major(x: Tensor) -> Tensor:
    """Sample-major spike frames ``[B, T, X...]`` -> time-major ``[T, B, X...]`` (a view; the
    same transpose maps time-major back to sample-major)."""
    if not isinstance(x, Tensor) or x.dim() < 3:
        got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"spike data must be sample-major [N, T, X...], got a batch of shape {got}")
    return x.transpose(0, 1)


def bernoulli_encode(x: Tensor, steps: int, generator: torch.Generator | None = None) -> Tensor:
    """Rate coding (Eq. 4, 13): ``x_t = [x > rand_t]`` for ``x`` in ``[0, 1]``, ``[B, X...] -> [T, B, X...]``."""
    check_positive_int("steps", steps)
    check_finite(x, f"bernoulli_encode: input x {tuple(x.shape)}", "a NaN pixel would silently never spike")
    rand = torch.rand((steps, *x.shape), generator=generator, device=x.device, dtype=x.dtype)
    return (x.unsqueeze(0) > rand).to(x.dtype)


class Coding:
    """Base class of the input codings (frozen dataclasses of their parameters).

    ``name``: the coding's short name (``"rate"``, ``"spike"``, ``"direct"``; evaluation
    records use it); ``first_layer``: what the network's first layer takes; ``random``:
    whether ``encode`` draws from ``generator``; ``steps``: T (``None`` for spike frames
    means every frame of the input)."""

    name: ClassVar[str]
    first_layer: ClassVar[FirstLayer]
    random: ClassVar[bool] = False
    steps: int | None

    def encode(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} does not implement encode()")

    def batch(self, x: Tensor) -> Tensor:
        """A data batch as datasets hold it -> what :meth:`encode` takes (images unchanged)."""
        return x

    def check_network(self, net: "SpikingNetwork") -> None:
        """``ValueError`` unless ``net``'s first layer takes this coding's input."""
        got = getattr(net, "input_coding", None)
        if got != self.first_layer:
            raise ValueError(f"coding {self.name!r} needs a network with input_coding={self.first_layer!r}, got {got!r}")


def _steps(obj: Coding) -> None:
    object.__setattr__(obj, "steps", check_positive_int(f"{type(obj).__name__}: steps", obj.steps))


@dataclass(frozen=True)
class RateCoding(Coding):
    """Bernoulli rate coding with ``steps`` steps (Eq. 4, 13): ``[B, X...]`` in ``[0, 1]`` ->
    binary ``[T, B, X...]``, fresh draws from ``generator`` on every call."""

    steps: int = 10
    name: ClassVar[str] = "rate"
    first_layer: ClassVar[FirstLayer] = "spike"
    random: ClassVar[bool] = True

    def __post_init__(self) -> None:
        _steps(self)

    def encode(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return bernoulli_encode(x, self.steps, generator)  # type: ignore[arg-type]


@dataclass(frozen=True)
class SpikeFrames(Coding):
    """Binary spike frames fed as they are: time-major ``[T, B, X...]`` -> its first ``steps``
    frames (``None``: all of them). Data batches are sample-major; :meth:`batch` transposes."""

    steps: int | None = None
    name: ClassVar[str] = "spike"
    first_layer: ClassVar[FirstLayer] = "spike"

    def __post_init__(self) -> None:
        if self.steps is not None:
            _steps(self)

    def encode(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if self.steps is None:
            return x
        if self.steps > x.shape[0]:
            raise ValueError(f"SpikeFrames: steps={self.steps} exceeds the input's {x.shape[0]} frames")
        return x[: self.steps]

    def batch(self, x: Tensor) -> Tensor:
        return time_major(x)


@dataclass(frozen=True)
class DirectCoding(Coding):
    """Direct (analog) coding: the input ``[B, X...]`` as current at each of ``steps`` steps
    (a view, ``[T, B, X...]``)."""

    steps: int = 10
    name: ClassVar[str] = "direct"
    first_layer: ClassVar[FirstLayer] = "direct"

    def __post_init__(self) -> None:
        _steps(self)

    def encode(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return x.unsqueeze(0).expand(self.steps, *x.shape)  # type: ignore[arg-type]


_BY_NAME: dict[str, type[Coding]] = {c.name: c for c in (RateCoding, SpikeFrames, DirectCoding)}
#: The names :func:`as_coding` accepts.
CODING_NAMES = tuple(_BY_NAME)


def as_coding(coding: Coding | str, steps: int = 10) -> Coding:
    """A coding object from a :class:`Coding` (returned as is) or one of the names
    :data:`CODING_NAMES` (``"rate"`` / ``"direct"`` with ``steps`` steps, ``"spike"``: every
    frame of the input)."""
    if isinstance(coding, Coding):
        return coding
    cls = _BY_NAME.get(coding) if isinstance(coding, str) else None
    if cls is None:
        raise ValueError(f"coding must be one of {CODING_NAMES} or an snn_robust.coding.Coding, got {coding!r}")
    return cls() if cls is SpikeFrames else cls(steps)


def image_coding(net: "SpikingNetwork", steps: int) -> Coding:
    """How images reach ``net``: :class:`DirectCoding` for a direct-coded first layer,
    else :class:`RateCoding` (Bernoulli samples of the image)."""
    return DirectCoding(steps) if net.input_coding == "direct" else RateCoding(steps)
