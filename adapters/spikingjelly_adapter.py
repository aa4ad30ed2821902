"""SpikingJelly -> :class:`~snn_robust.SpikingNetwork` (SpikingJelly 2.0.0 and 0.0.0.0.14).

Shape glossary: ``T`` time steps, ``B`` batch, ``N...`` a layer's neuron shape.

The neuron twin and its floating-point order: :mod:`.spikingjelly_neuron`; the walk over
the model and its conversion table: :mod:`.spikingjelly_convert`.

Step modes: in ``'m'`` mode a model takes ``[T, B, ...]``; stateless SpikingJelly layers
fold time into the batch, ``layer.SeqToANNContainer`` does so for the torch layers inside
it and ``layer.MultiStepContainer`` runs its single-step contents step by step. In ``'s'``
mode everything sees one step ``[B, ...]``. Either way every spatial layer applies the
same function at each step, which is what the converted network computes.
"""
from __future__ import annotations

from typing import Callable, Sequence

from torch import Tensor, nn

from ._common import ROOT, Collected, require_sequential
from ._trace import convert_traced
from .spikingjelly_convert import Converter
from .spikingjelly_neuron import SpikingJellyNode

__all__ = ["from_spikingjelly", "SpikingJellyNode"]

_END_HINT = "end the model with a spiking node (e.g. neuron.LIFNode after the last layer.Linear)"


def from_spikingjelly(
    model: nn.Module,
    example_input: Tensor | tuple | None = None,
    input_coding: str | None = None,
    surrogate: Callable | None = None,
    input_shape: Sequence[int] | None = None,
):
    """Convert a SpikingJelly model to a :class:`~snn_robust.SpikingNetwork`.

    Args:
        model: a chain of ``layer.Linear``, ``layer.Conv2d``, ``layer.AvgPool2d``,
            ``layer.MaxPool2d``, ``layer.AdaptiveAvgPool2d`` (where it equals an average
            pool), ``layer.BatchNorm1d/2d``, ``layer.Flatten``, ``layer.Dropout`` (in eval
            mode) and the same torch layers (``nn.Identity`` too), with
            ``neuron.IFNode``, ``neuron.LIFNode`` and ``neuron.ParametricLIFNode``
            (``v_reset=0.`` or ``None``), in one step mode, ending in a node: either an
            ``nn.Sequential`` (nested ones and SpikingJelly's ``SeqToANNContainer``,
            ``MultiStepContainer`` and ``StepModeContainer`` are fine), or any module whose
            forward runs such a chain (the examples' ``CSNN``, ``SNN``, ``MNISTNet``),
            given ``example_input``.
        example_input: one input exactly as ``model(...)`` takes it; required when
            ``model`` is not an ``nn.Sequential``. The model is run once on it to read the
            chain (module call order and tensor flow) and the converted network's spikes
            at every layer are checked against that run bit for bit (refused, saying
            where, if they differ). The run leaves the model as it was (states reset,
            buffers restored).
        input_coding: ``"spike"`` for binary spike inputs, ``"direct"`` when the first
            layer gets analog currents (e.g. an image repeated over the steps). Default:
            ``"spike"`` without ``example_input``; with it, ``"direct"`` when the first
            layer gets the same input at every step (the CSNN's repeat) or non-binary
            values, else ``"spike"``.
        surrogate: the surrogate gradient the bounds use in training (default: the
            paper's rectangular one); the forward pass is always the exact step.
        input_shape: the per-sample input shape (e.g. ``(1, 28, 28)``), optional; with it
            the network refuses inputs and bounds of another trailing shape (see
            :class:`~snn_robust.SpikingNetwork`).

    Returns:
        A network that shares the model's parameters (the same ``nn.Parameter``
        objects) and whose spikes equal SpikingJelly's own forward bit for bit
        (``backend='torch'``; a CuPy-backed 0.0.0.0.14 model in eval mode runs the same
        torch kernels, in training mode its CUDA kernel may round differently).

    Raises:
        UnsupportedLayerError: a module type that is not supported (other nodes,
            spiking BatchNorm variants), a model that is not an ``nn.Sequential`` given
            without ``example_input``, or a forward that is not a chain of module calls;
            named with its path in the user's model.
        ValueError: a supported module with an unsupported setting (a reset voltage other
            than 0, a non-spiking surrogate, mixed step modes, a layer that sees the wrong
            layout, dropout in training mode), converted spikes that differ from the
            model's on ``example_input``, a model that does not end in a node, a NaN or infinite ``tau``,
            ``v_threshold``, ``w``, weight or bias (named by its path, e.g. ``model.1``;
            checked again before every bound computation), or an ``input_shape`` the
            layers cannot take.

    Example::

        >>> net = snn_robust.from_spikingjelly(model)   # model in step_mode 'm' or 's'
        >>> net = snn_robust.from_spikingjelly(CSNN(T=4, channels=8), example_input=images)
        >>> lb = snn_robust.compute_bounds(net, lower, upper, labels)
    """
    from spikingjelly.activation_based import base, layer, neuron

    if isinstance(example_input, str):
        raise TypeError(f"example_input must be a tensor, got the string {example_input!r}: pass input_coding=... by name")
    is_neuron = lambda m: isinstance(m, SpikingJellyNode)  # noqa: E731
    converter = Converter(base, layer, neuron, surrogate, model)
    if example_input is None:
        require_sequential(model, "spikingjelly", scan=lambda: converter.scan(model))
    mode, decided_by = converter.infer_mode(model, ROOT)
    converter.mode, converter.decided_by = mode, decided_by
    if example_input is not None:

        def reset(m: nn.Module) -> None:
            for sub in m.modules():
                if isinstance(sub, base.MemoryModule):
                    sub.reset()

        return convert_traced(
            model,
            example_input,
            known=converter.known,
            walk=lambda module, path, out: converter.walk(module, path, mode, out),
            per_step=mode == "s",
            reset=reset,
            is_neuron=is_neuron,
            end_hint=_END_HINT,
            input_coding=input_coding,
            input_shape=input_shape,
        )
    out = Collected()
    converter.walk(model, ROOT, mode, out)
    return out.build(is_neuron, input_coding or "spike", _END_HINT, input_shape)
