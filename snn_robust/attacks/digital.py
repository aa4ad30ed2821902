"""Attacks on rate-coded (or direct-coded) images (``[B, X...]`` in ``[0, 1]``, l_inf
budget): the paper's spike-compatible digital attack and EOT-PGD. See :mod:`snn_robust.attacks`."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import Tensor

from ..coding import Coding, bernoulli_encode, image_coding
from ..network import SpikingNetwork
from ..neuron import Rectangular
from ..validation import check_number, check_positive_int
from .common import (
    Attack,
    Callback,
    _check_images,
    _flat,
    _input_grad,
    _unflat,
    attack_surrogate,
    spike_compatible_direction,
)

__all__ = ["SpikeCompatibleDigitalAttack", "EOTPGD"]


# -- digital (rate-coded) inputs ---------------------------------------------------------
def _project(x: Tensor, x0: Tensor, eps: float) -> Tensor:
    """Clip to the l_inf ball of radius ``eps`` around ``x0`` and to ``[0, 1]``."""
    return torch.minimum(torch.maximum(x, x0 - eps), x0 + eps).clamp(0.0, 1.0)


class _ImageAttack(Attack):
    """What the attacks on images share: their input kind and the checks of ``time_steps``
    and ``step_size`` (``None``: a default derived from the other parameters)."""

    input_kind: ClassVar[str] = "digital"
    time_steps: int
    step_size: float | None

    def coding(self, net: SpikingNetwork, steps: int) -> Coding:
        """The network's image coding (:func:`~snn_robust.coding.image_coding`): Bernoulli
        rate coding, or direct coding for a direct-coded first layer."""
        return image_coding(net, steps)

    def _check_image_attack(self, step_size_may_be_none: bool) -> str:
        """The common checks, then this attack's class name (for the caller's own checks)."""
        self._check_common()
        name = type(self).__name__
        check_positive_int(f"{name}: time_steps", self.time_steps)
        if not (self.step_size is None and step_size_may_be_none):
            check_number(f"{name}: step_size", self.step_size, 0.0, low_open=True)
        return name


@dataclass(frozen=True)
class SpikeCompatibleDigitalAttack(_ImageAttack):
    """Spike-compatible gradient attack on a rate-coded image (Liang et al.; Eq. 6, digital case).

    Each iteration draws a fresh Bernoulli coding ``s = [x_n > rand_t]`` (``time_steps``
    steps, from ``generator``), takes the input gradient w.r.t. every spike, turns it into
    the ternary spike-compatible step ``F[g]`` (:func:`spike_compatible_direction`; a sample
    whose step is empty gets random spike flips at ``random_fraction`` instead) and moves the
    image by its average over time:

    ``x_{n+1} = clip(x_n + step_size * mean_t F[g]_t)``,

    clipped to the l_inf ball of radius ``eps`` around the clean image and to ``[0, 1]``
    after every iteration (Section 4.1). The default ``step_size=1`` is Eq. 6 as written
    (the step is in units of firing probability): ``mean_t F`` is already small, since an
    element moves only at the steps where it was sampled (probability ``|g| / max|g|``) and
    its spike could flip that way, and the clip bounds every step. (On a small trained
    model, 20 iterations at eps 0.1: step 1 broke 13 % of the samples, step ``eps`` 4 %,
    PGD's usual ``2.5 * eps / n_iter`` none.) The last iterate is returned.

    Budget: ``|x_adv - x|_inf <= eps`` and ``x_adv`` in ``[0, 1]``, for every image.

    Example: ``SpikeCompatibleDigitalAttack(eps=0.1).attack(net, images, labels, gen)``
    """

    eps: float
    n_iter: int = 20
    step_size: float = 1.0
    time_steps: int = 10
    random_fraction: float = 0.05
    loss: Literal["ce", "margin"] = "ce"
    surrogate: Rectangular | None = None

    def __post_init__(self) -> None:
        name = self._check_image_attack(step_size_may_be_none=False)
        check_number(f"{name}: random_fraction", self.random_fraction, 0.0, 1.0)

    def attack(self, net: SpikingNetwork, x: Tensor, y: Tensor, generator: torch.Generator | None = None, *,
               callback: Callback | None = None) -> Tensor:
        name = type(self).__name__
        _check_images(x, y, name)
        if net.input_coding != "spike":
            raise ValueError(
                f"{name} needs a spike-input (rate-coded) network, got input_coding={net.input_coding!r}; "
                "use EOTPGD for a direct-coded network"
            )
        x0 = x.detach()
        xn = x0.clone()
        with attack_surrogate(net, self.surrogate):
            for i in range(self.n_iter):
                spikes = bernoulli_encode(xn, self.time_steps, generator)
                _, grad = _input_grad(net, spikes, y, self.loss)
                sf, g = _flat(spikes), _flat(grad)
                direction = spike_compatible_direction(sf, g, generator)
                stuck = ~(direction != 0).any(1)
                if stuck.any():
                    rand = torch.rand(sf.shape, generator=generator, device=sf.device, dtype=sf.dtype)
                    random_dir = (rand < self.random_fraction).to(sf.dtype) * (1 - 2 * sf)
                    direction = torch.where(stuck[:, None], random_dir, direction)
                xn = _project(xn + self.step_size * _unflat(direction, spikes).mean(0), x0, self.eps)
                if callback is not None:
                    callback(i, xn)
        return xn


@dataclass(frozen=True)
class EOTPGD(_ImageAttack):
    """PGD with expectation over Bernoulli codings (EOT-PGD), l_inf, on a rate-coded image.

    A stronger reference attack for honest evaluation of rate-coded models. From a random
    start ``x + U(-eps, eps)`` (when ``random_start``), each of ``n_iter`` iterations takes

    ``x_{n+1} = clip(x_n + step_size * sign(ghat))``,   ``step_size=None`` means ``2.5 * eps / n_iter``,

    clipped to the l_inf ball of radius ``eps`` and to ``[0, 1]``. The gradient estimate
    ``ghat`` is the *rate* (straight-through) estimator averaged over ``samples`` independent
    Bernoulli codings ``s^k`` of ``x_n`` (``time_steps`` steps each):

    ``ghat = (1/K) sum_k sum_t dL/ds^k_t``,

    i.e. the Bernoulli sampling is treated as its expectation, ``E[s_t] = x``, so
    ``ds_t/dx = 1`` at every step and the image gradient is the spike-train gradient summed
    over time (exact for a direct-coded network, where ``s_t = x``). The last iterate is
    returned.

    Budget: ``|x_adv - x|_inf <= eps`` and ``x_adv`` in ``[0, 1]``, for every image.

    Example: ``EOTPGD(eps=0.1, n_iter=20, samples=4).attack(net, images, labels, gen)``
    """

    eps: float
    n_iter: int = 20
    samples: int = 4
    step_size: float | None = None
    random_start: bool = True
    time_steps: int = 10
    loss: Literal["ce", "margin"] = "ce"
    surrogate: Rectangular | None = None

    def __post_init__(self) -> None:
        name = self._check_image_attack(step_size_may_be_none=True)
        check_positive_int(f"{name}: samples", self.samples)

    def attack(self, net: SpikingNetwork, x: Tensor, y: Tensor, generator: torch.Generator | None = None, *,
               callback: Callback | None = None) -> Tensor:
        _check_images(x, y, type(self).__name__)
        step = 2.5 * self.eps / self.n_iter if self.step_size is None else self.step_size
        x0 = x.detach()
        xn = x0.clone()
        if self.random_start and self.eps > 0:
            noise = torch.rand(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
            xn = _project(x0 + (2 * noise - 1) * self.eps, x0, self.eps)
        K, B = self.samples, x0.shape[0]
        labels = y.repeat(K)
        with attack_surrogate(net, self.surrogate):
            for i in range(self.n_iter):
                batch = xn.repeat(K, *([1] * (xn.dim() - 1)))  # [K*B, X...], coding k in rows k*B..(k+1)*B
                spikes = image_coding(net, self.time_steps).encode(batch, generator)
                _, grad = _input_grad(net, spikes, labels, self.loss)
                ghat = grad.sum(0).reshape(K, B, *x0.shape[1:]).mean(0)
                xn = _project(xn + step * ghat.sign(), x0, self.eps)
                if callback is not None:
                    callback(i, xn)
        return xn
