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
from snn_robust.network import first_float_tensor as _first_float_tensor

__all__ = [
    "FromSource",
    "ROOT",
    "child_path",
    "plain_twin",
    "require_sequential",
    "plain_sequential",
    "check_heaviside",
    "refuse_batchnorm",
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
    if isinstance(layer, nn.Flatten):
        return nn.Flatten(1, -1)
    raise TypeError(f"no plain twin for {type(layer).__name__}")


def require_sequential(model: nn.Module, framework: str) -> None:
    """Refuse a top-level model that is not an ``nn.Sequential`` (its ``forward`` is
    arbitrary code whose layer order cannot be read), pointing at Sequential children
    the user may have meant."""
    if plain_sequential(model) or _is_framework_sequential(model):
        return
    if not isinstance(model, nn.Module):
        raise TypeError(f"from_{framework} expects a torch nn.Module, got {type(model).__name__}")
    hint = ""
    seqs = [name for name, child in model.named_children() if isinstance(child, nn.Sequential)]
    if seqs:
        shown = ", ".join(f"{ROOT}.{n}" for n in seqs)
        hint = f" If its forward only runs {shown} (after input encoding), convert that: from_{framework}({ROOT}.{seqs[0]})."
    raise UnsupportedLayerError(
        f"{ROOT} ({type(model).__name__}) is not an nn.Sequential, so its layer order cannot be read from it: "
        f"express the network as an nn.Sequential of supported layers (nested nn.Sequential is fine).{hint}"
    )


def plain_sequential(module: nn.Module) -> bool:
    """An ``nn.Sequential`` or a subclass that keeps its ``forward`` (runs its children in order)."""
    return isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward


def _is_framework_sequential(model: nn.Module) -> bool:
    # SpikingJelly's containers are nn.Sequential subclasses; the adapter checks them.
    return isinstance(model, nn.Sequential) and type(model).__module__.startswith("spikingjelly")


def refuse_batchnorm(module: nn.Module, path: str) -> None:
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        raise UnsupportedLayerError(
            f"{path} ({qualname(module)}) is not supported: batch normalisation has no spiking bound here. "
            "Fold it into the Conv2d/Linear before it (at eval it is an affine map per channel), e.g. "
            "conv = torch.nn.utils.fuse_conv_bn_eval(conv.eval(), bn.eval()) or "
            "torch.nn.utils.fuse_linear_bn_eval(linear, bn), and remove the BatchNorm from the model before conversion."
        )


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
    """The converted layers in order, with their paths and the user's modules."""

    def __init__(self) -> None:
        self.layers: list[nn.Module] = []
        self.names: list[str] = []
        self.sources: list[nn.Module] = []

    def add(self, layer: nn.Module, path: str, source: nn.Module) -> None:
        self.layers.append(layer)
        self.names.append(path)
        self.sources.append(source)

    def build(
        self,
        is_neuron: Callable[[nn.Module], bool],
        input_coding: str,
        end_hint: str,
        input_shape: Sequence[int] | None = None,
    ):
        """Check that the model ends in a spiking layer and build the network (which
        checks the neuron parameters and weights, naming each layer by its path)."""
        from snn_robust.network import SpikingNetwork

        if not any(is_neuron(layer) for layer in self.layers):
            raise UnsupportedLayerError(f"{ROOT} contains no supported spiking neuron; {end_hint}")
        if not is_neuron(self.layers[-1]):
            raise ValueError(
                f"{self.names[-1]} ({qualname(self.sources[-1])}) is the last layer, so the model does not output "
                f"spikes: the bounds are on output spike rates and need a spiking output layer; {end_hint}"
            )
        return SpikingNetwork(self.layers, input_coding=input_coding, names=self.names, input_shape=input_shape)
