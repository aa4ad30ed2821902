"""The bound graph of a network: one bound operator per layer (:func:`bound_op`), grouped
per stage (its spatial operators and the bound LIF operator that closes it), and the
class-score matrix of a rate readout.

Built by the bound engine from a :class:`~snn_robust.SpikingNetwork` on first use and
cached per network object (weakly: the graph goes with the network), so the network
itself knows nothing of bounds. The operators wrap the network's own modules and read
their parameters live, so one graph serves every call, through training and ``.to()``.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Sequence
from weakref import WeakKeyDictionary

import torch
from torch import Tensor, nn

from ..errors import UnsupportedLayerError
from ..layers import RateReadout, StepBatchNorm, check_supported
from ..network import SpikingNetwork
from .adapter_ops import BoundAdaptiveAvgPool2d, BoundBatchNorm
from .lif import BoundLIF
from .spatial import BoundAvgPool2d, BoundConv2d, BoundFlatten, BoundLinear, BoundMaxPool2d, BoundOp

__all__ = ["BoundStage", "bound_op", "bound_graph", "bound_view", "readout_matrix"]

_OPS: dict[type[nn.Module], type[BoundOp]] = {
    StepBatchNorm: BoundBatchNorm,
    nn.AdaptiveAvgPool2d: BoundAdaptiveAvgPool2d,
    nn.Linear: BoundLinear,
    nn.Conv2d: BoundConv2d,
    nn.AvgPool2d: BoundAvgPool2d,
    nn.MaxPool2d: BoundMaxPool2d,
    nn.Flatten: BoundFlatten,
}


def bound_op(module: nn.Module, name: str) -> BoundOp:
    """The bound operator of a spatial layer (one class per layer type), after refusing
    settings the operators do not cover (:func:`~snn_robust.layers.check_supported`)."""
    check_supported(module, name)
    for kind, op in _OPS.items():
        if isinstance(module, kind):
            return op(module, name)
    raise UnsupportedLayerError(f"layer {name} ({type(module).__name__}) has no bound operator")


@dataclass(frozen=True)
class BoundStage:
    """The bound operators of one stage: the spatial layers in front of one LIF layer
    (``ops``, in order), and that layer (``neuron``)."""

    ops: list[BoundOp]
    neuron: BoundLIF
    name: str

    def input_op(self) -> int:
        """The index of the first operator that is not a reshape (``Flatten``): in the
        first stage, the layer that reads the network input, where S-CROWN concretises;
        ``len(ops)`` if there is none."""
        first = 0
        while first < len(self.ops) and isinstance(self.ops[first], BoundFlatten):
            first += 1
        return first


_GRAPHS: WeakKeyDictionary[SpikingNetwork, list[BoundStage]] = WeakKeyDictionary()


def bound_graph(network: SpikingNetwork) -> list[BoundStage]:
    """The network's bound stages, built once per network object."""
    graph = _GRAPHS.get(network)
    if graph is None:
        graph = [
            BoundStage(
                [bound_op(layer, name) for layer, name in zip(stage.spatial, stage.spatial_names)],
                BoundLIF(stage.lif, stage.name),
                stage.name,
            )
            for stage in network.stages
        ]
        _GRAPHS[network] = graph
    return graph


def bound_view(network: SpikingNetwork, graph: list[BoundStage]) -> SpikingNetwork:
    """A shallow copy of ``network`` (sharing every module and parameter) that the bound
    engine sees through ``graph`` instead: e.g. its first layer's operator swapped for one
    over a larger input set (:func:`~snn_robust.certificates.event_l0_bounds`)."""
    view = copy.copy(network)
    _GRAPHS[view] = list(graph)
    return view


def readout_matrix(readout: RateReadout, neuron_shape: Sequence[int], like: Tensor) -> tuple[Tensor, Tensor | None]:
    """``(W [C, N], b [C] or None)`` of a readout's class scores ``W rate + b`` on the output
    neurons of shape ``neuron_shape`` (``N`` their number). A linear chain's ``W`` is its
    layers transposed on the identity, last to first (the S-CROWN backward, exact for
    affine layers), and ``b = f(0)``; a single ``nn.Linear`` gives its Parameters
    themselves."""
    if readout.kind == "voting":
        return readout.voting_matrix(math.prod(neuron_shape), like), None
    neuron_shape = tuple(neuron_shape)
    linear = readout.linear
    if isinstance(linear, nn.Linear) and len(neuron_shape) == 1:  # W and b are the Parameters themselves
        if linear.in_features != neuron_shape[0]:
            raise ValueError(
                f"readout {readout.names[0]} (nn.Linear) takes {linear.in_features} features but the last "
                f"spiking layer has {neuron_shape[0]} neurons"
            )
        return linear.weight, linear.bias
    ops = [bound_op(layer, name) for layer, name in zip(readout.layers, readout.names)]
    x = like.new_zeros(1, *neuron_shape)
    inputs = []
    for op in ops:
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
    for op, inp in zip(reversed(ops), reversed(inputs)):
        A, _ = op.backward(A, inp, inp)
    return A.reshape(C, -1), b
