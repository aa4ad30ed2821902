"""The bound-propagatable spiking network: spatial layers and LIF layers in sequence.

Shape glossary: ``T`` time steps, ``B`` batch, ``C`` classes.

A network is a flat sequence of torch spatial layers (``nn.Linear``, ``nn.Conv2d``,
``nn.AvgPool2d``, ``nn.MaxPool2d``, ``nn.Flatten``) and :class:`~snn_robust.LIF` layers,
ending in a LIF layer whose mean spike count over the steps is the output rate
(rate readout). The spatial layers between two LIF layers form one *stage*: their
composition is the spatial update ``sp_t`` of Eq. 3 for the LIF that closes the stage.
Spatial layers are the user's own modules (their ``nn.Parameter`` objects are shared,
not copied), which is how the adapters put certified-loss gradients into a user's model.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import torch
from torch import Tensor, nn

from .bounds.spatial import BoundOp, bound_op
from .errors import UnsupportedLayerError
from .neuron import LIF

__all__ = ["SpikingNetwork", "Stage", "SPATIAL_LAYERS"]

SPATIAL_LAYERS: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv2d, nn.AvgPool2d, nn.MaxPool2d, nn.Flatten)
INPUT_CODINGS = ("spike", "direct")


@dataclass
class Stage:
    """The spatial layers in front of one LIF layer, and that LIF layer."""

    spatial: list[nn.Module]
    ops: list[BoundOp]
    lif: LIF
    name: str


def fold_time(x: Tensor, fn) -> Tensor:
    """Apply a stateless layer to ``[T, B, ...]`` by folding time into the batch."""
    y = fn(x.reshape(x.shape[0] * x.shape[1], *x.shape[2:]))
    return y.reshape(x.shape[0], x.shape[1], *y.shape[1:])


class SpikingNetwork(nn.Module):
    """A sequential SNN with a rate readout.

    Args:
        layers: spatial layers and LIF layers in order; the last must be a LIF layer.
        input_coding: ``"spike"`` (binary spike input, rate-coded digital images or event
            frames) or ``"direct"`` (analog currents into the first spatial layer).
        names: optional display names of the layers (their path in a source model),
            used in error messages.

    Calling the network on ``x`` of shape ``[T, B, *input_shape]`` simulates it from zero
    state and returns the output rates ``[B, C]`` (mean output spikes over ``T``).

    Example::

        >>> net = SpikingNetwork([nn.Flatten(), nn.Linear(784, 10), LIF()])
        >>> net(torch.rand(10, 4, 1, 28, 28).bernoulli()).shape
        torch.Size([4, 10])
    """

    def __init__(
        self,
        layers: Sequence[nn.Module],
        input_coding: Literal["spike", "direct"] = "spike",
        names: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        if input_coding not in INPUT_CODINGS:
            raise ValueError(f"input_coding must be one of {INPUT_CODINGS}, got {input_coding!r}")
        layers = list(layers)
        names = list(names) if names is not None else [str(i) for i in range(len(layers))]
        if len(names) != len(layers):
            raise ValueError(f"got {len(names)} names for {len(layers)} layers")
        self.input_coding = input_coding
        self.layers = nn.ModuleList(layers)
        self.layer_names = names
        self.stages = self._build_stages(layers, names)

    @staticmethod
    def _build_stages(layers: list[nn.Module], names: list[str]) -> list[Stage]:
        if not layers:
            raise ValueError("a SpikingNetwork needs at least one LIF layer")
        stages, spatial, ops = [], [], []
        for layer, name in zip(layers, names):
            if isinstance(layer, LIF):
                layer.check_parameters(f"layer {name} (LIF)")
                stages.append(Stage(spatial, ops, layer, name))
                spatial, ops = [], []
            elif isinstance(layer, SPATIAL_LAYERS):
                spatial.append(layer)
                ops.append(bound_op(layer, name))
            else:
                supported = ", ".join(t.__name__ for t in SPATIAL_LAYERS + (LIF,))
                raise UnsupportedLayerError(
                    f"layer {name} ({type(layer).__name__}) is not supported; supported layers: {supported}"
                )
        if spatial:
            raise ValueError(
                f"the network must end in a LIF layer (rate readout of its spikes), but layer {names[-1]} "
                f"({type(layers[-1]).__name__}) comes last"
            )
        return stages

    @property
    def num_classes(self) -> int | None:
        """Output size when the last spatial layer fixes it (Linear), else ``None``."""
        for layer in reversed(self.layers):
            if isinstance(layer, nn.Linear):
                return layer.out_features
        return None

    def check_input(self, x: Tensor, what: str = "input") -> None:
        if x.dim() < 3:
            raise ValueError(f"{what} must be time-major [T, B, ...], got shape {tuple(x.shape)}")

    def simulate(self, x: Tensor) -> list[Tensor]:
        """Spike trains ``[T, B, N...]`` of every LIF layer for the input ``[T, B, ...]``."""
        self.check_input(x)
        trains = []
        for stage in self.stages:
            for layer in stage.spatial:
                x = fold_time(x, layer)
            x = stage.lif(x)
            trains.append(x)
        return trains

    def forward(self, x: Tensor) -> Tensor:
        out = self.simulate(x)[-1]
        return out.mean(0).flatten(1)
