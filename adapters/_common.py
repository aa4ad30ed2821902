"""Pieces shared by the framework adapters: live neuron parameters, layer twins, paths.

Shape glossary: ``T`` time steps, ``B`` batch, ``N...`` a layer's neuron shape.

An adapter walks the user's model, looks every module up in its own conversion table
(exact types only: a subclass may override ``forward``, so it is refused rather than
guessed at; the one exception is an ``nn.Sequential`` subclass that keeps Sequential's
``forward``) and builds a :class:`~snn_robust.SpikingNetwork` whose spatial layers hold
the user's own ``nn.Parameter`` objects and whose LIF layers read their decay and
threshold from the user's neuron at every use.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from snn_robust.errors import UnsupportedLayerError
from snn_robust.layers import READOUT_LAYERS, RateReadout, StepBatchNorm
from snn_robust.network import SpikingNetwork, first_float_tensor as _first_float_tensor

__all__ = [
    "FromSource",
    "ROOT",
    "child_path",
    "plain_twin",
    "require_sequential",
    "plain_sequential",
    "check_heaviside",
    "refuse_batchnorm",
    "batchnorm_twin",
    "check_dropout",
    "SampleFlatten",
    "flatten_twin",
    "scan_layers",
    "Collected",
    "qualname",
]

ROOT = "model"
"""Name of the user's model in paths: ``model.3``, ``model.features.conv.1``."""


def child_path(parent: str, name: str) -> str:
    return f"{parent}.{name}"


def qualname(module: nn.Module) -> str:
    """``nn.Linear``, ``snntorch.Leaky``, ``layer.Conv2d`` / ``neuron.LIFNode`` (SpikingJelly)."""
    kind = type(module)
    parts = kind.__module__.split(".")
    if parts[0] == "torch":
        return f"nn.{kind.__name__}"
    if parts[0] == "spikingjelly":
        for part in ("layer", "neuron"):
            if part in parts:
                return f"spikingjelly {part}.{kind.__name__}"
        return f"spikingjelly {kind.__name__}"
    if parts[0] == "snntorch":
        return f"snntorch.{kind.__name__}"
    return kind.__name__


class FromSource(nn.Module):
    """A neuron parameter read from the user's neuron each time it is used.

    ``read(source)`` returns a tensor (shared: an ``nn.Parameter`` or buffer of the
    source, or an expression of it such as ``beta.clamp(0, 1)``) or a Python number
    (SpikingJelly keeps ``tau`` and ``v_threshold`` as floats), which is returned as a
    0-dim tensor on the device and dtype of ``reference``'s first floating parameter,
    so the constant follows the user's model through ``.to()``.

    The source neuron is registered as a submodule, so its parameters are among the
    converted network's parameters (the same objects) and ``.to()`` on either moves it.
    ``read`` must be a module-level function (picklable).
    """

    def __init__(self, source: nn.Module, read: Callable[[nn.Module], object], reference: nn.Module | None = None) -> None:
        super().__init__()
        self.source = source
        self.read = read
        # Not registered: the reference is the user's whole model, only consulted for its device.
        object.__setattr__(self, "_reference", reference)

    def forward(self) -> Tensor:
        value = self.read(self.source)
        if isinstance(value, Tensor):
            return value
        like = _first_float_tensor(self._reference) if self._reference is not None else None
        if like is None:
            like = _first_float_tensor(self.source)
        if like is None:
            return torch.tensor(float(value))
        return torch.full((), float(value), dtype=like.dtype, device=like.device)

    def extra_repr(self) -> str:
        return f"read={getattr(self.read, '__name__', self.read)!r}"


def plain_twin(layer: nn.Module) -> nn.Module:
    """A plain torch layer computing ``layer``'s per-step function with the SAME
    parameter objects (for framework subclasses whose ``forward`` depends on a step
    mode). Pools and Flatten have no parameters and are rebuilt from their settings."""
    if isinstance(layer, nn.Linear):
        twin = nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None, device="meta")
        twin.weight = layer.weight
        if layer.bias is not None:
            twin.bias = layer.bias
        return twin
    if isinstance(layer, nn.Conv2d):
        twin = nn.Conv2d(
            layer.in_channels,
            layer.out_channels,
            layer.kernel_size,
            layer.stride,
            layer.padding,
            layer.dilation,
            layer.groups,
            layer.bias is not None,
            layer.padding_mode,
            device="meta",
        )
        twin.weight = layer.weight
        if layer.bias is not None:
            twin.bias = layer.bias
        return twin
    if isinstance(layer, nn.AvgPool2d):
        return nn.AvgPool2d(
            layer.kernel_size, layer.stride, layer.padding, layer.ceil_mode, layer.count_include_pad, layer.divisor_override
        )
    if isinstance(layer, nn.MaxPool2d):
        return nn.MaxPool2d(layer.kernel_size, layer.stride, layer.padding, layer.dilation, layer.return_indices, layer.ceil_mode)
    if isinstance(layer, nn.AdaptiveAvgPool2d):
        return nn.AdaptiveAvgPool2d(layer.output_size)
    if isinstance(layer, nn.Flatten):
        return nn.Flatten(1, -1)
    raise TypeError(f"no plain twin for {type(layer).__name__}")


def require_sequential(model: nn.Module, framework: str, scan: Callable[[], None] | None = None) -> None:
    """Refuse a top-level model that is not an ``nn.Sequential`` when no example input
    was given (its ``forward`` is arbitrary code whose layer order cannot be read without
    running it). ``scan`` first checks every module of the model on its own, so that an
    unsupported layer or setting is reported before the missing example input."""
    if plain_sequential(model) or _is_framework_sequential(model):
        return
    if not isinstance(model, nn.Module):
        raise TypeError(f"from_{framework} expects a torch nn.Module, got {type(model).__name__}")
    if scan is not None:
        scan()
    hint = ""
    seqs = [name for name, child in model.named_children() if isinstance(child, nn.Sequential)]
    if seqs:
        shown = ", ".join(f"{ROOT}.{n}" for n in seqs)
        hint = f" (If its forward only runs {shown}, from_{framework}({ROOT}.{seqs[0]}) also works.)"
    raise UnsupportedLayerError(
        f"{ROOT} ({type(model).__name__}) is not an nn.Sequential, so its layer order is in the Python code of its "
        f"forward: pass example_input (one input exactly as {ROOT}(...) takes it, e.g. a batch of 2 samples), "
        f"from_{framework}({ROOT}, example_input=x), and the adapter runs it once to read the chain of layers and "
        f"checks the converted network against it.{hint}"
    )


def scan_layers(module: nn.Module, path: str, known: Callable[[nn.Module], bool], visit: Callable[[nn.Module, str], None]) -> None:
    """``visit`` every module below ``module`` that is a layer: a known module that is
    not a container (a neuron with a surrogate submodule is a layer), or an unknown one
    without children. Containers and unknown blocks are descended into."""
    for name, child in module.named_children():
        sub = child_path(path, name)
        has_children = next(child.children(), None) is not None
        if (known(child) and not isinstance(child, nn.Sequential)) or not has_children:
            visit(child, sub)
        else:
            scan_layers(child, sub, known, visit)


def plain_sequential(module: nn.Module) -> bool:
    """An ``nn.Sequential`` or a subclass that keeps its ``forward`` (runs its children in order)."""
    return isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward


def _is_framework_sequential(model: nn.Module) -> bool:
    # SpikingJelly's containers are nn.Sequential subclasses; the adapter checks them.
    return isinstance(model, nn.Sequential) and type(model).__module__.startswith("spikingjelly")


def refuse_batchnorm(module: nn.Module, path: str) -> None:
    """Refuse the batch normalisations that are not ``BatchNorm1d`` / ``BatchNorm2d``."""
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        raise UnsupportedLayerError(
            f"{path} ({qualname(module)}) is not supported: only BatchNorm1d and BatchNorm2d (torch's or "
            "SpikingJelly's layer.BatchNorm1d/2d) are bounded; a BatchNorm3d or a spiking variant (threshold-dependent, "
            "temporal-effective, through-time) is not."
        )


def batchnorm_twin(module: nn.Module, path: str, per_step: bool) -> nn.Module:
    """The network layer of a user's ``BatchNorm1d/2d`` (live parameters and statistics;
    see :mod:`snn_robust.bounds.adapter_ops` for the statistics the bounds use)."""
    if not isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        refuse_batchnorm(module, path)
    return StepBatchNorm(module, per_step=per_step)


def check_dropout(module: nn.Module, path: str) -> None:
    """Dropout is the identity only at eval: refuse a dropout layer in training mode."""
    p = float(getattr(module, "p", 0.0))
    if module.training and p > 0:
        raise ValueError(
            f"{path} ({qualname(module)}, p={p:g}) is in training mode, where it zeroes random units; the bounds treat "
            "dropout as the identity (eval mode): call model.eval() before conversion (the converted network never "
            "drops units, in training as in evaluation), or set p=0"
        )


class SampleFlatten(nn.Flatten):
    """A user's ``Flatten(start_dim, end_dim)`` spelled differently from ``Flatten(1, -1)``
    (``Flatten(1, 3)``, ``Flatten(-3, -1)``): accepted where it flattens the whole
    per-step sample, which depends on the input's rank and is checked at every call.
    ``start_dim`` / ``end_dim`` (inherited) are ``1, -1``; ``spelled`` is the user's."""

    def __init__(self, start_dim: int, end_dim: int, path: str) -> None:
        super().__init__(1, -1)
        self.spelled = (int(start_dim), int(end_dim))
        self.path = path

    def forward(self, x: Tensor) -> Tensor:
        rank = x.dim()
        start, end = (d % rank for d in self.spelled)
        if start != 1 or end != rank - 1:
            raise ValueError(
                f"{self.path} (nn.Flatten(start_dim={self.spelled[0]}, end_dim={self.spelled[1]})) gets a per-step input "
                f"of shape {tuple(x.shape)}, where it does not flatten each whole sample [B, ...] -> [B, -1]; use nn.Flatten()"
            )
        return x.flatten(1)

    def extra_repr(self) -> str:
        return f"spelled=Flatten{self.spelled}"


def flatten_twin(module: nn.Flatten, path: str, start: int, message: Callable[[], str]) -> nn.Module | None:
    """``None`` when ``module`` is the canonical per-sample flatten (``start_dim=start``,
    ``end_dim=-1``, ``start`` 1 for a step ``[B, ...]``, 2 for ``[T, B, ...]``), else a
    :class:`SampleFlatten` in per-step dimensions; raises ``ValueError(message())`` for
    a spelling that can never flatten a whole sample (one that touches the batch or time)."""
    s, e = module.start_dim, module.end_dim
    if s == start and e == -1:
        return None
    shift = start - 1  # dims of [T, B, ...] -> dims of one step [B, ...]
    if (s >= 0 and s != start) or (0 <= e < start) or (s < 0 and e >= 0):
        raise ValueError(message())
    return SampleFlatten(s - shift if s >= 0 else s, e - shift if e >= 0 else e, path)


def check_heaviside(fn: Callable[[Tensor], Tensor], inclusive: bool, path: str, what: str) -> None:
    """Refuse a spike function that is not the Heaviside step the bounds assume
    (``x > 0`` or ``x >= 0``): probe it on points around 0."""
    tiny = torch.finfo(torch.float32).tiny
    x = torch.tensor([-1.0, -tiny, 0.0, tiny, 1.0])
    want = torch.tensor([0.0, 0.0, 1.0 if inclusive else 0.0, 1.0, 1.0])
    try:
        with torch.no_grad():
            got = fn(x)
    except Exception as exc:  # a spike function that cannot run on a plain tensor
        raise ValueError(f"{path}: {what} could not be evaluated ({exc}); use a standard surrogate") from exc
    if not isinstance(got, Tensor) or got.shape != x.shape or not torch.equal(got.detach().float(), want):
        comparison = ">=" if inclusive else ">"
        raise ValueError(
            f"{path}: {what} does not compute the binary step fire(x) = [x {comparison} 0] in its forward pass "
            f"(on {x.tolist()} it gave {got.tolist() if isinstance(got, Tensor) else got!r}); graded or analog spikes "
            "are not supported: use one of the framework's standard surrogate gradients"
        )


class Collected:
    """The converted layers in order, with their paths and the user's modules, and the
    readout after the last spiking layer if the model has one."""

    def __init__(self) -> None:
        self.layers: list[nn.Module] = []
        self.names: list[str] = []
        self.sources: list[nn.Module] = []
        self.readout: tuple[nn.Module, str, nn.Module] | None = None  # (RateReadout, path, user's module)

    def add(self, layer: nn.Module, path: str, source: nn.Module) -> None:
        if self.readout is not None:
            raise ValueError(
                f"{path} ({qualname(source)}) comes after the readout {self.readout[1]} "
                f"({qualname(self.readout[2])}): a readout must be the model's last layer"
            )
        self.layers.append(layer)
        self.names.append(path)
        self.sources.append(source)

    def set_readout(self, readout: nn.Module, path: str, source: nn.Module) -> None:
        if self.readout is not None:
            raise ValueError(f"{path} ({qualname(source)}) is a second readout after {self.readout[1]}")
        self.readout = (readout, path, source)

    def build(
        self,
        is_neuron: Callable[[nn.Module], bool],
        input_coding: str,
        end_hint: str,
        input_shape: Sequence[int] | None = None,
    ):
        """Check that the model ends in a spiking layer (or a readout linear in its rates:
        a voting layer, or one ``nn.Linear`` or ``nn.Conv2d`` after the last spiking layer,
        with average pools and flattens around it, whose per-step
        outputs are averaged over time) and build the network (which checks the neuron
        parameters and weights, naming each layer by its path)."""
        if not any(is_neuron(layer) for layer in self.layers):
            raise UnsupportedLayerError(f"{ROOT} contains no supported spiking neuron; {end_hint}")
        layers, names = list(self.layers), list(self.names)
        readout = self.readout[0] if self.readout is not None else None
        if not is_neuron(layers[-1]):
            last = max(i for i, layer in enumerate(layers) if is_neuron(layer))
            tail = layers[last + 1 :]
            weighted = [i for i in range(last + 1, len(layers)) if isinstance(layers[i], (nn.Linear, nn.Conv2d))]
            bad = next((i for i in range(last + 1, len(layers)) if not isinstance(layers[i], READOUT_LAYERS)), None)
            if readout is None and bad is None and len(weighted) == 1:
                # affine per step: mean_t f(s_t) = f(mean_t s_t) = W rate + b
                readout = RateReadout("linear", tail, names=names[last + 1 :])
                layers, names = layers[: last + 1], names[: last + 1]
            else:
                if bad is not None:
                    why = (
                        f"; {self.names[bad]} ({qualname(self.sources[bad])}) after it is not affine per step, so the "
                        "time average of its output is not a function of the rates"
                    )
                elif len(weighted) > 1:  # most likely a spiking layer left out between them
                    why = (
                        f"; {self.names[weighted[0]]} and {self.names[weighted[1]]} are two weighted layers with no "
                        "spiking layer between them (a readout has one)"
                    )
                else:
                    why = ""
                raise ValueError(
                    f"{self.names[-1]} ({qualname(self.sources[-1])}) is the last layer, so the model does not output "
                    "spikes: the bounds are on output spike rates and need a spiking output layer, or one readout "
                    "linear in the rates after it (a VotingLayer, or one nn.Linear or nn.Conv2d with average pools "
                    f"and flattens, averaged over time){why}; {end_hint}"
                )
        return SpikingNetwork(layers, input_coding=input_coding, names=names, input_shape=input_shape, readout=readout)
