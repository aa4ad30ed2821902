"""The LIF bound recurrences through the compiled per-element code, for any launcher.

Shape glossary: ``T`` steps, ``B`` batch, ``S`` specification rows, ``N...`` the neuron
shape of one layer, ``N`` its size.

A *launcher* runs one of the entry points of ``lif_kernels.cu`` / ``host_harness.cpp``
(``ibp_forward``, ``ibp_backward``, ``crown_backward``, ``crown_grad``, suffixed ``_f32`` /
``_f64``; declared once in ``lif_ops.cuh``) over ``n`` elements: the CuPy launcher (:mod:`._cupy`) starts one CUDA thread per element,
the host launcher (:mod:`.host`) loops over them on the CPU. Arguments are passed as a
list of torch tensors (pointers to contiguous data) and :class:`Scalar` values. Everything
here (argument marshalling, the autograd function) is shared by both, so the host harness
tests exercise the same path the GPU takes.

The arithmetic is the torch reference's (``bounds/lif.py``: ``ibp_recurrence``,
``crown_recurrence``), see ``lif_ops.cuh``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor

__all__ = ["Scalar", "Launcher", "lif_interval", "lif_coefficients", "SUPPORTED_DTYPES"]

SUPPORTED_DTYPES = (torch.float32, torch.float64)


@dataclass(frozen=True)
class Scalar:
    """A scalar kernel argument: ``kind`` is ``"i64"``, ``"i32"`` or ``"float"`` (the
    tensors' dtype)."""

    kind: str
    value: float | int


Launcher = Callable[[str, int, Sequence["Tensor | Scalar"]], None]
"""``launcher(name, n, args)``: run entry point ``name`` over ``n`` elements."""


def _suffix(dtype: torch.dtype) -> str:
    if dtype == torch.float32:
        return "f32"
    if dtype == torch.float64:
        return "f64"
    raise TypeError(f"CUDA LIF kernels: dtype must be float32 or float64, got {dtype}")


def _per_neuron(value: Tensor, shape: torch.Size, like: Tensor) -> Tensor:
    """A neuron parameter as a contiguous ``[N]`` tensor (differentiable: autograd sums the
    gradient back to the parameter's own shape)."""
    return value.to(like.dtype).expand(shape).reshape(-1).contiguous()


class _Interval(torch.autograd.Function):
    """S-IBP over the ``T`` steps of one LIF layer, forward and backward by the kernels."""

    @staticmethod
    def forward(ctx, launcher, hard, exact_points, has_clip, eight_u, spl, spu, alpha, th, scale, kappa, clip_l, clip_u):
        T, E, N = spl.shape[0], spl[0].numel(), alpha.numel()
        ml, mu, err = torch.empty_like(spl), torch.empty_like(spl), torch.empty_like(spl)
        flags = [Scalar("i64", T), Scalar("i64", E), Scalar("i64", N), Scalar("i32", int(hard)),
                 Scalar("i32", int(exact_points)), Scalar("i32", int(has_clip)), Scalar("float", eight_u)]
        if E:
            launcher("ibp_forward_" + _suffix(spl.dtype), E,
                     [spl, spu, alpha, th, scale, kappa, clip_l, clip_u, ml, mu, err, *flags])
        ctx.save_for_backward(spl, spu, alpha, th, scale, kappa, clip_l, clip_u, ml, mu)
        ctx.launcher, ctx.flags, ctx.has_clip = launcher, flags, has_clip
        ctx.mark_non_differentiable(err)
        return ml, mu, err

    @staticmethod
    def backward(ctx, gml, gmu, _gerr):
        spl, spu, alpha, th, scale, kappa, clip_l, clip_u, ml, mu = ctx.saved_tensors
        E, N = spl[0].numel(), alpha.numel()
        gml = torch.zeros_like(ml) if gml is None else gml.contiguous()
        gmu = torch.zeros_like(mu) if gmu is None else gmu.contiguous()
        gspl, gspu = torch.empty_like(spl), torch.empty_like(spu)
        gclip = [torch.zeros_like(spl), torch.zeros_like(spl)] if ctx.has_clip else [gspl, gspu]  # (unused slots)
        per_elem = [torch.zeros(E, dtype=spl.dtype, device=spl.device) for _ in range(4)]
        if E:
            ctx.launcher("ibp_backward_" + _suffix(spl.dtype), E,
                         [spl, spu, alpha, th, scale, kappa, clip_l, clip_u, ml, mu, gml, gmu, gspl, gspu, *gclip,
                          *per_elem, *ctx.flags])
        ga, gth, gs, gk = (g.reshape(-1, N).sum(0) for g in per_elem)
        gcl, gcu = gclip if ctx.has_clip else (None, None)
        return None, None, None, None, None, gspl, gspu, ga, gth, gs, gk, gcl, gcu


def lif_interval(
    launcher: Launcher, spl: Tensor, spu: Tensor, alpha: Tensor, th: Tensor, scale: Tensor, kappa: Tensor,
    hard: bool, exact_points: bool, u: float, clip: tuple[Tensor, Tensor] | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """S-IBP through one LIF layer over ``T`` steps (``bounds.lif.ibp_recurrence``).

    ``spl``, ``spu`` ``[T, B, N...]`` bound the spatial input; ``alpha``, ``th``, ``scale``
    and ``kappa`` broadcast to ``N...``; ``clip`` (``[T, B, N...]`` each, optional): other
    sound membrane bounds intersected with each step's interval before its carry. Returns
    the membrane bounds ``ml``, ``mu`` and the charge's rounding-error bound ``err``
    (``8 u ((1 + scale)|sp| + (2 + alpha + scale)|v|)``, 0 at exact points; no gradient),
    all ``[T, B, N...]``. Differentiable in ``spl``, ``spu``, the four parameters and the
    clip (the backward is a kernel too)."""
    if spl.dim() < 3 or spl.shape != spu.shape:
        raise ValueError(
            f"lif_interval: spl and spu must both be [T, B, N...] of one shape, got {tuple(spl.shape)} and "
            f"{tuple(spu.shape)}"
        )
    shape = spl.shape[2:]
    spl, spu = spl.contiguous(), spu.contiguous()
    params = [_per_neuron(p, shape, spl) for p in (alpha, th, scale, kappa)]
    if clip is None:
        clips = [spl, spu]  # not read (has_clip 0)
    else:
        clips = [c.to(spl.dtype).expand(spl.shape).contiguous() for c in clip]
    return _Interval.apply(launcher, bool(hard), bool(exact_points), clip is not None, 8 * u, spl, spu, *params, *clips)


class _Coefficients(torch.autograd.Function):
    """S-CROWN through the ``T`` steps of one LIF layer, forward and backward by the kernels."""

    @staticmethod
    def forward(ctx, launcher, hard, unit, has_am, A, A_m, *lines_scale_ce):
        *lines, scale, ce = lines_scale_ce
        T, B, S, N = A.shape
        lam, bias = torch.empty_like(A), A.new_zeros(B, S, N)
        save = any(ctx.needs_input_grad[4:])
        saved = [torch.empty_like(A), torch.empty_like(A)] if save else [lam, lam]  # (placeholders when not saving)
        flags = [Scalar("i64", T), Scalar("i64", B), Scalar("i64", S), Scalar("i64", N), Scalar("i32", int(hard)),
                 Scalar("i32", int(unit)), Scalar("i32", int(has_am))]
        if A.numel():
            launcher("crown_backward_" + _suffix(A.dtype), A[0].numel(),
                     [A, A_m, *lines, scale, ce, lam, bias, *saved, *flags, Scalar("i32", int(save))])
        if save:
            ctx.save_for_backward(*lines, scale, *saved)
        ctx.launcher, ctx.hard, ctx.unit, ctx.has_am, ctx.flags = launcher, hard, unit, has_am, flags
        return lam, bias

    @staticmethod
    def backward(ctx, glam, gbias):
        *lines, scale, lam_s, lam_m = ctx.saved_tensors
        T, B, S, N = lam_s.shape
        glam = torch.zeros_like(lam_s) if glam is None else glam.contiguous()
        gbias = lam_s.new_zeros(B, S, N) if gbias is None else gbias.contiguous()
        gA = torch.empty_like(lam_s)
        gA_m = torch.empty_like(lam_s) if ctx.has_am else gA  # (an unused slot without A_m)
        glines = [torch.zeros_like(x) if ctx.hard or k < 4 else x.new_zeros(T, B, N) for k, x in enumerate(lines)]
        per_bn = [lam_s.new_zeros(B * N) for _ in range(3)]  # scale, alpha, drop
        if B * N and T:
            ctx.launcher("crown_grad_" + _suffix(lam_s.dtype), B * N,
                         [*lines, scale, lam_s, lam_m, glam, gbias, gA, gA_m, *glines, *per_bn, *ctx.flags])
        gscale, galpha, gdrop = (g.reshape(B, N).sum(0) for g in per_bn)
        if not ctx.hard:  # the soft reset's alpha and drop sit in the first two carry slots
            glines[4:] = [galpha, None, gdrop, None, None, None]
        return (None, None, None, None, gA, gA_m if ctx.has_am else None, *glines, None if ctx.unit else gscale,
                None)


def lif_coefficients(
    launcher: Launcher,
    A: Tensor,
    fire: Sequence[Tensor | None],
    reset: Sequence[Tensor | None],
    scale: Tensor | None,
    charge_err: Tensor | None,
    hard: bool,
    A_m: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """S-CROWN's backward step through one LIF layer (``bounds.lif.crown_recurrence``).

    ``A`` ``[T, B, S, N]``: coefficients on the layer's spikes. ``fire``: the lines
    ``(f_d, f_dd, f_b, f_db)`` of the fire relaxation, ``[T, B, N]`` each, "upper" and
    "lower - upper" (``None`` for a difference that vanishes). ``reset``: for a hard reset
    the planes ``(r_a, r_da, r_b, r_db, r_c, r_dc)`` with ``alpha`` folded in, ``[T, B, N]``;
    for a soft reset ``(alpha, drop)`` per neuron (``[N]`` or a scalar; ``drop = -kappa th``).
    ``scale``: ``[N]`` or a scalar, or ``None`` for a unit scale. ``charge_err``:
    ``[T, B, N...]`` or ``None`` (no gradient, as in torch). ``A_m`` ``[T, B, S, N]``
    (optional): coefficients on the membranes themselves. Returns the coefficients on the
    spatial input (times ``scale``) ``[T, B, S, N]`` and the bias ``[B, S]``.
    Differentiable in ``A``, ``A_m``, the lines and ``scale`` (the backward is a kernel too)."""
    if A.dim() != 4:
        raise ValueError(f"lif_coefficients: A must be [T, B, S, N], got shape {tuple(A.shape)}")
    T, B, S, N = A.shape
    A = A.contiguous()

    def dense(x: Tensor | None, shape: tuple[int, ...]) -> Tensor:
        if x is None:
            return A.new_zeros(shape)
        return x.to(A.dtype).expand(shape).contiguous()

    rel = (T, B, N)
    lines = [dense(x, rel) for x in fire]
    if hard:
        planes = [dense(x, rel) for x in reset]
    else:
        alpha, drop = (dense(x, (N,)) for x in reset)
        zero = A.new_zeros(N)
        planes = [alpha, zero, drop, zero, zero, zero]  # only r_a and r_b are read for a soft reset
    unit = scale is None
    scale_n = A.new_ones(N) if unit else dense(scale, (N,))
    ce = dense(None if charge_err is None else charge_err.detach().reshape(T, B, N), rel)
    am = A if A_m is None else A_m.to(A.dtype).expand(A.shape).contiguous()  # (not read without A_m)
    lam, bias = _Coefficients.apply(launcher, bool(hard), unit, A_m is not None, A, am, *lines, *planes, scale_n, ce)
    return lam, bias.sum(-1)
