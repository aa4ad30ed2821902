"""Layers a :class:`~snn_robust.SpikingNetwork` takes beyond torch's own, and the layer
settings the bound engine covers.

* :class:`StepBatchNorm`: a user's BatchNorm run over time as the user's model runs it
  (its bound operator, and which statistics the bounds use, is
  :class:`~snn_robust.bounds.adapter_ops.BoundBatchNorm`);
* :class:`RateReadout`: class scores linear in the output rates (a time-averaged affine
  chain, a voting layer);
* :func:`check_supported`: refuses, by layer name, the settings of a supported layer type
  that the bounds do not cover (a network refuses them when it is built).

These are plain torch modules: the network holds them and the bound engine
(:mod:`snn_robust.bounds`) reads them, so this module imports nothing of the engine.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from .errors import UnsupportedLayerError

__all__ = ["StepBatchNorm", "RateReadout", "READOUT_LAYERS", "check_supported", "pair"]


def pair(v) -> tuple[int, int]:
    """A torch size argument as ``(h, w)``."""
    return (v, v) if isinstance(v, int) else tuple(v)


def check_supported(module: nn.Module, name: str) -> None:
    """Raise :class:`~snn_robust.errors.UnsupportedLayerError` naming layer ``name`` if it
    is a ``Conv2d``, ``AvgPool2d`` or ``MaxPool2d`` with settings the bound operators do
    not cover (padding other than zeros given as numbers; ceil mode, a divisor override,
    padding without ``count_include_pad``, returned indices)."""
    if isinstance(module, nn.Conv2d):
        if module.padding_mode != "zeros":
            raise UnsupportedLayerError(
                f"layer {name} (Conv2d): padding_mode={module.padding_mode!r} is not supported; use 'zeros'"
            )
        if isinstance(module.padding, str):
            raise UnsupportedLayerError(
                f"layer {name} (Conv2d): padding={module.padding!r} is not supported; give the padding as numbers"
            )
    elif isinstance(module, nn.AvgPool2d):
        pad = pair(module.padding)
        if module.ceil_mode or module.divisor_override is not None or (any(pad) and not module.count_include_pad):
            raise UnsupportedLayerError(
                f"layer {name} (AvgPool2d): ceil_mode, divisor_override and count_include_pad=False with padding "
                "are not supported; use a plain AvgPool2d(kernel_size, stride, padding)"
            )
    elif isinstance(module, nn.MaxPool2d):
        if module.ceil_mode or module.return_indices:
            raise UnsupportedLayerError(
                f"layer {name} (MaxPool2d): ceil_mode and return_indices are not supported"
            )


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
    :class:`~snn_robust.bounds.adapter_ops.BoundBatchNorm` uses as constants (see that
    module's docstring).
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
      by the layers' exact transposes (their S-CROWN backward,
      :func:`~snn_robust.bounds.adapter_ops.readout_matrix`), ``b = f(0)``; both are
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
        self.layers: list[nn.Module] = []  # the linear chain (registered through self.linear)
        self.names: list[str] = []  # their paths in the user's model, for messages
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
            for layer, name in zip(chain, names):
                check_supported(layer, name)  # refuses settings the bounds do not cover now
            self.layers, self.names = chain, names
            self.linear = chain[0] if len(chain) == 1 else nn.Sequential(*chain)
        self.group = int(group)

    def classes(self, n_out: int | None) -> int | None:
        """The class count on ``n_out`` output neurons; ``None`` when it depends on the
        input shape (a chain that does not end in an ``nn.Linear``) or ``n_out`` is unknown."""
        if self.kind == "voting":
            return None if n_out is None else n_out // self.group
        tail = [layer for layer in self.layers if not isinstance(layer, nn.Flatten)]
        return tail[-1].out_features if tail and isinstance(tail[-1], nn.Linear) else None

    def voting_matrix(self, n_out: int, like: Tensor) -> Tensor:
        """A voting readout's ``W`` (``[C, N]``, no bias) on ``n_out`` output neurons."""
        C = self.classes(n_out)
        if C < 1:
            raise ValueError(f"VotingLayer(voting_size={self.group}) needs at least {self.group} output neurons, got {n_out}")
        W = like.new_zeros(C, n_out)
        rows = torch.arange(C * self.group, device=like.device)
        W[rows // self.group, rows] = 1.0 / self.group
        return W

    def grid(self) -> int | None:
        """Scores lie on ``Z / (grid * T')`` (``None``: no grid, real weights)."""
        return self.group if self.kind == "voting" else None

    def forward(self, rates: Tensor) -> Tensor:
        """Class scores ``[B, C]`` of the rates ``[B, N...]`` (the last layer's neuron shape)."""
        if self.kind == "linear":
            return self.linear(rates).flatten(1)
        return F.linear(rates.flatten(1), self.voting_matrix(math.prod(rates.shape[1:]), rates))

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}" + (f", group={self.group}" if self.kind == "voting" else "")
