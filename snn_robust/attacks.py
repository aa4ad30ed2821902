"""White-box attacks on spiking networks: spike-compatible gradients, EOT-PGD, greedy flips.

Shape glossary: ``T`` time steps, ``B`` batch, ``X...`` one sample's input shape,
``D = T * prod(X)`` elements of one sample's spike train.

Two kinds of input, two budgets:

* **spike inputs** (``input_kind = "spike"``; event frames, or fixed spike trains): ``x`` is
  a binary ``[T, B, X...]`` tensor and the budget is an l_0 count of changed elements per
  sample, relative to the clean input. Attacks: :class:`SpikeCompatibleAttack`,
  :class:`GreedyFlip`. Both can be confined to a box ``[lower, upper]`` (e.g. the input
  bounds of :class:`~snn_robust.SpikeL0`): only positions with ``lower != upper`` change.
* **digital inputs** (``input_kind = "digital"``; images rate coded by Bernoulli sampling
  every step, Eq. 4): ``x`` is an image batch ``[B, X...]`` in ``[0, 1]`` and the budget is
  the l_inf ball of radius ``eps`` around it, intersected with ``[0, 1]``. Attacks:
  :class:`SpikeCompatibleDigitalAttack`, :class:`EOTPGD`. They return an *image*; whoever
  scores it must re-encode it with fresh Bernoulli samples (see
  :func:`snn_robust.evaluate.attack_error`), since the samples seen during the attack are
  not the ones the model will see.

Every attack shares one interface, ``attack(net, x, y, generator=None, *, callback=None)
-> x_adv``: ``generator`` (a ``torch.Generator`` on the input's device) makes it
deterministic; ``callback(i, x_adv_i)`` is called after iteration ``i`` with the current
adversarial input (for instrumentation: budgets, loss curves). The spike attacks also take
``box=(lower, upper)``. Attacks are frozen dataclasses of their parameters; ``with_eps``
returns the same attack at another budget and ``config()`` a JSON-ready description.

The loss maximised is the cross-entropy of the output rates (``loss="ce"``) or the rate
margin ``max_{j != y} r_j - r_y`` (``loss="margin"``); input gradients flow through BPTT and
the neurons' surrogate gradients. Every attack takes ``surrogate``, the surrogate gradient
used while attacking (``None``: the model's own; :class:`GreedyFlip` takes ``surrogates``
and tries them in turn). The model's training surrogate (the
paper's rectangle ``|m - th| < 0.5``) is zero for every neuron far from its threshold, so
gradients often vanish on a trained network; a wider window (e.g.
``Rectangular(half_width=2.0)``) can find adversarial inputs the model's own surrogate misses.
The forward pass, and so every success check and every evaluation, is unaffected.

Example: ``x_adv = EOTPGD(eps=0.1).attack(net, images, labels, torch.Generator().manual_seed(0))``
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
from dataclasses import dataclass
from typing import Callable, ClassVar, Iterator, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from .coding import bernoulli_encode, image_coding
from .metrics import is_correct
from .network import SpikingNetwork
from .neuron import LIF, Rectangular
from .validation import check_number, check_positive_int

__all__ = [
    "Attack",
    "SpikeCompatibleAttack",
    "SpikeCompatibleDigitalAttack",
    "EOTPGD",
    "GreedyFlip",
    "attack_surrogate",
    "spike_compatible_direction",
]

Callback = Callable[[int, Tensor], None]
LOSSES = ("ce", "margin")


# -- shared pieces ----------------------------------------------------------------------
def _loss(rates: Tensor, labels: Tensor, kind: str) -> Tensor:
    """Summed (not averaged) over the batch, so a sample's gradient ignores the batch size."""
    if kind == "ce":
        return F.cross_entropy(rates, labels, reduction="sum")
    ry = rates.gather(1, labels[:, None]).squeeze(1)
    others = rates.scatter(1, labels[:, None], float("-inf"))
    return (others.amax(1) - ry).sum()


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


def _check_fraction(value: float, name: str, cls: str) -> None:
    check_number(f"{cls}: {name}", value, 0.0, 1.0)


def _check_positive_int(value: int, name: str, cls: str) -> None:
    check_positive_int(f"{cls}: {name}", value)


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
    (images ``[B, X...]`` in ``[0, 1]``, rate coded inside the attack)."""

    input_kind: ClassVar[str]
    eps: float

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
        _check_fraction(self.eps, "eps", name)
        _check_positive_int(self.n_iter, "n_iter", name)
        if self.loss not in LOSSES:
            raise ValueError(f"{name}: loss must be one of {LOSSES}, got {self.loss!r}")


# -- spike inputs -----------------------------------------------------------------------
@dataclass(frozen=True)
class SpikeCompatibleAttack(Attack):
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
    input_kind: ClassVar[str] = "spike"

    def __post_init__(self) -> None:
        self._check_common()
        for field in ("iter_fraction", "random_fraction"):
            if getattr(self, field) is not None:
                _check_fraction(getattr(self, field), field, type(self).__name__)

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
        _check_spikes(x, y, name)
        admissible = _check_box(box, x, name)
        x0 = _flat(x)
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
class GreedyFlip(Attack):
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
    input_kind: ClassVar[str] = "spike"

    def __post_init__(self) -> None:
        self._check_common()
        name = type(self).__name__
        if self.flips_per_iter is not None:
            _check_positive_int(self.flips_per_iter, "flips_per_iter", name)
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
        _check_spikes(x, y, name)
        admissible = _check_box(box, x, name)
        x0 = _flat(x)
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


# -- digital (rate-coded) inputs ---------------------------------------------------------
def _project(x: Tensor, x0: Tensor, eps: float) -> Tensor:
    """Clip to the l_inf ball of radius ``eps`` around ``x0`` and to ``[0, 1]``."""
    return torch.minimum(torch.maximum(x, x0 - eps), x0 + eps).clamp(0.0, 1.0)


@dataclass(frozen=True)
class SpikeCompatibleDigitalAttack(Attack):
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
    input_kind: ClassVar[str] = "digital"

    def __post_init__(self) -> None:
        self._check_common()
        name = type(self).__name__
        _check_positive_int(self.time_steps, "time_steps", name)
        _check_fraction(self.random_fraction, "random_fraction", name)
        if not self.step_size > 0:
            raise ValueError(f"{name}: step_size must be positive, got {self.step_size!r}")

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
class EOTPGD(Attack):
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
    input_kind: ClassVar[str] = "digital"

    def __post_init__(self) -> None:
        self._check_common()
        name = type(self).__name__
        _check_positive_int(self.samples, "samples", name)
        _check_positive_int(self.time_steps, "time_steps", name)
        if self.step_size is not None and not self.step_size > 0:
            raise ValueError(f"{name}: step_size must be positive, got {self.step_size!r}")

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
