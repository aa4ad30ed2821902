"""Bound operators for layers that framework models bring: BatchNorm and adaptive pooling
(the modules are in :mod:`snn_robust.layers`).

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

import torch
from torch import Tensor, nn

from ..errors import UnsupportedLayerError
from ..layers import READOUT_LAYERS, RateReadout, StepBatchNorm, pair as _pair
from .rounding import accumulation_error, point_outputs_exact, unit_roundoff
from .spatial import BoundAvgPool2d, BoundOp

# StepBatchNorm, RateReadout and READOUT_LAYERS (the modules themselves) live in snn_robust.layers
# and stay importable from here.
__all__ = [
    "StepBatchNorm", "BoundBatchNorm", "BoundAdaptiveAvgPool2d", "adaptive_pool_window", "RateReadout", "READOUT_LAYERS"
]


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
            err = accumulation_error(a * (x + mean) + beta, 8, unit_roundoff(x.dtype))
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
