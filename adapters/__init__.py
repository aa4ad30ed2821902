"""Framework adapters: turn an snnTorch or SpikingJelly model into a
:class:`~snn_robust.SpikingNetwork` that shares its parameters.

The frameworks are imported only when a conversion is asked for, so ``snn_robust``
imports without either of them installed. Installed as ``snn_robust.adapters``.
"""
from __future__ import annotations

__all__ = ["from_snntorch", "from_spikingjelly"]


def from_snntorch(model, example_input=None, input_coding=None, surrogate=None, input_shape=None, num_classes=None):
    """Convert an snnTorch model (an ``nn.Sequential``, or any chain-shaped model given
    ``example_input``); see :func:`snn_robust.adapters.snntorch_adapter.from_snntorch`."""
    from .snntorch_adapter import from_snntorch as convert

    return convert(
        model, example_input, input_coding=input_coding, surrogate=surrogate, input_shape=input_shape, num_classes=num_classes
    )


def from_spikingjelly(model, example_input=None, input_coding=None, surrogate=None, input_shape=None):
    """Convert a SpikingJelly (2.0.0 or 0.0.0.0.14) model (an ``nn.Sequential``, or any
    chain-shaped model given ``example_input``); see
    :func:`snn_robust.adapters.spikingjelly_adapter.from_spikingjelly`."""
    from .spikingjelly_adapter import from_spikingjelly as convert

    return convert(model, example_input, input_coding=input_coding, surrogate=surrogate, input_shape=input_shape)
