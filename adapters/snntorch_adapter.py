"""snnTorch -> :class:`~snn_robust.SpikingNetwork`.

Shape glossary: ``T`` time steps, ``B`` batch, ``N...`` a layer's neuron shape.

The user's snnTorch model is an ``nn.Sequential`` run one step at a time
(``for t: out = model(x[t])`` with ``init_hidden=True`` neurons, ``utils.reset(model)``
between samples). The converted network takes the whole ``[T, B, ...]`` input.

The neuron twin (snnTorch's ``Leaky`` step and its floating-point order):
:mod:`.snntorch_neuron`.
"""
from __future__ import annotations

from typing import Callable, Sequence

from torch import Tensor, nn

from snn_robust.errors import UnsupportedLayerError
from snn_robust.layers import RateReadout
from snn_robust.validation import check_positive_int

from ._common import (
    ROOT,
    Collected,
    batchnorm_twin,
    check_dropout,
    check_heaviside,
    child_path,
    flatten_twin,
    plain_sequential,
    qualname,
    refuse_batchnorm,
    require_sequential,
    scan_layers,
)
from ._trace import Call, convert_traced
from .snntorch_neuron import SnnTorchLeaky, reset_kind

__all__ = ["from_snntorch", "SnnTorchLeaky"]

_END_HINT = "end the model with snntorch.Leaky(..., init_hidden=True, output=True) (e.g. after the last nn.Linear)"


def from_snntorch(
    model: nn.Module,
    example_input: Tensor | tuple | None = None,
    input_coding: str | None = None,
    surrogate: Callable | None = None,
    input_shape: Sequence[int] | None = None,
    num_classes: int | None = None,
):
    """Convert an snnTorch model to a :class:`~snn_robust.SpikingNetwork`.

    Args:
        model: a chain of ``nn.Linear``, ``nn.Conv2d``, ``nn.AvgPool2d``,
            ``nn.MaxPool2d``, ``nn.AdaptiveAvgPool2d`` (where it equals an average pool),
            ``nn.BatchNorm1d/2d``, ``nn.Flatten`` (any spelling that flattens the whole
            per-step sample), ``nn.Identity``, ``nn.Dropout`` (in eval mode: identity) and
            ``snntorch.Leaky``, ending in a ``Leaky``: either an ``nn.Sequential``
            (nested ones are fine) of ``Leaky(init_hidden=True)`` run one step per call
            (the last may have ``output=True``), or any module whose forward runs such a
            chain over the steps (tutorial 5's ``Net``: membrane passed explicitly with
            ``init_hidden=False``, or kept with ``init_hidden=True``), given
            ``example_input``.
        example_input: one input exactly as ``model(...)`` takes it (a tuple for several
            positional arguments); required when ``model`` is not an ``nn.Sequential``.
            The model is run once on it to read the chain of layers (module call order and
            tensor flow) and the converted network's spikes at every layer are checked
            against that run bit for bit (refused, saying where, if they differ). The run
            leaves the model as it was (states reset, buffers restored).
        input_coding: ``"spike"`` for binary spike inputs, ``"direct"`` when the first
            layer gets analog currents. Default: ``"spike"`` without ``example_input``;
            with it, ``"direct"`` when the first layer gets the same input at every step
            (tutorial 5) or non-binary values, else ``"spike"``.
        surrogate: the surrogate gradient the bounds use in training (default: the
            paper's rectangular one); the forward pass is always the exact step.
        input_shape: the per-sample input shape (e.g. ``(1, 28, 28)``), optional; with it
            the network refuses inputs and bounds of another trailing shape (see
            :class:`~snn_robust.SpikingNetwork`).
        num_classes: for population coding (snnTorch's ``ce_rate_loss`` /
            ``mse_count_loss`` with ``population_code=True, num_classes=C``): the ``N``
            output neurons form ``C`` contiguous groups of ``N / C``, and class ``c``
            scores the mean rate of its group (snnTorch sums the group: the same up to the
            factor ``N / C``). Labels are then checked against ``C``. ``None``: one output
            neuron per class.

    Returns:
        A network that shares the model's parameters (the same ``nn.Parameter``
        objects: gradients of a certified loss land in the user's model) and whose
        spikes equal snnTorch's step loop bit for bit. It takes, time-major
        ``[T, B, ...]``, what the chain's first layer receives at each step.

    Raises:
        UnsupportedLayerError: a module type that is not supported (other neurons,
            BatchNorm3d), a model that is not an ``nn.Sequential`` given without
            ``example_input``, or a forward that is not a chain of module calls; named
            with its path in the user's model.
        ValueError: a supported module with an unsupported setting (``init_hidden=False``
            in an ``nn.Sequential``, ``reset_mechanism="none"``, ``inhibition``,
            ``state_quant``, graded spikes, ``reset_delay=False`` with the subtract reset,
            ``output=True`` before the last layer of a Sequential, dropout in training
            mode), converted spikes that differ from the model's on ``example_input``, a model that does not end in a ``Leaky``, a NaN or infinite
            ``beta``, ``threshold``, weight or bias (named by its path, e.g. ``model.1``;
            checked again before every bound computation), or an ``input_shape`` the
            layers cannot take.

    Example::

        >>> net = snn_robust.from_snntorch(model)      # model: nn.Sequential with Leaky
        >>> net = snn_robust.from_snntorch(Net(), example_input=images)   # tutorial 5
        >>> lb = snn_robust.compute_bounds(net, lower, upper, labels)   # [T', B, ...] bounds
    """
    import snntorch

    if isinstance(example_input, str):
        raise TypeError(f"example_input must be a tensor, got the string {example_input!r}: pass input_coding=... by name")
    is_neuron = lambda layer: isinstance(layer, SnnTorchLeaky)  # noqa: E731
    if example_input is not None:
        converter = _Converter(snntorch, surrogate, traced=True)
        net = convert_traced(
            model,
            example_input,
            known=converter.known,
            walk=converter.walk,
            per_step=True,
            reset=_reset_leaky,
            is_neuron=is_neuron,
            end_hint=_END_HINT,
            input_coding=input_coding,
            input_shape=input_shape,
            check_calls=_check_membranes_passed,
        )
        return _population(net, num_classes)
    require_sequential(model, "snntorch", scan=lambda: _Converter(snntorch, surrogate, traced=True).scan(model))
    out = Collected()
    converter = _Converter(snntorch, surrogate)
    converter.walk(model, ROOT, out)
    net = out.build(is_neuron, input_coding or "spike", _END_HINT, input_shape)
    last = out.sources[-1]
    for leaky, path in converter.outputs:
        if leaky is not last:
            raise ValueError(
                f"{path} (snntorch.Leaky) has output=True but is not the last layer: it returns (spk, mem), which "
                "an nn.Sequential would pass on as a tuple; set output=True only on the last Leaky"
            )
    return _population(net, num_classes)


def _population(net, num_classes: int | None):
    """Attach the population-code readout (see ``num_classes`` in :func:`from_snntorch`)."""
    if num_classes is None:
        return net
    num_classes = check_positive_int("num_classes", num_classes)
    if net.readout is not None:
        raise ValueError(f"num_classes={num_classes} given, but the model already ends in a readout ({net.readout})")
    n_out = net.num_classes
    if n_out is None:
        raise ValueError(
            f"num_classes={num_classes}: the number of output neurons is not fixed by an nn.Linear before the last Leaky, "
            "so the population groups cannot be formed"
        )
    if n_out % num_classes:
        raise ValueError(
            f"num_classes={num_classes} does not divide the {n_out} output neurons: snnTorch's population code then "
            "gives classes groups of different sizes, which is not supported; use a multiple of num_classes"
        )
    if n_out != num_classes:
        net.readout = RateReadout("voting", group=n_out // num_classes)
    return net


def _reset_leaky(model: nn.Module) -> None:
    import snntorch

    for module in model.modules():
        if isinstance(module, snntorch.Leaky):
            module.reset_mem()


def _check_membranes_passed(items: list[Call], period: int) -> None:
    """A ``Leaky(init_hidden=False)`` must get, at each step, the membrane it returned at
    the step before (zero at the first): the twin carries its state that way."""
    import snntorch

    for k in range(period):
        leaky = items[k].module
        if not isinstance(leaky, snntorch.Leaky) or leaky.init_hidden:
            continue
        for t in range(len(items) // period):
            call = items[t * period + k]
            mem = call.args[1] if len(call.args) > 1 else call.kwargs.get("mem")
            if t == 0:
                ok = mem is None or not bool(mem.any())
            else:
                before = items[(t - 1) * period + k].output
                ok = isinstance(before, tuple) and mem is before[1]
            if not ok:
                name = call.path.removeprefix(ROOT + ".")
                raise ValueError(
                    f"{call.path} (snntorch.Leaky, init_hidden=False) gets at step {t} a membrane that is not "
                    f"{'zero' if t == 0 else 'the one it returned at the step before'}: write mem = "
                    f"self.{name}.init_leaky() before the step loop and spk, mem = self.{name}(cur, mem) in it"
                )


class _Converter:
    def __init__(self, snntorch, surrogate, traced: bool = False) -> None:
        self.snntorch = snntorch
        self.surrogate = surrogate
        self.traced = traced  # the chain is read from a run: a Leaky may carry its membrane explicitly
        self.outputs: list[tuple[nn.Module, str]] = []  # Leaky layers with output=True
        # One conversion table: exact module type -> handler(module, path, out).
        self.table = {
            nn.Linear: self._keep,
            nn.Conv2d: self._keep,
            nn.AvgPool2d: self._keep,
            nn.MaxPool2d: self._keep,
            nn.AdaptiveAvgPool2d: self._keep,
            nn.BatchNorm1d: self._batchnorm,
            nn.BatchNorm2d: self._batchnorm,
            nn.Flatten: self._flatten,
            nn.Identity: self._skip,
            nn.Dropout: self._dropout,
            nn.Sequential: self.walk_children,
            snntorch.Leaky: self._leaky,
        }

    def known(self, module: nn.Module) -> bool:
        return type(module) in self.table or plain_sequential(module)

    def scan(self, model: nn.Module) -> None:
        """Check every leaf module of ``model`` on its own (refusals name the real blocker)."""
        scan_layers(model, ROOT, self.known, lambda module, path: self.walk(module, path, Collected()))

    def walk(self, module: nn.Module, path: str, out: Collected) -> None:
        handler = self.table.get(type(module))
        if handler is None and plain_sequential(module):
            handler = self.table[nn.Sequential]
        if handler is None:
            self._refuse(module, path)
        handler(module, path, out)

    def walk_children(self, module: nn.Module, path: str, out: Collected) -> None:
        for name, child in module.named_children():
            self.walk(child, child_path(path, name), out)

    # -- handlers -------------------------------------------------------------------
    @staticmethod
    def _keep(module: nn.Module, path: str, out: Collected) -> None:
        out.add(module, path, module)

    @staticmethod
    def _skip(module: nn.Module, path: str, out: Collected) -> None:
        pass

    @staticmethod
    def _dropout(module: nn.Module, path: str, out: Collected) -> None:
        check_dropout(module, path)

    @staticmethod
    def _batchnorm(module: nn.Module, path: str, out: Collected) -> None:
        out.add(batchnorm_twin(module, path, per_step=True), path, module)

    @staticmethod
    def _flatten(module: nn.Flatten, path: str, out: Collected) -> None:
        twin = flatten_twin(
            module,
            path,
            start=1,
            message=lambda: (
                f"{path} (nn.Flatten) has start_dim={module.start_dim}, end_dim={module.end_dim}: a step input is "
                "[B, ...], so only a flatten of every dimension after the batch keeps the samples apart; use nn.Flatten()"
            ),
        )
        out.add(module if twin is None else twin, path, module)

    def _leaky(self, leaky: nn.Module, path: str, out: Collected) -> None:
        reset = reset_kind(leaky, path)
        if not leaky.init_hidden and not self.traced:
            raise ValueError(
                f"{path} (snntorch.Leaky) has init_hidden=False: it takes and returns its membrane explicitly, "
                "which an nn.Sequential cannot carry; build it with init_hidden=True (and output=True on the last one), "
                "or pass example_input for a model whose forward carries the membrane"
            )
        if leaky.inhibition:
            raise ValueError(
                f"{path} (snntorch.Leaky) has inhibition=True (only the neuron with the largest membrane may spike), "
                "which couples the neurons of a layer and has no bound here; use inhibition=False"
            )
        if leaky.state_quant:
            raise ValueError(
                f"{path} (snntorch.Leaky) has state_quant set: a quantised membrane is not the LIF update the bounds "
                "cover; use state_quant=False"
            )
        gsf = leaky.graded_spikes_factor
        if isinstance(gsf, nn.Parameter) or not bool((gsf == 1).all()):
            raise ValueError(
                f"{path} (snntorch.Leaky) has graded spikes (graded_spikes_factor={_show(gsf)}, learnable="
                f"{isinstance(gsf, nn.Parameter)}): the bounds assume binary spikes; use graded_spikes_factor=1.0 "
                "and learn_graded_spikes_factor=False"
            )
        if not leaky.reset_delay and reset == "subtract":
            raise ValueError(
                f"{path} (snntorch.Leaky) has reset_delay=False with reset_mechanism='subtract': snnTorch then "
                "subtracts the threshold at the spike and again at the next step when the reset membrane is still "
                "above it (adding it back when no spike follows), a second state bit that is not a LIF neuron; "
                "use reset_delay=True (the default) or reset_mechanism='zero'"
            )
        check_heaviside(leaky.spike_grad, inclusive=False, path=path, what="snntorch.Leaky spike_grad")
        twin = SnnTorchLeaky(leaky, reset, leaky.reset_delay, self.surrogate)
        if leaky.output and not self.traced:
            self.outputs.append((leaky, path))
        out.add(twin, path, leaky)

    def _refuse(self, module: nn.Module, path: str) -> None:
        refuse_batchnorm(module, path)
        sn = self.snntorch
        if isinstance(module, sn.SpikingNeuron):
            kind = type(module).__name__
            why = {
                "RLeaky": "a recurrent neuron (its spikes feed back through a weight)",
                "RSynaptic": "a recurrent neuron with a synaptic current",
                "Synaptic": "a neuron with a synaptic current (a second state variable)",
                "Alpha": "a neuron with two synaptic currents",
                "Lapicque": "an RC neuron model not handled here",
                "SLSTM": "a recurrent LSTM neuron",
                "SConv2dLSTM": "a recurrent LSTM neuron",
            }.get(kind, "a neuron model not handled here")
            if isinstance(module, sn.Leaky):
                why = "a subclass of snntorch.Leaky whose forward may differ"
            raise UnsupportedLayerError(
                f"{path} (snntorch.{kind}) is not supported: it is {why}. snn_robust bounds the LIF neuron: "
                "use snntorch.Leaky(beta=..., init_hidden=True) instead"
            )
        supported = (
            "nn.Linear, nn.Conv2d, nn.AvgPool2d, nn.MaxPool2d, nn.AdaptiveAvgPool2d, nn.BatchNorm1d, nn.BatchNorm2d, "
            "nn.Flatten, nn.Identity, nn.Dropout, snntorch.Leaky"
        )
        if isinstance(module, nn.Sequential) or len(list(module.children())) > 0:
            raise UnsupportedLayerError(
                f"{path} ({qualname(module)}) is a custom container whose forward cannot be read: express it as an "
                f"nn.Sequential of supported layers ({supported})"
            )
        raise UnsupportedLayerError(
            f"{path} ({qualname(module)}) is not supported; supported layers are {supported} inside nn.Sequential"
        )


def _show(t: Tensor) -> str:
    return f"{t.item():g}" if t.numel() == 1 else f"tensor of shape {tuple(t.shape)}"
