"""Floating-point error bounds for the membrane intervals, and the output grid.

Shape glossary: ``M`` folded time and batch, ``Y...`` a layer's output shape, ``T'`` the
bound's time steps.

**Why.** A spike is the comparison of a float sum with the threshold. snnTorch,
SpikingJelly and our own forward pass compute the same real-valued membrane (method.md
section 1) but in different orders and formulas, so their float results differ, and a
membrane within a few ulps of ``th`` may fire in one and not in another. A sound bound
must contain every one of them. Instead of a fixed band around the threshold, S-IBP widens
each interval by a rigorous bound on the error that *this* neuron's value can carry, so a
neuron is unstable only when its own widened interval touches the threshold
(method.md section 10).

**Spatial layers** (Higham, *Accuracy and Stability of Numerical Algorithms*, Eq. 3.5):
a dot product of ``n`` terms plus a bias, summed in *any* order and with or without fused
multiply-adds, has ``|fl(w . x + b) - (w . x + b)| <= gamma_{n+1} (|w| . |x| + |b|)``,
``gamma_k = k u / (1 - k u)``, ``u`` the unit roundoff of the dtype (``2^-24`` for
float32, ``2^-53`` for float64). A zero term (a silent input spike, ``x_i = 0``) is added
exactly in every order, so ``n`` counts only the inputs that can be nonzero. S-IBP's own
centre/radius arithmetic errs by at most ``gamma_{n+2}`` times the same magnitude, and the
final widening by one more rounding, so the exact-plus-framework distance is covered by
``E = 2 gamma_{n+4} (|W| max(|l|, |u|) + |b|)`` (:func:`accumulation_error`), computed per
output element from the layer's input interval (the carried error of earlier layers is
inside that interval already, since every layer's interval is widened). Max pooling and
flattening are exact.

**The charge** ``m_t = scale * sp_t + alpha * z_{t-1}`` is computed by each framework with
at most four roundings (e.g. SpikingJelly's ``v + (x - v) / tau``), each bounded by ``u``
times a magnitude no larger than ``(1 + scale) |sp| + (2 + alpha + scale) |v|`` with ``v``
the membrane after the previous reset (``|v| <= |m_{t-1}| + th`` for a soft reset); the
decay itself (``alpha = 1 - 1/tau``, ``1 - sigmoid(w)``) is a float of the true factor
within ``2u``. :func:`charge_error` takes ``8 u`` times that magnitude, which covers the
framework, our own interval arithmetic and the widening.

**Fixed inputs (the ``"same-kernel"`` error model, the default).** The any-order bound
is large for wide layers (``n`` in the hundreds: ``~1e-4`` on the paper's FC layers), and
with it no paper-sized network is exact at ``eps = 0``: a few membranes per sample lie
that close to the threshold, so they must count as unstable. But a forward pass computes
a layer with the same torch module on the same values; where *every* input of an output
is fixed (``l == u`` on its window), S-IBP's interval is the single float that module
returns (``module(mid)`` with ``mid == l``, spread exactly 0), and a neuron whose
spatial input and carry are both such points gets its membrane from the network's own
``LIF.charge`` (the adapters' overrides repeat snnTorch's and SpikingJelly's formulas
bit for bit). Those neurons are not widened at all. This assumes the kernel returns the
same float for the same inputs whatever else is in the batch (true of our forward,
which folds time into the batch exactly as S-IBP does; snnTorch and SpikingJelly call
the same modules, possibly with another batch size). :func:`set_error_model` with
``"any-order"`` drops the assumption and widens every neuron.

**Assumptions.** IEEE arithmetic in the tensors' dtype with round-to-nearest. TF32 (on
for convolutions by default on NVIDIA GPUs) and Winograd/FFT convolutions break the
componentwise bound: when the bound itself runs on CUDA with TF32 allowed *for that kind of
op*, ``u`` is TF32's ``2^-11`` for that op (:func:`unit_roundoff`'s ``op``): cuDNN's switch
``torch.backends.cudnn.allow_tf32`` (on by default) concerns convolutions, the matrix
product's ``torch.backends.cuda.matmul.allow_tf32`` (off by default) linear layers, and
elementwise arithmetic (the LIF recurrence, batch norm) is IEEE float32 on every device.
TF32's ``u`` makes the bounds of wide layers useless (``gamma_788 ~ 0.6`` for a 784-input
layer), so train and certify on a GPU with TF32 off (``fit``, the recipes and the command
line switch it off on CUDA); a framework forward on a GPU must run with TF32 off too for the
certificate to cover it.

**The output grid.** Output rates are spike counts over ``T'``, so every specification
row with integer coefficients (the margins ``e_y - e_j``, the rates ``+-e_i``) has its true
value on the grid ``Z / T'``. :func:`round_to_grid` returns ``ceil((lb - tol) T') / T'``,
the smallest grid point ``>= lb - tol``. If the computed ``lb`` exceeds the exact bound by
at most ``tol``, that point is ``<=`` the smallest grid point ``>=`` the exact bound, which
is ``<=`` the true value: sound, never below ``lb - tol``, and mostly above ``lb``.
A bound in ``(g, g + tol]`` gives ``g``, so a reachable tie is never certified. With
``tol = 4 sqrt(eps)`` (``1.4e-3`` in float32, ``6e-8`` in float64) residues far above the
typical ones (below ``1e-7``) are covered; fire lines with slopes above 256 are not used
(:data:`~snn_robust.bounds.relaxations.LINE_ROOM`), since their cancellations produced
residues of ``2.6e-4`` in a property test. This ``tol`` is an engineering margin, not
a proof for the S-CROWN arithmetic
(whose rounding would need a second backward pass in absolute values to bound).
"""
from __future__ import annotations

import warnings

import torch
from torch import Tensor

__all__ = [
    "ERROR_MODELS", "set_error_model", "point_outputs_exact", "ROUNDING_OPS", "tf32_allowed", "use_ieee_float32",
    "unit_roundoff", "gamma", "accumulation_error",
    "charge_error", "grid_tolerance", "round_to_grid",
]

ERROR_MODELS = ("same-kernel", "any-order")
_model = "same-kernel"


def set_error_model(model: str) -> str:
    """Choose how fixed inputs are treated (module docstring); returns the previous model."""
    global _model
    if model not in ERROR_MODELS:
        raise ValueError(f"error model must be one of {ERROR_MODELS}, got {model!r}")
    previous, _model = _model, model
    return previous


def point_outputs_exact() -> bool:
    """Whether outputs with fixed inputs are taken as exact (``"same-kernel"``)."""
    return _model == "same-kernel"


#: The kinds of op :func:`unit_roundoff` tells apart: which torch switch may run them in TF32.
ROUNDING_OPS = ("elementwise", "matmul", "conv")


def tf32_allowed(op: str) -> bool:
    """Whether CUDA may run a float32 ``op`` (:data:`ROUNDING_OPS`) in TF32 now: ``matmul``
    (linear layers) under ``torch.backends.cuda.matmul.allow_tf32`` (set by
    ``torch.set_float32_matmul_precision``), ``conv`` under cuDNN's
    ``torch.backends.cudnn.allow_tf32`` (on by default); elementwise arithmetic never."""
    if op == "elementwise":
        return False
    if op == "matmul":
        legacy, owners = torch.backends.cuda.matmul, (torch.backends.cuda.matmul, torch.backends)
    elif op == "conv":
        cudnn = torch.backends.cudnn
        legacy, owners = cudnn, (getattr(cudnn, "conv", None), cudnn, torch.backends)
    else:
        raise ValueError(f"op must be one of {ROUNDING_OPS}, got {op!r}")
    try:
        return bool(legacy.allow_tf32)
    except RuntimeError:  # torch >= 2.9 refuses the old flag once its fp32_precision API was used
        for owner in owners:  # the op's own setting, then the backend's, then the global one
            precision = getattr(owner, "fp32_precision", None)
            if precision in ("tf32", "ieee"):
                return precision == "tf32"
        return True  # undecided: TF32's u is the sound choice


def use_ieee_float32() -> None:
    """Switch TF32 off, process-wide, for CUDA matrix products and cuDNN convolutions, so
    float32 runs in IEEE arithmetic there and the bounds use float32's unit roundoff rather
    than TF32's (module docstring). ``fit`` and the command line do this on CUDA."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def unit_roundoff(dtype: torch.dtype, device: torch.device | None = None, op: str = "elementwise") -> float:
    """``u`` of ``dtype`` (half the machine epsilon) for an ``op`` (:data:`ROUNDING_OPS`) run
    on ``device``; TF32's ``2^-11`` where CUDA may run that op in TF32 (:func:`tf32_allowed`),
    with a warning: such bounds are sound but far looser. Only the op's own switch counts:
    cuDNN's default TF32 for convolutions says nothing of a linear layer or the LIF charge."""
    u = torch.finfo(dtype).eps / 2
    # device and dtype first: the switches are read only for a CUDA float32 op, not on every CPU call
    if dtype == torch.float32 and device is not None and torch.device(device).type == "cuda" and tf32_allowed(op):
        warnings.warn(
            f"TF32 is allowed for CUDA float32 {op} ops, so the bounds take TF32's unit roundoff 2^-11 for them "
            "and are far looser; call snn_robust.use_ieee_float32() (or set torch.backends.cudnn.allow_tf32 and "
            "torch.backends.cuda.matmul.allow_tf32 to False) before training or certifying",
            RuntimeWarning, stacklevel=2,
        )
        u = 2.0**-11
    return u


def gamma(n: Tensor, u: float) -> Tensor:
    """``gamma_n = n u / (1 - n u)`` elementwise (Higham's constant); requires ``n u < 1``."""
    nu = n * u
    if bool((nu >= 0.5).any()):
        raise ValueError(
            f"floating-point error bound: {int(n.max())} summed terms at unit roundoff {u:g} leave no accuracy; "
            "use float64 for this network"
        )
    return nu / (1 - nu)


def accumulation_error(magnitude: Tensor, terms: Tensor | int, u: float) -> Tensor:
    """``2 gamma_{n+4} * magnitude``: the distance between any float evaluation of an
    ``n``-term dot product plus bias and the interval S-IBP computed for it (module
    docstring). ``magnitude`` is ``|W| max(|l|, |u|) + |b|``."""
    n = torch.as_tensor(terms, dtype=magnitude.dtype, device=magnitude.device)
    return 2 * gamma(n + 4, u) * magnitude


def charge_error(sp_abs: Tensor, v_abs: Tensor, alpha: Tensor, scale: Tensor, u: float) -> Tensor:
    """Error bound of the charge ``m = scale * sp + alpha * v`` (module docstring):
    ``8 u ((1 + scale) |sp| + (2 + alpha + scale) |v|)``, with ``sp_abs``, ``v_abs`` bounds
    on ``|sp|`` and ``|v|``."""
    return 8 * u * ((1 + scale) * sp_abs + (2 + alpha + scale) * v_abs)


def grid_tolerance(dtype: torch.dtype) -> float:
    """The residue ``tol`` allowed below a grid point (module docstring)."""
    return 4 * torch.finfo(dtype).eps ** 0.5


def round_to_grid(lb: Tensor, steps: int) -> Tensor:
    """Round lower bounds of integer-coefficient rows outward to the grid ``Z / steps``:
    ``ceil((lb - tol) steps) / steps``.

    The value is rounded; the gradient is that of ``lb`` (straight through), so training
    on the rounded bound keeps the signal of bounds that move within a grid cell (a plain
    ``ceil`` has zero gradient almost everywhere)."""
    tol = min(grid_tolerance(lb.dtype), 0.25 / steps)
    with torch.no_grad():
        rounded = torch.ceil((lb - tol) * steps) / steps
    if not lb.requires_grad:
        return rounded
    return lb + (rounded - lb).detach()
