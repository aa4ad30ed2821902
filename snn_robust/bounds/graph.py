"""The bound graph of a network: per stage, its spatial bound operators and the bound LIF
operator that closes it.

Built by the bound engine from a :class:`~snn_robust.SpikingNetwork` on first use and
cached per network object (weakly: the graph goes with the network), so the network
itself knows nothing of bounds. The operators wrap the network's own modules and read
their parameters live, so one graph serves every call, through training and ``.to()``.
"""
from __future__ import annotations

from dataclasses import dataclass
from weakref import WeakKeyDictionary

from ..network import SpikingNetwork
from .lif import BoundLIF, bound_lif
from .spatial import BoundOp

__all__ = ["BoundStage", "bound_graph"]


@dataclass(frozen=True)
class BoundStage:
    """The bound operators of one stage: the spatial layers in front of one LIF layer
    (``ops``, in order), and that layer (``neuron``)."""

    ops: list[BoundOp]
    neuron: BoundLIF
    name: str


_GRAPHS: WeakKeyDictionary[SpikingNetwork, list[BoundStage]] = WeakKeyDictionary()


def bound_graph(network: SpikingNetwork) -> list[BoundStage]:
    """The network's bound stages, built once per network object."""
    graph = _GRAPHS.get(network)
    if graph is None:
        graph = [BoundStage(list(stage.ops), bound_lif(stage.lif, stage.name), stage.name) for stage in network.stages]
        _GRAPHS[network] = graph
    return graph
