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

from .errors import UnsupportedLayerError
from .layers import RateReadout, StepBatchNorm, check_supported
from .neuron import LIF
from .validation import check_all_finite, check_positive_int

__all__ = ["SpikingNetwork", "Stage", "SPATIAL_LAYERS"]

SPATIAL_LAYERS: tuple[type[nn.Module], ...] = (
    nn.Linear, nn.Conv2d, nn.AvgPool2d, nn.MaxPool2d, nn.Flatten, nn.AdaptiveAvgPool2d, StepBatchNorm
)
INPUT_CODINGS = ("spike", "direct")


@dataclass
class Stage:
    """The spatial layers in front of one LIF layer (and their display names), and that
    LIF layer. The bound engine builds its operators from these
    (:func:`~snn_robust.bounds.graph.bound_graph`)."""

    spatial: list[nn.Module]
    spatial_names: list[str]
    lif: LIF
    name: str


def first_float_tensor(module: nn.Module) -> Tensor | None:
    """The first floating parameter of ``module``, else its first floating buffer: where
    its device and dtype can be read."""
    for t in module.parameters():
        if t.is_floating_point():
            return t
    for t in module.buffers():
        if t.is_floating_point():
            return t
    return None


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
        input_shape: optional per-sample input shape (e.g. ``(1, 28, 28)``). When given,
            inputs and input bounds whose trailing shape differs are refused; this is what
            catches a missing time dimension (``[B, 1, 28, 28]`` read as ``T = B``), which
            a Flatten + Linear network cannot tell from its layers alone.
        readout: optional class scores linear in the output rates
            (:class:`~snn_robust.layers.RateReadout`: a time-averaged
            ``nn.Linear`` or chain of affine layers such as a ``Conv2d`` head, a voting
            layer); the bounds are then on these scores.

    Calling the network on ``x`` of shape ``[T, B, *input_shape]`` simulates it from zero
    state and returns the output rates ``[B, C]`` (mean output spikes over ``T``), or the
    readout's class scores of those rates.

    Checks (``ValueError`` naming the layer by its name or path): neuron parameters in
    range and finite, spatial weights and biases finite (:meth:`check_parameters`, at
    construction and before every bound computation); inputs time-major with ``T >= 1``
    and a per-sample shape every layer can take (:meth:`check_input`; a shape that
    passes is remembered, so the check costs one trial pass per new shape).

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
        input_shape: Sequence[int] | None = None,
        readout: RateReadout | None = None,
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
        if readout is not None and not isinstance(readout, RateReadout):
            raise TypeError(f"readout must be a RateReadout (class scores linear in the rates), got {type(readout).__name__}")
        self.readout = readout  # class scores = readout(rates); None: the rates are the scores
        self.check_parameters()
        self._shapes_ok: set[tuple[int, ...]] = set()
        self.input_shape: tuple[int, ...] | None = None
        if input_shape is not None:
            shape = tuple(check_positive_int(f"input_shape[{i}]", n) for i, n in enumerate(input_shape))
            self._check_sample_shape(shape, f"input_shape {shape}")
            self.input_shape = shape

    @staticmethod
    def _build_stages(layers: list[nn.Module], names: list[str]) -> list[Stage]:
        if not layers:
            raise ValueError("a SpikingNetwork needs at least one LIF layer")
        stages, spatial, spatial_names = [], [], []
        for layer, name in zip(layers, names):
            if isinstance(layer, LIF):
                stages.append(Stage(spatial, spatial_names, layer, name))
                spatial, spatial_names = [], []
            elif isinstance(layer, SPATIAL_LAYERS):
                check_supported(layer, name)  # settings the bounds do not cover are refused now, by name
                spatial.append(layer)
                spatial_names.append(name)
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
        """Output size when the last spatial layer (and the readout) fix it, else ``None``
        (e.g. a readout ending in a ``Conv2d``, whose size depends on the input shape)."""
        n_out = next((layer.out_features for layer in reversed(self.layers) if isinstance(layer, nn.Linear)), None)
        return n_out if self.readout is None else self.readout.classes(n_out)

    @property
    def dtype(self) -> torch.dtype:
        """The floating dtype the network computes in (its first floating parameter or
        buffer; the default dtype if it has none)."""
        t = first_float_tensor(self)
        return t.dtype if t is not None else torch.get_default_dtype()

    @property
    def device(self) -> torch.device:
        t = first_float_tensor(self)
        return t.device if t is not None else torch.device("cpu")

    def check_parameters(self) -> None:
        """Raise ``ValueError`` naming the layer if a LIF parameter leaves its proven range
        (:meth:`LIF.check_parameters`) or a spatial layer's weight or bias holds a NaN or
        an infinity. Cheap enough for every training step: one fused sum per parameter
        (:func:`~snn_robust.validation.check_all_finite`) and one device sync for all of them,
        plus one for all LIF layers (:meth:`LIF.parameters_ok`)."""
        wheres = [f"layer {stage.name} ({stage.lif.layer_kind})" for stage in self.stages]
        flags = [stage.lif.parameters_ok(where) for stage, where in zip(self.stages, wheres)]
        if flags and not bool(torch.stack([f.to(flags[0].device) for f in flags]).all()):
            for stage, where in zip(self.stages, wheres):  # the failure path: the first bad layer, by name
                stage.lif.check_parameters(where)
        named = [
            (f"layer {name} ({type(layer).__name__}) {pname}", p)
            for stage in self.stages
            for layer, name in zip(stage.spatial, stage.spatial_names)
            for pname, p in layer.named_parameters()
        ]
        if self.readout is not None:  # class scores linear in the rates
            named += [(f"readout {pname}", p) for pname, p in self.readout.named_parameters()]
        check_all_finite(
            named,
            "bounds of a network with non-finite weights mean nothing (a diverged training step? restore a "
            "checkpoint or lower the learning rate)",
        )

    def check_input(self, x: Tensor, what: str = "input", steps: str = "T") -> None:
        """Raise ``ValueError`` unless ``x`` is time-major ``[T, B, *input_shape]`` with
        ``T >= 1`` and a per-sample shape the layers accept; the message names the layer
        that cannot take it and the shape the network expects (``steps`` is the letter
        used for the time dimension in messages, ``T'`` for input bounds)."""
        if not isinstance(x, Tensor):
            raise TypeError(f"{what} must be a tensor [{steps}, B, ...], got {type(x).__name__}")
        layout = f"time-major [{steps}, B, *input_shape]"
        shape = tuple(x.shape)
        if x.dim() < 3:
            raise ValueError(f"{what} of shape {shape}: expected {layout}; {self._expected_input()}")
        if x.shape[0] == 0:
            raise ValueError(f"{what} of shape {shape}: no time steps ({steps} = 0); expected {layout} with {steps} >= 1")
        sample = shape[2:]
        if self.input_shape is not None and sample != self.input_shape:
            missing = " (is the time dimension missing?)" if shape[1:] == self.input_shape else ""
            raise ValueError(
                f"{what} of shape {shape}: read as {layout}, the per-sample shape is {sample}, but this network "
                f"takes input_shape {self.input_shape}{missing}; pass [{steps}, B, {', '.join(map(str, self.input_shape))}]"
            )
        self._check_sample_shape(sample, f"{what} of shape {shape} ({layout})")

    def _expected_input(self) -> str:
        """What the network takes per sample, as far as it knows (for error messages)."""
        if self.input_shape is not None:
            return f"this network's input_shape is {self.input_shape}"
        for stage in self.stages:
            for layer, name in zip(stage.spatial, stage.spatial_names):
                wants = _layer_wants(layer)
                if wants:
                    return f"this network's first weighted layer {name} ({type(layer).__name__}) takes {wants}"
        return "see the network's first layer"

    def _check_sample_shape(self, sample: tuple[int, ...], what: str) -> None:
        """Run zero samples of shape ``sample`` through the spatial layers (LIF layers
        keep shapes) and turn torch's shape error into one naming the layer. Conv and
        pooling layers get an explicit rank check, since torch would read a 3-D batch as
        one unbatched image."""
        if sample in self._shapes_ok:
            return
        # two samples: a layer using batch statistics (BatchNorm without running ones) needs more than one
        x = torch.zeros((2, *sample), dtype=self.dtype, device=self.device)
        with torch.no_grad():
            for stage in self.stages:
                for layer, name in zip(stage.spatial, stage.spatial_names):
                    error = ""
                    if isinstance(layer, (nn.Conv2d, nn.AvgPool2d, nn.MaxPool2d, nn.AdaptiveAvgPool2d)) and x.dim() != 4:
                        error = f"it needs 3 dimensions [C, H, W] per sample, got {x.dim() - 1}"
                    else:
                        try:
                            x = layer(x)
                        except RuntimeError as exc:
                            error = f"torch: {str(exc).splitlines()[0]}"
                    if error:
                        wants = _layer_wants(layer)
                        expected = self._expected_input()
                        raise ValueError(
                            f"{what}: layer {name} ({type(layer).__name__}) cannot take the per-sample shape "
                            f"{tuple(x.shape[1:])} that reaches it{f'; it takes {wants}' if wants else ''} ({error})"
                            + ("" if f" {name} (" in expected else f"; {expected}")
                        ) from None
        self._shapes_ok.add(sample)

    def simulate(self, x: Tensor) -> list[Tensor]:
        """Spike trains ``[T, B, N...]`` of every LIF layer for the input ``[T, B, ...]``."""
        self.check_input(x)
        trains = []
        for stage in self.stages:
            for layer in stage.spatial:
                # a layer whose step function depends on time (BatchNorm statistics per step) takes [T, B, ...]
                by_time = getattr(layer, "forward_time", None)
                x = by_time(x) if by_time is not None else fold_time(x, layer)
            x = stage.lif(x)
            trains.append(x)
        return trains

    def forward(self, x: Tensor) -> Tensor:
        """Output rates ``[B, C]`` (or the readout's class scores of them) for the input
        ``x`` ``[T, B, *input_shape]``."""
        rates = self.simulate(x)[-1].mean(0)  # [B, N...]: a readout may need the neuron shape (a Conv2d head)
        return rates.flatten(1) if self.readout is None else self.readout(rates)


def _layer_wants(layer: nn.Module) -> str:
    """What a weighted layer takes per sample, for error messages."""
    if isinstance(layer, nn.Linear):
        return f"{layer.in_features} features in its last dimension (e.g. a flattened sample of {layer.in_features})"
    if isinstance(layer, nn.Conv2d):
        return f"[{layer.in_channels}, H, W] with H, W at least its kernel {tuple(layer.kernel_size)}"
    if isinstance(layer, (nn.AvgPool2d, nn.MaxPool2d)):
        return "[C, H, W]"
    return ""
