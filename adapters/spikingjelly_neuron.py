"""The LIF twin of a SpikingJelly node (SpikingJelly 2.0.0 and 0.0.0.0.14).

Shape glossary: ``T`` time steps, ``B`` batch, ``N...`` a layer's neuron shape.

A SpikingJelly node keeps ``v`` (the membrane after the reset of the last step) and per
step charges ``h``, fires ``s = [h >= th]`` and resets ``v = (1 - s) h`` (``v_reset=0.``)
or ``v = h - s th`` (``v_reset=None``)::

    LIFNode, decay_input=True:    h = v + (x - v) / tau       alpha = 1 - 1/tau, scale = 1/tau
    LIFNode, decay_input=False:   h = v - v / tau + x         alpha = 1 - 1/tau, scale = 1
    ParametricLIFNode:            the same with 1/tau = sigmoid(w)   (w: a shared Parameter)
    IFNode:                       h = v + x                    alpha = 1,         scale = 1

With ``m_t = h_t`` this is :class:`~snn_robust.LIF` with ``firing=">="`` and, for the
soft reset, the subtracted threshold decayed with the membrane (``kappa = alpha``).
The twin repeats each version's floating-point order, which differs between the two
releases (and, in 0.0.0.0.14, between training and eval mode for
``LIFNode(decay_input=False, v_reset=0.)``), so spikes match bit for bit.
"""
from __future__ import annotations

from torch import Tensor, nn

from snn_robust.neuron import LIF, spike
from snn_robust.validation import check_number

from ._common import FromSource, qualname

__all__ = ["SpikingJellyNode"]


# -- live neuron parameters (module-level functions: picklable) ------------------------
def _one(node: nn.Module) -> float:
    return 1.0


def _v_threshold(node: nn.Module) -> float:
    return node.v_threshold


def _lif_alpha(node: nn.Module) -> float:
    return 1.0 - 1.0 / node.tau


def _lif_scale(node: nn.Module) -> float:
    return 1.0 / node.tau if node.decay_input else 1.0


def _plif_alpha(node: nn.Module) -> Tensor:
    return 1.0 - node.w.sigmoid()


def _plif_scale(node: nn.Module) -> Tensor | float:
    return node.w.sigmoid() if node.decay_input else 1.0


_KINDS = {
    "IF": (_one, _one),
    "LIF": (_lif_alpha, _lif_scale),
    "PLIF": (_plif_alpha, _plif_scale),
}


class SpikingJellyNode(LIF):
    """The LIF twin of one SpikingJelly ``IFNode`` / ``LIFNode`` / ``ParametricLIFNode``.

    ``tau``, ``v_threshold`` and ``decay_input`` are read from the node at every use and
    PLIF's ``w`` is the node's own Parameter. The reset kind is fixed at conversion.
    """

    def __init__(self, node: nn.Module, kind: str, legacy: bool, surrogate=None, reference: nn.Module | None = None):
        alpha_of, scale_of = _KINDS[kind]
        super().__init__(
            alpha=FromSource(node, alpha_of, reference),
            threshold=FromSource(node, _v_threshold, reference),
            reset="subtract" if node.v_reset is None else "zero",
            firing=">=",
            input_scale=FromSource(node, scale_of, reference),
            decay_reset=True,
            surrogate=surrogate,
        )
        self.kind = kind
        self.legacy = bool(legacy)

    @property
    def node(self) -> nn.Module:
        return self._threshold.source

    @property
    def layer_kind(self) -> str:
        return qualname(self.node)

    def check_source(self, where: str) -> None:
        # tau is a Python float: 1/tau would raise ZeroDivisionError for 0 and give a
        # decay outside [0, 1] below 1, so name it before alpha is read from it.
        if self.kind == "LIF":
            check_number(f"{where}: tau", self.node.tau, 1.0)

    def parameter_checks(self) -> list[tuple[str, Tensor, str]]:
        checks = [("v_threshold", self.threshold, "positive")]
        if self.kind == "PLIF":
            checks.append(("w", self.node.w, "finite"))
        if self.kind != "IF":
            decay = "1 - 1/tau" if self.kind == "LIF" else "1 - sigmoid(w)"
            checks += [(f"decay {decay}", self.alpha, "unit"), ("input scale", self.input_scale, "positive")]
        return checks

    def charge(self, m_prev: Tensor, s_prev: Tensor, sp: Tensor) -> Tensor:
        node = self.node
        v_reset = node.v_reset
        # v: the membrane after the previous step's reset (SpikingJelly's state)
        if v_reset is None:
            v = m_prev - s_prev * node.v_threshold
        elif self.legacy:
            v = (1.0 - s_prev) * m_prev + s_prev * v_reset
        else:
            v = s_prev * v_reset + (1 - s_prev) * m_prev
        rv = 0.0 if v_reset is None else v_reset
        if self.kind == "IF":
            return v + sp
        if self.kind == "LIF":
            tau = node.tau
            if node.decay_input:
                return v + (sp - v) / tau if self.legacy else v + (sp - (v - rv)) / tau
            if self.legacy:
                if v_reset is not None and not node.training:  # 0.0.0.0.14's eval kernels
                    return v - (v - v_reset) / tau + sp
                return v * (1.0 - 1.0 / tau) + sp
            return v - (v - rv) / tau + sp
        q = node.w.sigmoid()
        if node.decay_input:
            return v + (sp - v) * q if self.legacy else v + (sp - (v - rv)) * q
        return v * (1.0 - q) + sp if self.legacy else v - (v - rv) * q + sp

    def fire(self, m: Tensor) -> Tensor:
        # SpikingJelly compares against the Python float threshold (in the input's dtype).
        return spike(m - self.node.v_threshold, ">=", self.surrogate)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", kind={self.kind!r}, spikingjelly={'0.0.0.0.14' if self.legacy else '2.x'}"
