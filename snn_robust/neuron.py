"""The leaky integrate-and-fire neuron (paper Eq. 1-3) and its surrogate gradient.

Shape glossary: ``T`` time steps, ``B`` batch, ``N...`` the neuron shape of one layer
(``[C]`` after a Linear, ``[C, H, W]`` after a Conv2d).

One step of a LIF layer, with ``sp_t`` the spatial input (the output of the Linear /
Conv2d / pooling chain in front of it)::

    m_t = scale * sp_t + c_{t-1}                                   (charge, Eq. 3)
    s_t = fire(m_t - th)      fire(x) = [x > 0]  or  [x >= 0]      (Eq. 1-2)
    c_t = alpha * m_t * (1 - s_t)                     hard reset to 0 (Eq. 3)
    c_t = alpha * m_t - kappa * th * s_t              soft reset by subtraction

with ``c_0 = 0`` and ``kappa = alpha`` when the subtraction is decayed together with the
membrane (SpikingJelly), ``kappa = 1`` when it is not (snnTorch). The paper's neuron is
the hard reset with ``alpha = th = 0.25`` and ``>=`` in the text (``>`` in the authors'
code and in snnTorch; SpikingJelly fires on ``>=``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, Union

import torch
from torch import Tensor, nn

__all__ = ["LIF", "Rectangular", "ParamLike", "spike"]

ParamLike = Union[float, Tensor, nn.Module]
"""A neuron parameter: a number, a tensor broadcastable to the neuron shape, or a module
called with no arguments that returns such a tensor (e.g. ``1 - sigmoid(w)`` for a
parametric decay). An ``nn.Parameter`` or a module stays shared with whoever else holds
it; a plain tensor is copied into a buffer (so it follows ``.to()`` and ``state_dict``)."""

# The carry c_{t-1} of each reset kind from (layer, m_{t-1}, s_{t-1}) (module docstring);
# the bound side of each kind is snn_robust.bounds.lif.RESETS.
_CARRIES: dict[str, Callable[["LIF", Tensor, Tensor], Tensor]] = {
    "zero": lambda lif, m, s: lif.alpha * (m * (1 - s)),
    "subtract": lambda lif, m, s: lif.alpha * m - lif.kappa * lif.threshold * s,
}
RESETS = tuple(_CARRIES)
FIRINGS = (">", ">=")

# The ranges the bounds are proven for (method.md section 2), as (text, elementwise test).
# Each test is false on NaN, so a NaN parameter is refused (a bare ``alpha < 0`` is not).
_RULES: dict[str, tuple[str, Callable[[Tensor], Tensor]]] = {
    "unit": ("lie in [0, 1]", lambda v: (v >= 0) & (v <= 1)),
    "positive": ("be > 0 and finite", lambda v: torch.isfinite(v) & (v > 0)),
    "finite": ("be finite", torch.isfinite),
}
_PARAMETER_RULES = {"alpha": "unit", "threshold": "positive", "input_scale": "positive"}


@dataclass(frozen=True)
class Rectangular:
    """Rectangular surrogate gradient of the paper's code: ``d s / d m = height`` where
    ``|m - th| < half_width``, else 0 (defaults: height 1, half-width 0.5)."""

    half_width: float = 0.5
    height: float = 1.0

    def __call__(self, x: Tensor, inclusive: bool) -> Tensor:
        return _RectangularSpike.apply(x, inclusive, self.half_width, self.height)


class _RectangularSpike(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, inclusive: bool, half_width: float, height: float) -> Tensor:
        ctx.save_for_backward(x)
        ctx.half_width, ctx.height = half_width, height
        return (x >= 0).to(x.dtype) if inclusive else (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (x,) = ctx.saved_tensors
        window = (x.abs() < ctx.half_width).to(grad.dtype) * ctx.height
        return grad * window, None, None, None


def spike(x: Tensor, firing: str, surrogate: Callable[[Tensor, bool], Tensor] | None = None) -> Tensor:
    """``fire(x)`` of Eq. 2 for ``x = m - th``: 1 where ``x > 0`` (``firing='>'``) or
    ``x >= 0`` (``firing='>='``). With a surrogate the result is differentiable."""
    inclusive = firing == ">="
    if surrogate is None:
        return (x >= 0).to(x.dtype) if inclusive else (x > 0).to(x.dtype)
    return surrogate(x, inclusive)


def _check_choice(name: str, value: str, legal: tuple[str, ...]) -> None:
    if value not in legal:
        raise ValueError(f"{name} must be one of {legal}, got {value!r}")


class LIF(nn.Module):
    r"""Leaky integrate-and-fire layer, time-major ``[T, B, N...] -> [T, B, N...]``.

    .. math::
        m_t &= \text{scale}\cdot sp_t + c_{t-1} \\
        s_t &= \text{fire}(m_t - th) \\
        c_t &= \alpha\, m_t (1 - s_t) \quad\text{(reset="zero")}\qquad
        c_t = \alpha\, m_t - \kappa\, th\, s_t \quad\text{(reset="subtract")}

    Args:
        alpha: decay :math:`\alpha \in [0, 1]` (the paper's 0.25; snnTorch's ``beta``;
            SpikingJelly's ``1 - 1/tau``).
        threshold: firing threshold :math:`th > 0`, finite.
        reset: ``"zero"`` (hard reset to 0, the paper) or ``"subtract"`` (soft reset).
        firing: ``">"`` (snnTorch, the authors' code) or ``">="`` (paper text,
            SpikingJelly). Bounds are sound for the comparison given here.
        input_scale: factor on the spatial input (SpikingJelly's ``1/tau`` when
            ``decay_input=True``); must be positive.
        decay_reset: soft reset only: whether the subtracted threshold decays with the
            membrane (:math:`\kappa = \alpha`, SpikingJelly) or not (:math:`\kappa = 1`,
            snnTorch).
        surrogate: gradient of the Heaviside used in training (paper: rectangular).

    Numbers and tensors outside these ranges (NaN and infinities included) raise a
    ``ValueError`` here; parameters given as modules (learnable or read from a framework's
    neuron) are checked by :meth:`check_parameters`, which the network runs when it is
    built and again before every bound computation (training may move them).

    Example::

        >>> lif = LIF(alpha=0.25, threshold=0.25)
        >>> lif(torch.ones(10, 2, 5)).shape
        torch.Size([10, 2, 5])
    """

    def __init__(
        self,
        alpha: ParamLike = 0.25,
        threshold: ParamLike = 0.25,
        reset: Literal["zero", "subtract"] = "zero",
        firing: Literal[">", ">="] = ">",
        input_scale: ParamLike = 1.0,
        decay_reset: bool = False,
        surrogate: Callable[[Tensor, bool], Tensor] | None = None,
    ) -> None:
        super().__init__()
        _check_choice("reset", reset, RESETS)
        _check_choice("firing", firing, FIRINGS)
        self.reset = reset
        self.firing = firing
        self.decay_reset = bool(decay_reset)
        self.surrogate = surrogate if surrogate is not None else Rectangular()
        self._store("alpha", alpha)
        self._store("threshold", threshold)
        self._store("input_scale", input_scale)

    # Parameters are kept as given (shared Parameters stay the same object) and resolved
    # to tensors on each use, so a learnable decay or threshold is always current.
    def _store(self, name: str, value: ParamLike) -> None:
        if isinstance(value, nn.Module):
            self.add_module("_" + name, value)
            return
        if isinstance(value, nn.Parameter):
            self.register_parameter("_" + name, value)
        elif isinstance(value, Tensor):
            self.register_buffer("_" + name, value.detach().clone())
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            self.register_buffer("_" + name, torch.tensor(float(value)))
        else:
            raise TypeError(f"LIF {name} must be a float, a Tensor or an nn.Module, got {type(value).__name__}")
        _check_rule(f"LIF: {name}", getattr(self, "_" + name), _PARAMETER_RULES[name])

    def _value(self, name: str) -> Tensor:
        value = getattr(self, "_" + name)
        return value() if isinstance(value, nn.Module) else value

    @property
    def alpha(self) -> Tensor:
        return self._value("alpha")

    @property
    def threshold(self) -> Tensor:
        return self._value("threshold")

    @property
    def input_scale(self) -> Tensor:
        return self._value("input_scale")

    @property
    def kappa(self) -> Tensor:
        """Weight of the subtracted threshold in the soft-reset carry."""
        return self.alpha if self.decay_reset else torch.ones_like(self.alpha)

    @property
    def layer_kind(self) -> str:
        """How the layer is named in errors (adapters name the framework's neuron)."""
        return "LIF"

    def check_source(self, where: str) -> None:
        """Hook for adapters: check the framework's own values (Python numbers) before
        they are turned into ``alpha`` / ``threshold`` / ``input_scale``."""

    def parameter_checks(self) -> list[tuple[str, Tensor, str]]:
        """``(name in errors, value, rule)`` for every value the bounds rely on; rules:
        ``"unit"`` (in ``[0, 1]``), ``"positive"`` (finite, ``> 0``), ``"finite"``."""
        return [("decay alpha", self.alpha, "unit"), ("threshold", self.threshold, "positive"),
                ("input_scale", self.input_scale, "positive")]

    def check_parameters(self, where: str | None = None) -> None:
        """Raise ``ValueError`` (naming ``where``, default :attr:`layer_kind`) if a parameter
        leaves the range the bounds are proven for: ``alpha in [0, 1]``, ``th > 0`` and
        ``scale > 0``, all finite. One fused test per value and one device sync."""
        where = where or self.layer_kind
        if bool(self.parameters_ok(where)):
            return
        for name, value, rule in self.parameter_checks():
            _check_rule(f"{where}: {name}", value, rule)

    def parameters_ok(self, where: str | None = None) -> Tensor:
        """The fast path of :meth:`check_parameters` without its device sync: runs
        :meth:`check_source` (which may raise), then returns a 0-d bool tensor, true iff
        every value lies in its range (a network stacks these to sync once for all layers)."""
        self.check_source(where or self.layer_kind)
        flags = [_RULES[rule][1](value.detach()).all() for _, value, rule in self.parameter_checks()]
        return torch.stack([f.to(flags[0].device) for f in flags]).all()

    # -- simulation -----------------------------------------------------------------
    def charge(self, m_prev: Tensor, s_prev: Tensor, sp: Tensor) -> Tensor:
        """``m_t`` from ``m_{t-1}``, ``s_{t-1}`` and the spatial input ``sp_t``.

        This is the reference arithmetic. Adapters may override it to repeat a
        framework's exact floating-point order (so spikes match bit for bit); an
        override must compute the same real-valued function, since the bounds use
        ``alpha``, ``threshold``, ``input_scale`` and ``kappa`` directly.
        """
        return self.input_scale * sp + _CARRIES[self.reset](self, m_prev, s_prev)

    def fire(self, m: Tensor) -> Tensor:
        return spike(m - self.threshold, self.firing, self.surrogate)

    def forward(self, sp: Tensor, return_membrane: bool = False):
        """Simulate ``T`` steps from zero state: ``sp`` is ``[T, B, N...]``."""
        if sp.dim() < 2:
            raise ValueError(f"LIF expects a time-major input [T, B, ...], got shape {tuple(sp.shape)}")
        m = torch.zeros_like(sp[0])
        s = torch.zeros_like(sp[0])
        spikes, membranes = [], []
        for t in range(sp.shape[0]):
            m = self.charge(m, s, sp[t])
            s = self.fire(m)
            spikes.append(s)
            membranes.append(m)
        out = torch.stack(spikes)
        return (out, torch.stack(membranes)) if return_membrane else out

    def extra_repr(self) -> str:
        def show(name: str) -> str:
            v = self._value(name)
            return f"{v.item():g}" if v.numel() == 1 else f"tensor{tuple(v.shape)}"

        return (
            f"alpha={show('alpha')}, threshold={show('threshold')}, reset={self.reset!r}, "
            f"firing={self.firing!r}, input_scale={show('input_scale')}, decay_reset={self.decay_reset}"
        )


def _check_rule(name: str, value: Tensor, rule: str) -> None:
    text, test = _RULES[rule]
    value = value.detach()
    if bool(test(value).all()):
        return
    if value.numel() == 1:
        got = f"{value.item()!r}"
    else:
        finite = value[torch.isfinite(value)]
        span = f"range [{finite.min():g}, {finite.max():g}] over its finite entries, " if finite.numel() else ""
        got = f"{span}{int(torch.isnan(value).sum())} NaN and {int(torch.isinf(value).sum())} infinite of {value.numel()}"
    raise ValueError(f"{name} must {text}, got {got}")
