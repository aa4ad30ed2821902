"""Bound operators for the spatial layers (Eq. 11 and the spatial step of Algorithm 2).

Shape glossary: ``M`` folded time and batch (``T * B``), ``S`` specification rows,
``X...`` a layer's input shape, ``Y...`` its output shape.

Each operator wraps the user's torch module (sharing its parameters) and knows two
things, in the manner of auto_LiRPA's bound modules (built by
:func:`~snn_robust.bounds.graph.bound_op`, which refuses unsupported settings first):

* ``interval(l, u)``: the S-IBP output interval for inputs in ``[l, u]`` (``[M, X...]``);
* ``backward(A, l, u)``: for coefficients ``A`` (``[M, S, Y...]``) on the output, the
  coefficients on the input and a bias ``[M, S]`` such that ``A . out >= A' . in + bias``
  for every input in ``[l, u]`` (lower bound; linear layers are exact).

Eq. 11 is written for binary inputs as ``center = W s^l + b``,
``sp^{u,l} = center + W^{+,-} (s^u - s^l)``; for any interval this equals the
midpoint/radius form ``W mid + b +- |W| rad`` used here, which needs two products
instead of three and also serves direct-coded (analog) inputs.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import UnsupportedLayerError
from ..layers import pair as _pair
from .rounding import accumulation_error, point_outputs_exact, unit_roundoff

__all__ = ["BoundOp", "BoundLinear", "BoundConv2d", "BoundAvgPool2d", "BoundMaxPool2d", "BoundFlatten"]


def _fold(A: Tensor, n_lead: int) -> tuple[Tensor, tuple[int, ...]]:
    lead = tuple(A.shape[:n_lead])
    return A.reshape(math.prod(lead), *A.shape[n_lead:]), lead


class BoundOp:
    """Base class: a spatial layer seen by the bound engine."""

    #: which torch switch may run the layer's sums in TF32 on CUDA (rounding.ROUNDING_OPS)
    rounding_op = "elementwise"

    def __init__(self, module: nn.Module, name: str) -> None:
        self.module = module
        self.name = name

    def interval(self, l: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError(f"{type(self).__name__} ({self.name}) has no interval bound")

    def backward(self, A: Tensor, l: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError(f"{type(self).__name__} ({self.name}) has no backward bound")

    def rounding_error(self, l: Tensor, u: Tensor) -> Tensor | None:
        """A bound (``[M, Y...]``, no gradient) on how far any floating-point evaluation
        of this layer on an input in ``[l, u]``, in any summation order, and the interval
        :meth:`interval` computed for it, can lie from the exact values
        (:mod:`~snn_robust.bounds.rounding`); S-IBP widens the interval by it. ``None``:
        the layer is exact in floating point (reshaping, max pooling). A layer that
        rounds must override this."""
        return None

    def propagate_error(self, err: Tensor) -> Tensor:
        """A bound on how far this layer's output moves when its input moves by at most
        ``err`` (elementwise, ``[M, X...]`` -> ``[M, Y...]``): the carried rounding error of
        earlier layers of the same stage. This default holds for affine layers bounded in
        midpoint/radius form (the radius of ``interval(-err, err)`` is ``|W| err``)."""
        lo, hi = self.interval(-err, err)
        return (hi - lo) / 2

    def concretize(self, A: Tensor, l: Tensor, u: Tensor) -> Tensor:
        """``min over x in [l, u]`` of the linear bound ``A . op(x)`` (``[M, S]``), for the
        layer that reads the network input."""
        A_in, bias = self.backward(A, l, u)
        mid, rad = ((u + l) / 2).unsqueeze(1), ((u - l) / 2).unsqueeze(1)
        return (A_in * mid).flatten(2).sum(-1) - (A_in.abs() * rad).flatten(2).sum(-1) + bias


class _AffineOp(BoundOp):
    """``y = f(x) + b`` with ``f`` linear: interval by midpoint/radius, backward exact."""

    def linear(self, x: Tensor) -> Tensor:  # f(x), no bias
        raise NotImplementedError

    def abs_linear(self, x: Tensor) -> Tensor:  # |f|(x)
        raise NotImplementedError

    def bias_term(self, A: Tensor) -> Tensor:  # A . b, [M, S]
        raise NotImplementedError

    def transpose(self, A: Tensor, in_shape: tuple[int, ...]) -> Tensor:  # A f, [M*S, X...]
        raise NotImplementedError

    def abs_bias(self, like: Tensor) -> Tensor | float:  # |b| broadcast against the output
        return 0.0

    def window_count(self, mask: Tensor) -> Tensor:  # ones of mask [M, X...] in each output's window
        raise NotImplementedError

    def fan_in(self, x: Tensor) -> int:  # terms summed per output, bias and division included
        raise NotImplementedError

    def rounding_error(self, l: Tensor, u: Tensor) -> Tensor:
        """``2 gamma_{n+4} (|W| max(|l|, |u|) + |b|)`` with ``n`` the inputs of each output
        that can be nonzero (:func:`~snn_robust.bounds.rounding.accumulation_error`); 0
        for an output whose inputs are all fixed (``l == u`` on its window) under the
        ``"same-kernel"`` error model."""
        with torch.no_grad():
            x = torch.maximum(l.abs(), u.abs())
            magnitude = self.abs_linear(x)
            magnitude = magnitude + self.abs_bias(magnitude)
            n = self.window_count((x != 0).to(x.dtype)).clamp(max=self.fan_in(x))
            err = accumulation_error(magnitude, n + 1, unit_roundoff(x.dtype, x.device, self.rounding_op))
            if point_outputs_exact():
                err = err * (self.window_count((l != u).to(x.dtype)) > 0)
            return err

    def propagate_error(self, err: Tensor) -> Tensor:
        return self.abs_linear(err)

    def interval(self, l: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
        lo, hi, _ = self.interval_and_centre(l, u)
        return lo, hi

    def interval_and_centre(self, l: Tensor, u: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """:meth:`interval` and the centre ``module(mid)`` it is built on (which S-CROWN's
        concretisation at the input layer reuses instead of computing it again)."""
        mid, rad = (u + l) / 2, (u - l) / 2
        centre = self.module(mid)
        spread = self.abs_linear(rad)
        return centre - spread, centre + spread, centre

    def backward(self, A: Tensor, l: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
        flat, lead = _fold(A, 2)
        prev = self.transpose(flat, tuple(l.shape[1:]))
        return prev.reshape(*lead, *prev.shape[1:]), self.bias_term(A)


class BoundLinear(_AffineOp):
    rounding_op = "matmul"

    def abs_linear(self, x: Tensor) -> Tensor:
        return F.linear(x, self.module.weight.abs())

    def abs_bias(self, like: Tensor) -> Tensor | float:
        b = self.module.bias
        return 0.0 if b is None else b.detach().abs()

    def window_count(self, mask: Tensor) -> Tensor:
        return mask.sum(-1, keepdim=True)

    def fan_in(self, x: Tensor) -> int:
        return self.module.in_features

    def bias_term(self, A: Tensor) -> Tensor:
        b = self.module.bias
        return A.new_zeros(A.shape[:2]) if b is None else A @ b

    def transpose(self, A: Tensor, in_shape: tuple[int, ...]) -> Tensor:
        return A @ self.module.weight

    def backward(self, A: Tensor, l: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
        return _sparse_rows_matmul(A, self.module.weight), self.bias_term(A)

    def concretize(self, A: Tensor, l: Tensor, u: Tensor, centre: Tensor | None = None) -> Tensor:
        """``A . (W mid + b) - |A W| . rad``: the centre term needs no transpose, and no
        product at all when ``centre`` (``W mid + b``, from :meth:`interval_and_centre`
        on the same ``[l, u]``) is given."""
        mid, rad = (u + l) / 2, (u - l) / 2
        value = torch.bmm(A, (self.module(mid) if centre is None else centre).unsqueeze(-1)).squeeze(-1)
        if not bool((rad != 0).any()):
            return value
        return value - torch.bmm(_sparse_rows_matmul(A, self.module.weight).abs(), rad.unsqueeze(-1)).squeeze(-1)


SPARSE_ROWS_SHARE = 0.7
"""Largest share of used columns for which :func:`_sparse_rows_matmul` gathers them."""


def _used_rows(A: Tensor) -> Tensor | None:
    """The indices of ``A``'s last-dimension columns that hold a nonzero coefficient, or
    ``None`` when more than :data:`SPARSE_ROWS_SHARE` of them do (the dense product is
    then cheaper than gathering)."""
    used = (A != 0).flatten(0, -2).any(0)
    n_used = int(used.sum())
    if n_used > SPARSE_ROWS_SHARE * used.numel():
        return None
    return used.nonzero().squeeze(1)


def _sparse_rows_matmul(A: Tensor, W: Tensor) -> Tensor:
    """``A @ W`` skipping the rows of ``W`` whose coefficient is zero everywhere in ``A``.

    Coefficients reach a neuron only through an unstable neuron (a stable one has fire
    slope 0), so in a robust-trained network most columns of ``A`` are zero."""
    idx = _used_rows(A)
    if idx is None:
        return A @ W
    return A.index_select(-1, idx) @ W.index_select(0, idx)


class BoundConv2d(_AffineOp):
    rounding_op = "conv"

    def abs_linear(self, x: Tensor) -> Tensor:
        c = self.module
        return F.conv2d(x, c.weight.abs(), None, c.stride, c.padding, c.dilation, c.groups)

    def abs_bias(self, like: Tensor) -> Tensor | float:
        b = self.module.bias
        return 0.0 if b is None else b.detach().abs().reshape(-1, 1, 1)

    def window_count(self, mask: Tensor) -> Tensor:
        """Over all input channels: an upper bound for grouped convolutions."""
        c = self.module
        window = mask.new_ones(1, 1, *c.kernel_size)
        return F.conv2d(mask.sum(1, keepdim=True), window, None, c.stride, c.padding, c.dilation)

    def fan_in(self, x: Tensor) -> int:
        return self.module.weight[0].numel()

    def bias_term(self, A: Tensor) -> Tensor:
        b = self.module.bias
        return A.new_zeros(A.shape[:2]) if b is None else A.sum((-2, -1)) @ b

    def transpose(self, A: Tensor, in_shape: tuple[int, ...]) -> Tensor:
        c = self.module
        extra = _output_padding(A.shape[-2:], in_shape, c.kernel_size, c.stride, c.padding, c.dilation)
        return F.conv_transpose2d(A, c.weight, None, c.stride, c.padding, extra, c.groups, c.dilation)


class BoundAvgPool2d(_AffineOp):
    def __init__(self, module: nn.AvgPool2d, name: str) -> None:
        super().__init__(module, name)
        self.kernel = _pair(module.kernel_size)
        self.stride = _pair(module.stride if module.stride is not None else module.kernel_size)
        self.pad = _pair(module.padding)

    def abs_linear(self, x: Tensor) -> Tensor:
        return self.module(x)  # nonnegative weights

    def window_count(self, mask: Tensor) -> Tensor:
        return self.module(mask) * self.fan_in(mask)

    def fan_in(self, x: Tensor) -> int:
        """The window's size (read from the shapes for an adaptive pool), plus the division."""
        out = self.module(x[:1, :1])
        ratio = math.ceil(x.shape[-2] * x.shape[-1] / (out.shape[-2] * out.shape[-1]))
        return max(math.prod(getattr(self, "kernel", (1, 1))), ratio) + 1

    def bias_term(self, A: Tensor) -> Tensor:
        return A.new_zeros(A.shape[:2])

    def transpose(self, A: Tensor, in_shape: tuple[int, ...]) -> Tensor:
        channels = A.shape[1]
        kh, kw = self.kernel
        weight = A.new_full((channels, 1, kh, kw), 1.0 / (kh * kw))
        extra = _output_padding(A.shape[-2:], in_shape, self.kernel, self.stride, self.pad, (1, 1))
        return F.conv_transpose2d(A, weight, None, self.stride, self.pad, extra, channels)


class BoundFlatten(BoundOp):
    def interval(self, l: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
        return self.module(l), self.module(u)

    def propagate_error(self, err: Tensor) -> Tensor:
        return self.module(err)

    def backward(self, A: Tensor, l: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
        start = self.module.start_dim
        if start != 1 or self.module.end_dim != -1:
            raise UnsupportedLayerError(f"layer {self.name} (Flatten): only Flatten(1, -1) over [B, ...] is supported")
        return A.reshape(*A.shape[:2], *l.shape[1:]), A.new_zeros(A.shape[:2])


class BoundMaxPool2d(BoundOp):
    """Max over currents. S-IBP: max is monotone, ``[maxpool(l), maxpool(u)]``.

    S-CROWN, per window with ``j*`` the element of largest lower bound:
    lower ``max >= x_{j*}``; upper ``max = x_{j*}`` when the window is decided
    (``l_{j*} >= u_i`` for every other ``i``), else the constant ``max_i u_i``.
    """

    def __init__(self, module: nn.MaxPool2d, name: str) -> None:
        super().__init__(module, name)
        self.kernel = _pair(module.kernel_size)
        self.stride = _pair(module.stride if module.stride is not None else module.kernel_size)
        self.pad = _pair(module.padding)
        self.dilation = _pair(module.dilation)

    def interval(self, l: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
        return self.module(l), self.module(u)

    def propagate_error(self, err: Tensor) -> Tensor:
        return self.module(err)  # max is 1-Lipschitz in each window's largest error

    def _windows(self, x: Tensor) -> Tensor:
        """``[M, C, H, W] -> [M, C, K, L]`` windows, padding with -inf as max pooling does."""
        ph, pw = self.pad
        if ph or pw:
            x = F.pad(x, (pw, pw, ph, ph), value=float("-inf"))
        M, C = x.shape[:2]
        cols = F.unfold(x, self.kernel, self.dilation, 0, self.stride)
        return cols.reshape(M, C, self.kernel[0] * self.kernel[1], -1)

    def backward(self, A: Tensor, l: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
        M, S = A.shape[:2]
        C, H, W = l.shape[1:]
        lw, uw = self._windows(l), self._windows(u)  # [M, C, K, L]
        K, L = lw.shape[2:]
        l_best, j = lw.max(2, keepdim=True)
        others = uw.scatter(2, j, float("-inf")).amax(2, keepdim=True)
        decided = (l_best >= others).squeeze(2)  # [M, C, L]
        u_max = uw.amax(2)  # [M, C, L]

        A = A.reshape(M, S, C, L)
        pos, neg = A.clamp(min=0), A.clamp(max=0)
        neg_exact = neg * decided.unsqueeze(1)
        select = pos + neg_exact
        bias = ((neg - neg_exact) * u_max.unsqueeze(1)).sum((2, 3))

        cols = A.new_zeros(M, S, C, K, L)
        cols.scatter_(3, j.unsqueeze(1).expand(M, S, C, 1, L), select.unsqueeze(3))
        ph, pw = self.pad
        size = (H + 2 * ph, W + 2 * pw)
        img = F.fold(cols.reshape(M * S, C * K, L), size, self.kernel, self.dilation, 0, self.stride)
        img = img[:, :, ph : ph + H, pw : pw + W]
        return img.reshape(M, S, C, H, W), bias


def _output_padding(out_hw, in_shape, kernel, stride, padding, dilation) -> tuple[int, int]:
    """Rows/columns a strided window leaves at the end of the input: the transposed
    convolution must add them back (``output_padding``) so every input position,
    read or not, gets its coefficient at the right place."""
    extra = []
    for o, i, k, s, p, d in zip(out_hw, in_shape[-2:], _pair(kernel), _pair(stride), _pair(padding), _pair(dilation)):
        extra.append(i - ((o - 1) * s - 2 * p + d * (k - 1) + 1))
    return tuple(extra)
