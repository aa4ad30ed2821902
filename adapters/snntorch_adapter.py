"""snnTorch -> :class:`~snn_robust.SpikingNetwork`.

Shape glossary: ``T`` time steps, ``B`` batch, ``N...`` a layer's neuron shape.

The user's snnTorch model is an ``nn.Sequential`` run one step at a time
(``for t: out = model(x[t])`` with ``init_hidden=True`` neurons, ``utils.reset(model)``
between samples). The converted network takes the whole ``[T, B, ...]`` input.

snnTorch 1.0.0's ``Leaky`` (``snntorch/_neurons/leaky.py``), one step with
``beta_c = beta.clamp(0, 1)`` and ``r = fire(mem_{t-1})`` the (detached) spike of the
previous step::

    subtract:  mem_t = beta_c * mem_{t-1} + x_t - r * th
    zero:      mem_t = beta_c * ((1 - r) * mem_{t-1}) + x_t
    spk_t = [mem_t - th > 0]

which is :class:`~snn_robust.LIF` with ``alpha = beta_c``, ``threshold = th``,
``firing=">"``, ``input_scale = 1`` and ``kappa = 1`` (the subtracted threshold is not
decayed). ``reset_delay=False`` resets the returned membrane at once; for the zero reset
the spikes are identical (the reset of the next step then sees a membrane at or below
the threshold and is 0), for the subtract reset it adds a second state bit (see
:func:`from_snntorch`) and is refused.
"""
from __future__ import annotations

from typing import Callable, Sequence

from torch import Tensor, nn

from snn_robust.errors import UnsupportedLayerError
from snn_robust.neuron import LIF

from ._common import (
    ROOT,
    Collected,
    FromSource,
    check_heaviside,
    child_path,
    plain_sequential,
    qualname,
    refuse_batchnorm,
    require_sequential,
)

__all__ = ["from_snntorch", "SnnTorchLeaky"]

_END_HINT = "end the model with snntorch.Leaky(..., init_hidden=True, output=True) (e.g. after the last nn.Linear)"


def _beta(leaky: nn.Module) -> Tensor:
    return leaky.beta.clamp(0, 1)


def _threshold(leaky: nn.Module) -> Tensor:
    return leaky.threshold


class SnnTorchLeaky(LIF):
    """The LIF twin of one ``snntorch.Leaky``: reads ``beta`` and ``threshold`` from it
    (shared, learnable or not) and repeats its floating-point operation order."""

    def __init__(self, leaky: nn.Module, reset: str, reset_delay: bool, surrogate=None) -> None:
        super().__init__(
            alpha=FromSource(leaky, _beta),
            threshold=FromSource(leaky, _threshold),
            reset=reset,
            firing=">",
            input_scale=1.0,
            decay_reset=False,
            surrogate=surrogate,
        )
        self.reset_delay = bool(reset_delay)

    @property
    def layer_kind(self) -> str:
        return "snntorch.Leaky"

    def parameter_checks(self) -> list[tuple[str, Tensor, str]]:
        # beta itself must be finite: snnTorch clamps it to [0, 1], which would turn an
        # infinite beta into a plausible decay of 1.
        return [("beta", self._alpha.source.beta, "finite"), ("threshold", self.threshold, "positive")]

    def charge(self, m_prev: Tensor, s_prev: Tensor, sp: Tensor) -> Tensor:
        beta = self.alpha
        if self.reset == "subtract":  # Leaky._base_sub
            return beta * m_prev + sp - s_prev * self.threshold
        if self.reset_delay:  # Leaky._base_zero
            return beta * ((1 - s_prev) * m_prev) + sp
        # reset_delay=False: mem was already reset as mem - spk * mem at the last step
        return beta * (m_prev - s_prev * m_prev) + sp

    def extra_repr(self) -> str:
        return super().extra_repr() + f", reset_delay={self.reset_delay}"


def from_snntorch(
    model: nn.Module,
    input_coding: str = "spike",
    surrogate: Callable | None = None,
    input_shape: Sequence[int] | None = None,
):
    """Convert an snnTorch model to a :class:`~snn_robust.SpikingNetwork`.

    Args:
        model: an ``nn.Sequential`` (nested ones are fine) of ``nn.Linear``,
            ``nn.Conv2d``, ``nn.AvgPool2d``, ``nn.MaxPool2d``, ``nn.Flatten``,
            ``nn.Identity``, ``nn.Dropout`` (identity, as at eval) and
            ``snntorch.Leaky(init_hidden=True)``, ending in a ``Leaky`` (the last one
            may have ``output=True``).
        input_coding: ``"spike"`` for binary spike inputs, ``"direct"`` when the first
            layer gets analog currents.
        surrogate: the surrogate gradient the bounds use in training (default: the
            paper's rectangular one); the forward pass is always the exact step.
        input_shape: the per-sample input shape (e.g. ``(1, 28, 28)``), optional; with it
            the network refuses inputs and bounds of another trailing shape (see
            :class:`~snn_robust.SpikingNetwork`).

    Returns:
        A network that shares the model's parameters (the same ``nn.Parameter``
        objects: gradients of a certified loss land in the user's model) and whose
        spikes equal snnTorch's step loop bit for bit.

    Raises:
        UnsupportedLayerError: a module type that is not supported (other neurons,
            BatchNorm, a model that is not an ``nn.Sequential``), named with its path.
        ValueError: a supported module with an unsupported setting (``init_hidden=False``,
            ``reset_mechanism="none"``, ``inhibition``, ``state_quant``, graded spikes,
            ``reset_delay=False`` with the subtract reset, ``output=True`` before the
            last layer), a model that does not end in a ``Leaky``, a NaN or infinite
            ``beta``, ``threshold``, weight or bias (named by its path, e.g. ``model.1``;
            checked again before every bound computation), or an ``input_shape`` the
            layers cannot take.

    Example::

        >>> net = snn_robust.from_snntorch(model)      # model: nn.Sequential with Leaky
        >>> lb = snn_robust.compute_bounds(net, lower, upper, labels)   # [T', B, ...] bounds
    """
    import snntorch

    require_sequential(model, "snntorch")
    out = Collected()
    converter = _Converter(snntorch, surrogate)
    converter.walk(model, ROOT, out)
    net = out.build(lambda layer: isinstance(layer, SnnTorchLeaky), input_coding, _END_HINT, input_shape)
    last = out.sources[-1]
    for leaky, path in converter.outputs:
        if leaky is not last:
            raise ValueError(
                f"{path} (snntorch.Leaky) has output=True but is not the last layer: it returns (spk, mem), which "
                "an nn.Sequential would pass on as a tuple; set output=True only on the last Leaky"
            )
    return net


class _Converter:
    def __init__(self, snntorch, surrogate) -> None:
        self.snntorch = snntorch
        self.surrogate = surrogate
        self.outputs: list[tuple[nn.Module, str]] = []  # Leaky layers with output=True
        # One conversion table: exact module type -> handler(module, path, out).
        self.table = {
            nn.Linear: self._keep,
            nn.Conv2d: self._keep,
            nn.AvgPool2d: self._keep,
            nn.MaxPool2d: self._keep,
            nn.Flatten: self._flatten,
            nn.Identity: self._skip,
            nn.Dropout: self._skip,
            nn.Sequential: self.walk_children,
            snntorch.Leaky: self._leaky,
        }

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
    def _flatten(module: nn.Flatten, path: str, out: Collected) -> None:
        if module.start_dim != 1 or module.end_dim != -1:
            raise ValueError(
                f"{path} (nn.Flatten) has start_dim={module.start_dim}, end_dim={module.end_dim}: a step input is "
                "[B, ...], so only nn.Flatten(1, -1) (the default) keeps the batch apart; use nn.Flatten()"
            )
        out.add(module, path, module)

    def _leaky(self, leaky: nn.Module, path: str, out: Collected) -> None:
        reset = _reset_kind(leaky, path)
        if not leaky.init_hidden:
            raise ValueError(
                f"{path} (snntorch.Leaky) has init_hidden=False: it takes and returns its membrane explicitly, "
                "which an nn.Sequential cannot carry; build it with init_hidden=True (and output=True on the last one)"
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
        if leaky.output:
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
        supported = "nn.Linear, nn.Conv2d, nn.AvgPool2d, nn.MaxPool2d, nn.Flatten, nn.Identity, nn.Dropout, snntorch.Leaky"
        if isinstance(module, nn.Sequential) or len(list(module.children())) > 0:
            raise UnsupportedLayerError(
                f"{path} ({qualname(module)}) is a custom container whose forward cannot be read: express it as an "
                f"nn.Sequential of supported layers ({supported})"
            )
        raise UnsupportedLayerError(
            f"{path} ({qualname(module)}) is not supported; supported layers are {supported} inside nn.Sequential"
        )


def _reset_kind(leaky: nn.Module, path: str) -> str:
    """The reset the Leaky actually runs. snnTorch picks its state function once, in
    ``__init__``; a later change of ``reset_mechanism`` changes only part of the step,
    so the two must agree."""
    func = getattr(leaky.state_function, "__func__", None)
    cls = type(leaky)
    running = {cls._base_sub: "subtract", cls._base_zero: "zero", cls._base_int: "none"}.get(func)
    declared = {0: "subtract", 1: "zero", 2: "none"}.get(int(leaky.reset_mechanism_val))
    if running is None or running != declared:
        raise ValueError(
            f"{path} (snntorch.Leaky): reset_mechanism was changed after construction ({running!r} in the state "
            f"function, {declared!r} in reset_mechanism), which snnTorch applies only in part; build a new Leaky "
            "with the reset you want"
        )
    if running == "none":
        raise ValueError(
            f"{path} (snntorch.Leaky) has reset_mechanism='none' (pure integration, no reset): not supported; "
            "use 'zero' (the paper's neuron) or 'subtract' (snnTorch's default)"
        )
    return running


def _show(t: Tensor) -> str:
    return f"{t.item():g}" if t.numel() == 1 else f"tensor of shape {tuple(t.shape)}"
