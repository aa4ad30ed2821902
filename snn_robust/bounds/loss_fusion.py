"""Loss fusion: an upper bound of the cross-entropy itself, with ONE specification row.

Shape glossary: ``T'`` bound steps, ``B`` batch, ``C`` classes, ``n`` output neurons.

The certified loss of the paper, ``CE(-[0, lb], y)``, needs a lower bound ``lb_j`` of every
margin ``z_y - z_j`` (``C - 1`` specification rows, so the S-CROWN backward pass carries
``C - 1 = 9`` rows through every layer). auto_LiRPA's loss fusion for CROWN-IBP training
(method.md section 9) bounds the loss instead. With ``d_j = z_j - z_y`` (``d_y = 0``) the
loss is ``CE(z, y) = log sum_j exp(d_j)``; S-IBP gives ``d_j in [l_j, u_j]`` for ``j != y``.

1. ``exp`` is convex, so on ``[l_j, u_j]`` it lies below its chord:
   ``exp(d_j) <= exp(l_j) + b_j (d_j - l_j)``, ``b_j = (exp(u_j) - exp(l_j)) / (u_j - l_j)``
   (``exp(u_j)`` where ``l_j = u_j``). Summed: ``S(d) = sum_j exp(d_j) <= S^(d)``, linear in
   ``d``, with ``S^(u) = s0 = 1 + sum_{j != y} exp(u_j)``.
2. ``log`` is concave, so it lies below its tangent at ``s0``:
   ``log S <= log s0 + (S - s0) / s0``. ``log`` is increasing, so with step 1

   ``CE(z, y) <= log s0 + sum_{j != y} c_j (d_j - u_j)``,  ``c_j = b_j / s0 >= 0``.   (F)

3. ``sum_j c_j d_j = -sum_j c_j (z_y - z_j)``: one row ``r = sum_j c_j (e_y - e_j)`` of the
   margin specification, whose lower bound ``L`` (S-CROWN, one backward pass) gives
   ``CE <= log s0 - L - sum_j c_j u_j``.

Because ``d_j <= u_j``, (F) never exceeds ``log s0 = CE(u)``, the loss of S-IBP's margin
bounds; the bound is taken as ``min`` of the two, i.e. ``L`` is replaced by its maximum with
S-IBP's bound of the same row. Everything is computed with the exponentials shifted by
``m = max(0, max_j u_j)`` so that large readout scores do not overflow.

Floating point: ``l_j, u_j`` are the outward-rounded margin bounds :func:`compute_bounds`
returns (grid-rounded), and ``L`` is lowered by the grid tolerance times ``sum_j c_j``,
the tolerance each margin row gets (rounding module).

Not comparable in general with ``CE(-[0, lb], y)`` of S-CROWN's ``C - 1`` margin bounds:
those rows are each bounded separately (tighter per row), (F) relaxes ``exp`` and ``log``
(looser) but lets the margins cancel inside one backward pass. It is always ``<=`` the
S-IBP loss and ``>=`` the true cross-entropy (tests/test_loss_fusion.py).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from ..network import SpikingNetwork
from .api import _ibp_spec_lower, _validate, margin_spec
from .crown import s_crown
from .graph import readout_matrix
from .ibp import s_ibp
from .rounding import grid_tolerance, round_to_grid

__all__ = ["FUSED_METHODS", "fused_ce_bound", "fused_ce_from_bounds"]

# "ibp": the loss of S-IBP's margins (no backward pass); the others add one S-CROWN row
FUSED_METHODS = ("ibp", "crown-ibp", "crown-ibp-adaptive")


def fused_ce_from_bounds(l: Tensor, u: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The linear upper bound (F) of ``log(1 + sum_j exp(d_j))`` over ``d in [l, u]``.

    ``l <= u`` are ``[B, C-1]`` bounds of ``d_j = z_j - z_y`` for ``j != y``. Returns
    ``(lse_u, c, cu)``, each per sample: ``lse_u = log(1 + sum_j exp(u_j))``, the
    coefficients ``c >= 0`` ``[B, C-1]`` and ``cu = sum_j c_j u_j``, so that
    ``log(1 + sum_j exp(d_j)) <= lse_u + c . d - cu`` for every ``d`` in the box.
    """
    m = u.max(1, keepdim=True).values.clamp(min=0)
    el, eu = torch.exp(l - m), torch.exp(u - m)
    width = u - l
    flat = width <= 1e-6 * (1 + u.abs())  # the chord's slope is the derivative there
    # exp(l)*expm1(w)/w is the chord slope without the cancellation of eu - el
    slope = torch.where(flat, eu, el * torch.expm1(width) / torch.where(flat, torch.ones_like(width), width))
    s0 = torch.exp(-m) + eu.sum(1, keepdim=True)
    c = slope / s0
    lse_u = (m + torch.log(s0)).squeeze(1)
    return lse_u, c, (c * u).sum(1)


def fused_ce_bound(
    network: SpikingNetwork,
    lower: Tensor,
    upper: Tensor,
    labels: Tensor,
    method: str = "crown-ibp",
    scale: float = 1.0,
) -> Tensor:
    """Upper bounds ``[B]`` of ``CE(scale * z(x), y)`` for every input ``x`` in the box
    ``[lower, upper]`` (``[T', B, ...]``), ``z`` the output rates (or the readout's class
    scores), by loss fusion (module docstring, bound (F)).

    ``method``: ``"ibp"`` (``CE(u)``, the loss of S-IBP's margin bounds, no backward pass),
    ``"crown-ibp"`` / ``"crown-ibp-adaptive"`` (one S-CROWN row, ``stops`` as
    ``compute_bounds``' ``crown-ibp``, with the paper's or the adaptive reset planes).
    ``scale > 0`` multiplies the scores (``TrainConfig.bound_scale``). Differentiable with
    respect to the network's parameters; input checks as :func:`compute_bounds`.
    """
    if method not in FUSED_METHODS:
        raise ValueError(f"loss fusion supports method in {FUSED_METHODS}, got {method!r}")
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not (0 < scale < math.inf):
        raise ValueError(f"scale must be a positive finite number, got {scale!r}")
    if labels is None:
        raise ValueError("loss fusion needs labels (a LongTensor [B]): it bounds the cross-entropy of the label")
    lower, upper = _validate(network, lower, upper, labels, method)
    steps = lower.shape[0]
    ibp = s_ibp(network, lower, upper)
    rl, _ = ibp.rates()
    C = rl.shape[1]
    readout = network.readout
    grid: int | None = steps
    if readout is not None:  # scores W rate + b: the specification moves onto the rates
        W, b = readout_matrix(readout, tuple(ibp.spikes[-1][0].shape[2:]), rl)
        C = W.shape[0]
        g = readout.grid()
        grid = steps * g if g else None
    if ((labels < 0) | (labels >= C)).any():
        raise ValueError(f"labels must lie in [0, {C - 1}] for a network with {C} classes")
    margins = margin_spec(labels, C, rl.dtype)  # [B, C-1, C], rows e_y - e_j
    spec, spec_bias = margins, None
    if readout is not None:
        spec_bias = None if b is None else margins @ b
        spec = margins @ W
    tol = grid_tolerance(rl.dtype)

    lm = _ibp_spec_lower(ibp, spec)  # margins z_y - z_j >= lm
    um = -_ibp_spec_lower(ibp, -spec)  # and <= um
    if spec_bias is not None:
        lm, um = lm + spec_bias, um + spec_bias
    if grid is None:
        lm, um = lm - tol, um + tol
    else:
        lm, um = round_to_grid(lm, grid), -round_to_grid(-um, grid)
    # d_j = z_j - z_y in [-um, -lm], scaled
    lse_u, c, cu = fused_ce_from_bounds(-scale * um, -scale * lm)
    if method == "ibp":
        return lse_u
    # sum_j c_j d_j = -scale * (r . z), r = sum_j c_j (e_y - e_j)
    row = c.unsqueeze(1) @ spec  # [B, 1, n]
    row_ibp = _ibp_spec_lower(ibp, row).squeeze(1)
    row_crown = s_crown(network, ibp, lower, upper, row, adaptive=method == "crown-ibp-adaptive", stops=True).squeeze(1)
    # L <= r . z: the better of S-CROWN and S-IBP on the row, lowered by the tolerance of
    # sum_j c_j margin rows (no grid: the row's value is not a multiple of 1/T')
    L = torch.maximum(row_crown, row_ibp) - tol * c.sum(1)
    if spec_bias is not None:
        L = L + (c * spec_bias).sum(1)
    # (F) never needs to exceed CE(u): the rounded margins can beat the row's bound
    return torch.minimum(lse_u - scale * L - cu, lse_u)
