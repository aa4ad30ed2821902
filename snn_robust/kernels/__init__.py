"""Fused CUDA kernels (CuPy) for the LIF bound recurrences over time.

Shape glossary: ``T`` steps, ``B`` batch, ``S`` specification rows, ``N...`` a layer's
neuron shape.

The bound code walks each LIF layer step by step in torch (S-IBP's charge / fire / reset
recurrence, Algorithm 1 with Eq. 7 and 9; S-CROWN's coefficient recurrence, Algorithm 2
with Eq. 8 and 10): ``T`` small elementwise torch calls per piece, which on a GPU are
launch-bound. The kernels here run one thread per neuron (per neuron and specification row
for S-CROWN) through all ``T`` steps in registers: one launch per layer.

* :func:`lif_interval`: S-IBP through one layer, forward and backward (a
  ``torch.autograd.Function`` whose backward is a kernel too), for certified training.
* :func:`lif_coefficients`: S-CROWN's backward through one layer, differentiable the same way.

Both repeat the float arithmetic of the torch reference (``bounds/lif.py``:
``ibp_recurrence``, ``crown_recurrence``, which dispatch here through
:func:`fused_ibp_recurrence` / :func:`fused_crown_recurrence`) operation for operation:
membranes, rounding-error widenings, exact points, ``>`` / ``>=`` firing (through the
stability test on ``[ml, mu]``), hard / soft reset and the S-CROWN coefficients agree to the
bit; the S-CROWN bias and the gradients are the same sums in another order (a few ulps).
The torch loops run where the kernels do not apply: an adapter's own charge formula with
exact fixed points on, other dtypes.

**Choosing the implementation.** The environment variable ``SNN_ROBUST_KERNELS``
(``auto``, the default; ``torch``; ``cupy``) or the context manager :func:`use_kernels`
(which wins) chooses: ``auto`` runs the kernels on CUDA tensors when ``cupy`` imports and
the torch code otherwise; ``torch`` always runs the reference; ``cupy`` requires CUDA
tensors and CuPy and raises ``RuntimeError`` naming what is missing.
"""
from __future__ import annotations

import contextlib
import contextvars
import functools
import os
from typing import Callable, Iterator, Sequence

import torch
from torch import Tensor

from ..neuron import LIF
from . import _launch
from ._launch import SUPPORTED_DTYPES

__all__ = [
    "BACKENDS", "ENV_VAR", "kernel_backend", "use_kernels", "cupy_available", "use_cupy", "lif_interval",
    "lif_coefficients", "fused_ibp_recurrence", "fused_crown_recurrence", "RESET_KINDS",
]

BACKENDS = ("auto", "torch", "cupy")
ENV_VAR = "SNN_ROBUST_KERNELS"

_forced: contextvars.ContextVar[str | None] = contextvars.ContextVar("snn_robust_kernels", default=None)


def _check(name: str, where: str) -> str:
    if name not in BACKENDS:
        raise ValueError(f"{where} must be one of {BACKENDS}, got {name!r}")
    return name


def kernel_backend() -> str:
    """The chosen implementation: :func:`use_kernels`'s if active, else ``$SNN_ROBUST_KERNELS``
    (``auto`` when unset)."""
    forced = _forced.get()
    if forced is not None:
        return forced
    return _check(os.environ.get(ENV_VAR, "auto").strip().lower() or "auto", f"${ENV_VAR}")


@contextlib.contextmanager
def use_kernels(backend: str) -> Iterator[None]:
    """Force ``"torch"`` or ``"cupy"`` (or ``"auto"``) inside a ``with`` block.

    Example::

        >>> with use_kernels("torch"):      # the reference, whatever is installed
        ...     pass
    """
    token = _forced.set(_check(backend, "use_kernels(backend)"))
    try:
        yield
    finally:
        _forced.reset(token)


@functools.lru_cache(maxsize=None)
def cupy_available() -> bool:
    """Whether ``cupy`` imports and sees a CUDA device (checked once)."""
    try:
        import cupy
    except Exception:  # ImportError, or a CuPy build that does not match the driver
        return False
    try:
        return bool(cupy.cuda.is_available())
    except Exception:
        return False


def use_cupy(*tensors: Tensor) -> bool:
    """Whether a call site should run the kernels on ``tensors``.

    ``"torch"``: never. ``"auto"``: when the tensors are float32 / float64 CUDA tensors of
    one dtype and CuPy sees a GPU. ``"cupy"``: the same, but CPU tensors or a missing CuPy
    raise ``RuntimeError`` naming the problem and the fix; a computation the kernels do not
    cover (another dtype; the call sites' own conditions, see :func:`fused_ibp_recurrence`)
    still runs in torch."""
    backend = kernel_backend()
    if backend == "torch":
        return False
    if backend == "cupy":
        on_cpu = [t for t in tensors if not t.is_cuda]
        if on_cpu:
            raise RuntimeError(
                f"{ENV_VAR}=cupy / use_kernels('cupy') needs CUDA tensors, got a tensor on {on_cpu[0].device}: "
                "move the network and the data with .to('cuda'), or use 'auto' / 'torch'"
            )
        if not cupy_available():
            raise RuntimeError(
                f"{ENV_VAR}=cupy / use_kernels('cupy') needs CuPy with a visible GPU: pip install 'snn-robust[cupy]' "
                "(cupy-cuda13x), or use 'auto' / 'torch'"
            )
    return (
        all(t.is_cuda and t.dtype in SUPPORTED_DTYPES for t in tensors)
        and len({t.dtype for t in tensors}) == 1
        and cupy_available()
    )


def _launcher():
    from ._cupy import launch

    return launch


def _per_neuron_ok(shape: Sequence[int], *params: Tensor) -> bool:
    """Every parameter broadcasts to the neuron shape ``N...`` itself (not to the batch)."""
    shape = torch.Size(shape)
    for p in params:
        try:
            if torch.broadcast_shapes(p.shape, shape) != shape:
                return False
        except RuntimeError:
            return False
    return True


def lif_interval(
    spl: Tensor, spu: Tensor, alpha: Tensor, th: Tensor, scale: Tensor, kappa: Tensor, hard: bool,
    exact_points: bool, u: float, clip: tuple[Tensor, Tensor] | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """S-IBP through one LIF layer on the GPU: see :func:`._launch.lif_interval`
    (``[T, B, N...]`` membrane bounds ``ml``, ``mu`` and the charge error ``err``)."""
    return _launch.lif_interval(_launcher(), spl, spu, alpha, th, scale, kappa, hard, exact_points, u, clip)


def lif_coefficients(
    A: Tensor, fire: Sequence[Tensor | None], reset: Sequence[Tensor | None], scale: Tensor | None,
    charge_err: Tensor | None, hard: bool, A_m: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """S-CROWN's backward through one LIF layer on the GPU: see
    :func:`._launch.lif_coefficients`."""
    return _launch.lif_coefficients(_launcher(), A, fire, reset, scale, charge_err, hard, A_m)


RESET_KINDS = {"zero": True, "subtract": False}
"""The reset kinds the kernels know (``LIF.reset`` -> hard)."""


def fused_ibp_recurrence(
    spl: Tensor, spu: Tensor, alpha: Tensor, scale: Tensor, th: Tensor, kappa: Tensor, reset: str,
    charge: Callable | None, sp_err: Tensor | None, u: float, clip: tuple[Tensor, Tensor] | None = None,
) -> tuple[Tensor, Tensor, list[Tensor]] | None:
    """``bounds.lif.ibp_recurrence`` by the kernels (its arguments, the reset by name, plus
    the unit roundoff ``u``), or ``None`` where the torch code must run (:func:`use_cupy`;
    a reset kind or a charge arithmetic the kernels do not repeat: ``charge`` must be
    ``None`` or :meth:`LIF.charge` itself, not an adapter's framework formula)."""
    if not use_cupy(spl, spu):  # (cheap: the CPU case ends here)
        return None
    supported = (
        reset in RESET_KINDS
        and (charge is None or getattr(charge, "__func__", None) is LIF.charge)
        and _per_neuron_ok(spl.shape[2:], alpha, scale, th, kappa)
        and all(p.dtype == spl.dtype for p in (alpha, scale, th, kappa))
    )
    if not supported:
        return None
    ml, mu, err = lif_interval(spl, spu, alpha, th, scale, kappa, RESET_KINDS[reset], charge is not None, u, clip)
    if sp_err is not None:
        err = err + scale.detach() * sp_err.reshape(spl.shape)
    return ml, mu, list(err.unbind(0))


def fused_crown_recurrence(
    A: Tensor, fire_slope, fire_const, carry, scale: Tensor | None, charge_err: Tensor | None = None,
    A_m: Tensor | None = None,
) -> tuple[Tensor, Tensor] | None:
    """``bounds.lif.crown_recurrence`` by the kernels (its arguments; ``Lines`` and
    ``CarryLines`` are read by attribute), or ``None`` where the torch code must run
    (:func:`use_cupy`). Differentiable like the torch loop (certified training)."""
    hard = bool(carry.m.per_step)
    if not use_cupy(A) or hard != (carry.const is not None) or A.dim() != 4:
        return None
    fire = (fire_slope.up, fire_slope.diff, fire_const.up, fire_const.diff)
    if hard:
        reset = (carry.m.up, carry.m.diff, carry.s.up, carry.s.diff, carry.const.up, carry.const.diff)
    else:
        reset = (carry.m.up, carry.s.up)
    return lif_coefficients(A, fire, reset, scale, charge_err, hard, A_m)
