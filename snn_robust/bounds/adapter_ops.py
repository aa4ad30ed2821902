"""Bound operators for layers that framework models bring: BatchNorm and adaptive pooling.

Shape glossary: ``T`` steps, ``B`` batch, ``M`` folded time and batch (``T * B``),
``S`` specification rows, ``C`` channels, ``X...`` a layer's input shape.

BatchNorm (``nn.BatchNorm1d`` / ``nn.BatchNorm2d`` and SpikingJelly's ``layer.BatchNorm*``)
is, for fixed statistics, an affine map per channel ``c``::

    y = a_c * x + b_c,   a_c = w_c / sqrt(var_c + eps),   b_c = beta_c - mean_c * a_c

(``w = 1``, ``beta = 0`` without ``affine``), which is bounded like any linear layer of
Eq. 11: ``[a mid + b -+ |a| rad]``, and transposed exactly in S-CROWN.

Which statistics (the choice, and why):

* **eval mode** (running statistics tracked): ``mean, var`` are the running statistics,
  so the bound is exactly the framework's eval forward. This is the certification case.
* **train mode** (or ``track_running_stats=False``): the framework normalises each
  batch by its own statistics, so one sample's output depends on the other samples and a
  perturbation of one sample moves every sample's normalisation. There is no per-sample
  function to certify. We take the statistics of the *clean* batch the network saw in its
  last forward pass (in a training step: the clean forward that computes the natural
  loss, before the bound), pooled over every row it normalised (all steps and samples),
  and treat them as constants (detached). The bound then certifies the per-sample network
  with those fixed statistics, which is what the network computes at eval time once the
  running statistics have converged to batch statistics; gradients still reach the
  convolution before the BatchNorm and the BatchNorm's ``weight`` and ``bias`` (they enter
  ``a`` and ``b``), while the statistics get none (as in a frozen-statistics fine-tune).
  The alternative, bounding the batch statistics themselves over the perturbation set,
  couples all samples of a batch and makes every sample's certificate depend on the
  others; it is not what a deployed (eval) network computes.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..errors import UnsupportedLayerError
from .rounding import accumulation_error, point_outputs_exact, unit_roundoff
from .spatial import BoundAvgPool2d, BoundOp, _pair, bound_op

__all__ = [
    "StepBatchNorm", "BoundBatchNorm", "BoundAdaptiveAvgPool2d", "adaptive_pool_window", "RateReadout", "READOUT_LAYERS"
]


class StepBatchNorm(nn.Module):
    """A user's BatchNorm as one layer of a :class:`~snn_robust.SpikingNetwork`.

    Holds the user's module (``bn``: its ``weight``, ``bias`` and running statistics are
    used live, never copied) and runs it the way the user's model does over time:

    * ``per_step=True``: once per step on ``[B, C, ...]`` (an snnTorch step loop, a
      SpikingJelly single-step model): in train mode each step has its own batch
      statistics and the running statistics are updated ``T`` times;
    * ``per_step=False``: once on the folded ``[T*B, C, ...]`` (SpikingJelly's multi-step
      ``layer.BatchNorm2d`` or ``SeqToANNContainer``).

    The network runs it on the time-major ``[T, B, C, ...]`` sequence
    (:meth:`forward_time`). In train mode it
    records the pooled statistics of what it normalised (``clean_stats``), which
    :class:`BoundBatchNorm` uses as constants (see the module docstring).
    """

    def __init__(self, bn: _BatchNorm, per_step: bool) -> None:
        super().__init__()
        if not isinstance(bn, _BatchNorm):
            raise TypeError(f"StepBatchNorm wraps a torch BatchNorm module, got {type(bn).__name__}")
        self.bn = bn
        self.per_step = bool(per_step)
        self.clean_stats: tuple[Tensor, Tensor] | None = None

    def uses_batch_stats(self) -> bool:
        return self.bn.training or self.bn.running_mean is None

    def forward(self, x: Tensor) -> Tensor:
        """The per-step map on a folded ``[M, C, ...]`` input, without side effects (for
        shape checks and single calls): the running statistics where they are tracked,
        else the statistics of ``x``; nothing is recorded or updated. The network runs
        :meth:`forward_time`."""
        bn = self.bn
        if bn.running_mean is None:
            return F.batch_norm(x, None, None, bn.weight, bn.bias, True, 0.0, bn.eps)
        return F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)

    def forward_time(self, x: Tensor) -> Tensor:
        """``[T, B, C, ...] -> [T, B, C, ...]`` exactly as the user's model runs the module
        (its own torch forward: same statistics, same running-statistics updates)."""
        if x.dim() < 3:
            raise ValueError(f"StepBatchNorm expects a time-major [T, B, C, ...] input, got shape {tuple(x.shape)}")
        step = _BatchNorm.forward  # the torch forward of the user's module, bypassing any step-mode wrapper
        if self.uses_batch_stats():
            dims = [0, 1] + list(range(3, x.dim()))
            with torch.no_grad():
                var, mean = torch.var_mean(x.detach(), dim=dims, correction=0)
            self.clean_stats = (mean, var)
        if self.per_step:
            return torch.stack([step(self.bn, x[t]) for t in range(x.shape[0])])
        y = step(self.bn, x.reshape(x.shape[0] * x.shape[1], *x.shape[2:]))
        return y.reshape(x.shape[0], x.shape[1], *y.shape[1:])

    def extra_repr(self) -> str:
        return f"per_step={self.per_step}"


class BoundBatchNorm(BoundOp):
    """S-IBP / S-CROWN through a :class:`StepBatchNorm`: the per-channel affine map of the
    statistics chosen in the module docstring (live parameters, differentiable)."""

    module: StepBatchNorm

    def affine(self, like: Tensor) -> tuple[Tensor, Tensor]:
        """``(a, b)``, each ``[C]``, for the current mode."""
        bn = self.module.bn
        mean, var = self._stats(like)
        inv = torch.rsqrt(var.to(like.dtype) + bn.eps)
        a = inv if bn.weight is None else bn.weight * inv
        b = -mean.to(like.dtype) * a
        if bn.bias is not None:
            b = b + bn.bias
        return a, b

    def _stats(self, like: Tensor) -> tuple[Tensor, Tensor]:
        """``(mean, var)`` of the current mode (module docstring)."""
        bn = self.module.bn
        if self.module.uses_batch_stats():
            stats = self.module.clean_stats
            if stats is None:
                raise ValueError(
                    f"layer {self.name} ({type(bn).__name__}) normalises with batch statistics (train mode), and the "
                    "bound uses those of the clean batch as constants: run the network on the clean batch first "
                    "(net(x) in the same training step), or call net.eval() to bound with the running statistics"
                )
            mean, var = stats
            if mean.shape[0] != like.shape[1]:
                raise ValueError(
                    f"layer {self.name}: the recorded clean-batch statistics have {mean.shape[0]} channels, the bound "
                    f"input has {like.shape[1]}"
                )
            return mean, var
        return bn.running_mean, bn.running_var

    @staticmethod
    def _per_channel(v: Tensor, x: Tensor, channel_dim: int) -> Tensor:
        return v.reshape(v.shape[0], *([1] * (x.dim() - channel_dim - 1)))

    def rounding_error(self, l: Tensor, u: Tensor) -> Tensor:
        """The framework computes ``(x - mean) * rsqrt(var + eps) * w + beta`` (or the same
        with ``a`` and ``b`` precomputed), ours ``a x + b``: each is a handful of roundings
        of terms bounded by ``|a| (|x| + |mean|) + |beta|``, and the reciprocal square root
        errs relatively by a few ``u``; 8 roundings of that magnitude cover both and the
        interval arithmetic (the :mod:`~snn_robust.bounds.rounding` rule with ``n = 8``).
        Under the ``"same-kernel"`` error model an element with a fixed input (``l == u``)
        in eval mode has no error: :meth:`interval` computes it with the module's own
        kernel, as the network's forward does (BatchNorm is elementwise)."""
        with torch.no_grad():
            a, _ = self.affine(l)
            mean = self._stats(l)[0]
            bn = self.module.bn
            beta = bn.bias.abs() if bn.bias is not None else torch.zeros_like(a)
            a, mean, beta = (self._per_channel(v.detach().abs(), l, 1) for v in (a, mean, beta))
            x = torch.maximum(l.abs(), u.abs())
            err = accumulation_error(a * (x + mean) + beta, 8, unit_roundoff(x.dtype, x.device))
            if point_outputs_exact() and not self.module.uses_batch_stats():
                err = err * (l != u)
            return err

    def interval(self, l: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
        a, b = self.affine(l)
        a, b = self._per_channel(a, l, 1), self._per_channel(b, l, 1)
        mid, rad = (u + l) / 2, (u - l) / 2
        # eval: the module's own kernel on the centre (exact at fixed inputs, see rounding_error)
        centre = a * mid + b if self.module.uses_batch_stats() else self.module(mid)
        spread = a.abs() * rad
        return centre - spread, centre + spread

    def backward(self, A: Tensor, l: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
        a, b = self.affine(l)
        A_in = A * self._per_channel(a, A, 2)
        return A_in, (A * self._per_channel(b, A, 2)).flatten(2).sum(-1)


def adaptive_pool_window(in_hw: tuple[int, int], out_size, name: str) -> tuple[int, int]:
    """The window (= stride) of the plain average pool that ``AdaptiveAvgPool2d(out_size)``
    equals on an ``in_hw`` input: each output size must divide the input size."""
    out = _pair(out_size)
    window = []
    for i, o in zip(in_hw, out):
        o = i if o is None else o
        if o <= 0 or i % o:
            raise UnsupportedLayerError(
                f"layer {name} (AdaptiveAvgPool2d): output size {tuple(out)} does not divide the input size "
                f"{tuple(in_hw)}, so its windows overlap or differ in size; only an adaptive pool that equals "
                "nn.AvgPool2d(kernel_size=input/output) is supported (e.g. AdaptiveAvgPool2d(1) on any input)"
            )
        window.append(i // o)
    return tuple(window)


class BoundAdaptiveAvgPool2d(BoundAvgPool2d):
    """``AdaptiveAvgPool2d`` where it equals ``AvgPool2d(k, k)``, ``k = input / output``;
    the window is read from the input shape at each use."""

    def __init__(self, module: nn.AdaptiveAvgPool2d, name: str) -> None:
        BoundOp.__init__(self, module, name)
        self.pad = (0, 0)

    def interval(self, l: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
        adaptive_pool_window(tuple(l.shape[-2:]), self.module.output_size, self.name)
        return super().interval(l, u)

    def transpose(self, A: Tensor, in_shape: tuple[int, ...]) -> Tensor:
        self.kernel = self.stride = adaptive_pool_window(tuple(in_shape[-2:]), self.module.output_size, self.name)
        return super().transpose(A, in_shape)


READOUT_LAYERS: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.Flatten)
"""Layers a ``linear`` readout may chain: affine per step, so ``mean_t f(s_t) = f(mean_t s_t)``."""


class RateReadout(nn.Module):
    """Class scores that are a linear function of the last spiking layer's rates,
    ``scores = W rate + b`` (``[B, N...] -> [B, C]``), so their margins are bounded by
    the specification ``spec @ W`` on the rates (S-IBP / S-CROWN as for any margin) plus
    ``spec @ b``.

    * ``linear``: a chain ``f`` of affine layers (:data:`READOUT_LAYERS`: ``nn.Linear``,
      ``nn.Conv2d``, average pools, ``nn.Flatten``) after the last spiking layer whose
      per-step output is averaged over time: ``mean_t f(s_t) = f(mean_t s_t) = W rate + b``
      since ``f`` is affine (SpikingJelly's ``spiking_vgg`` classifiers: one
      ``nn.Linear``; a ``Conv2d`` classifier head, pooled and flattened to class scores).
      The scores are ``f(rates)`` flattened per sample. ``W`` is ``f``'s linear part, read
      by the layers' exact transposes (their S-CROWN backward), ``b = f(0)``; both are
      functions of the user's Parameters (trained). ``linear`` is the user's
      ``nn.Linear`` itself when the chain is one, else an ``nn.Sequential`` of the chain.
    * ``voting``: SpikingJelly's ``layer.VotingLayer(g)``: class ``c`` scores the mean
      rate of output neurons ``c g .. c g + g - 1`` (the last ``N mod g`` are unused, as
      in its ``avg_pool1d``). Scores are multiples of ``1 / (g T')``: :meth:`grid`.
    """

    def __init__(
        self,
        kind: str,
        module: nn.Module | Sequence[nn.Module] | None = None,
        group: int = 1,
        names: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        if kind not in ("linear", "voting"):
            raise ValueError(f"readout kind must be 'linear' or 'voting', got {kind!r}")
        if int(group) < 1:
            raise ValueError(f"voting group size must be >= 1, got {group}")
        self.kind = kind
        self.linear: nn.Module | None = None
        self.ops: list[BoundOp] = []
        if kind == "linear":
            chain = [module] if isinstance(module, nn.Module) else list(module or [])
            names = list(names) if names is not None else [f"readout.{i}" for i in range(len(chain))]
            if not chain or len(names) != len(chain):
                raise ValueError(f"a linear readout takes one name per layer of a non-empty chain, got {len(chain)} layers")
            for layer, name in zip(chain, names):
                if not isinstance(layer, READOUT_LAYERS):
                    allowed = ", ".join(f"nn.{t.__name__}" for t in READOUT_LAYERS)
                    raise TypeError(
                        f"readout layer {name} ({type(layer).__name__}) is not affine per step, so its time average is "
                        f"not a function of the rates; a linear readout chains {allowed}"
                    )
            self.ops = [bound_op(layer, name) for layer, name in zip(chain, names)]  # refuses unbounded settings now
            self.linear = chain[0] if len(chain) == 1 else nn.Sequential(*chain)
        self.group = int(group)

    @property
    def layers(self) -> list[nn.Module]:
        return [op.module for op in self.ops]

    def classes(self, n_out: int | None) -> int | None:
        """The class count on ``n_out`` output neurons; ``None`` when it depends on the
        input shape (a chain that does not end in an ``nn.Linear``) or ``n_out`` is unknown."""
        if self.kind == "voting":
            return None if n_out is None else n_out // self.group
        tail = [layer for layer in self.layers if not isinstance(layer, nn.Flatten)]
        return tail[-1].out_features if tail and isinstance(tail[-1], nn.Linear) else None

    def matrix(self, neuron_shape: Sequence[int], like: Tensor) -> tuple[Tensor, Tensor | None]:
        """``(W [C, N], b [C] or None)`` on the output neurons of shape ``neuron_shape``
        (``N`` their number)."""
        n_out = math.prod(neuron_shape)
        if self.kind == "linear":
            return self._affine(tuple(neuron_shape), like)
        C = self.classes(n_out)
        if C < 1:
            raise ValueError(f"VotingLayer(voting_size={self.group}) needs at least {self.group} output neurons, got {n_out}")
        W = like.new_zeros(C, n_out)
        rows = torch.arange(C * self.group, device=like.device)
        W[rows // self.group, rows] = 1.0 / self.group
        return W, None

    def _affine(self, neuron_shape: tuple[int, ...], like: Tensor) -> tuple[Tensor, Tensor | None]:
        """The chain's ``W`` (its layers transposed on the identity, last to first: the
        S-CROWN backward, exact for affine layers) and ``b = f(0)``."""
        if isinstance(self.linear, nn.Linear) and len(neuron_shape) == 1:  # W and b are the Parameters themselves
            if self.linear.in_features != neuron_shape[0]:
                raise ValueError(
                    f"readout {self.ops[0].name} (nn.Linear) takes {self.linear.in_features} features but the last "
                    f"spiking layer has {neuron_shape[0]} neurons"
                )
            return self.linear.weight, self.linear.bias
        x = like.new_zeros(1, *neuron_shape)
        inputs = []
        for op in self.ops:
            inputs.append(x)
            try:
                x = op.module(x)
            except RuntimeError as exc:
                raise ValueError(
                    f"readout {op.name} ({type(op.module).__name__}) cannot take the last spiking layer's rates of "
                    f"shape {tuple(inputs[-1].shape[1:])} (torch: {str(exc).splitlines()[0]})"
                ) from None
        b = x.flatten(1)[0]
        C = b.shape[0]
        A = torch.eye(C, dtype=like.dtype, device=like.device).reshape(1, C, *x.shape[1:])
        for op, inp in zip(reversed(self.ops), reversed(inputs)):
            A, _ = op.backward(A, inp, inp)
        return A.reshape(C, -1), b

    def grid(self) -> int | None:
        """Scores lie on ``Z / (grid * T')`` (``None``: no grid, real weights)."""
        return self.group if self.kind == "voting" else None

    def forward(self, rates: Tensor) -> Tensor:
        """Class scores ``[B, C]`` of the rates ``[B, N...]`` (the last layer's neuron shape)."""
        if self.kind == "linear":
            return self.linear(rates).flatten(1)
        W, b = self.matrix((math.prod(rates.shape[1:]),), rates)
        return F.linear(rates.flatten(1), W, b)

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}" + (f", group={self.group}" if self.kind == "voting" else "")
