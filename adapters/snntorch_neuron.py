"""The LIF twin of an ``snntorch.Leaky``.

Shape glossary: ``T`` time steps, ``B`` batch, ``N...`` a layer's neuron shape.

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
:func:`~snn_robust.adapters.snntorch_adapter.from_snntorch`) and is refused.
"""
from __future__ import annotations

from torch import Tensor, nn

from snn_robust.neuron import LIF

from ._common import FromSource

__all__ = ["SnnTorchLeaky", "reset_kind"]


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


def reset_kind(leaky: nn.Module, path: str) -> str:
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
