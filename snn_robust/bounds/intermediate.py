"""Full S-CROWN: intermediate membrane bounds from backward passes (``crown-full``).

Shape glossary: ``T`` steps, ``B`` batch, ``N`` a layer's neurons (flattened), ``R`` the
most unstable neurons of one sample at one step of a layer, ``S`` specification rows.

CROWN-IBP (Algorithm 2 of the paper, ``crown-ibp``) relaxes every LIF layer with the
membrane intervals of S-IBP. Full CROWN bounds those membranes themselves by backward
passes: for layer ``k`` and every (step ``t``, neuron ``j``) whose S-IBP interval
touches the threshold, the rows ``+e_{t,j}`` and ``-e_{t,j}`` on the membranes
``m_t[k]`` are walked back to the input exactly as a margin is (fire lines, reset
planes, exact spatial transposes, concretisation at the input and at every hidden spike
layer, ``s_crown(stops=True)``), giving a lower and an upper bound on ``m_t[k, j]``.
Each is intersected with S-IBP's interval (both are sound, so the intersection is) and
S-IBP is run again with the intersections as clips, so the carries of layer ``k`` and
every later layer's intervals shrink too; then layer ``k + 1``. The final margin bound
is ``crown-ibp``'s construction (S-IBP's bound, and the backward pass with stops, their
maximum) on the tightened intervals.

Only unstable membranes get rows, as auto_LiRPA does for unstable ReLUs: a stable
neuron's fire relaxation is a constant and its carry exact (silent) or zero (firing), so
its interval enters a later membrane's backward pass through no relaxation, and that
pass bounds the later membrane directly. A membrane of step ``t`` depends on steps
``<= t`` only, so its rows walk back over those steps alone; the rows of one step are
walked in chunks so that no coefficient tensor exceeds ``max_elements``. The first layer is skipped: its membrane at step ``t`` is the spatial
image of the step-``t`` input plus the carry, which depends only on earlier steps'
inputs, so S-IBP's sum of intervals over disjoint inputs is already what a backward pass
would find up to the carry's relaxation.

**Soundness in floating point.** A backward pass from a membrane pays the same rounding
terms as one from a margin: every float membrane it substitutes (including the target
one) differs from the exact charge by at most its error bound (``ibp.charge_errors``,
spatial rounding included), paid as ``|coefficient| . error`` in the bias
(:func:`~snn_robust.bounds.crown.s_crown`). So the bound holds for the float membrane of
any forward pass (ours, snnTorch's, SpikingJelly's), and the clipped intervals keep the
property S-IBP's had: they contain every float membrane. The cancellations of the
backward pass itself are covered only by the margin's grid tolerance (as for
``crown-ibp``); intermediate bounds have no grid, so each is also moved outward by
``grid_tolerance`` (``1.4e-3`` in float32: the same engineering margin, a far larger
one than the residues measured).

**Cost.** ``2 R`` backward rows per layer and sample against ``C - 1`` for the margins:
at eps where many neurons are unstable this is hundreds of S-CROWN passes, so
``crown-full`` is a certification method, not a training loss; ``best`` leaves it out
(``best-full`` runs it only on samples the cheaper methods leave unverified).
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..network import SpikingNetwork
from .crown import s_crown
from .graph import bound_graph
from .ibp import IBPResult, s_ibp
from .rounding import grid_tolerance

__all__ = ["membrane_bounds", "full_intervals"]

MAX_ELEMENTS = 2**24
"""Largest coefficient tensor (elements) one chunk of membrane rows may create."""


def _first_steps(ibp: IBPResult, n: int) -> IBPResult:
    """``ibp`` restricted to the first ``n`` steps (time-major, so the folded ``[T * B, ...]``
    op inputs keep their first ``n * B`` rows)."""
    B = ibp.membrane[0][0].shape[1]
    return IBPResult(
        [[(l[: n * B], u[: n * B]) for l, u in ops] for ops in ibp.op_inputs],
        [(l[:n], u[:n]) for l, u in ibp.membrane],
        [st._replace(fires=st.fires[:n], silent=st.silent[:n], unstable=st.unstable[:n]) for st in ibp.stability],
        [(l[:n], u[:n]) for l, u in ibp.spikes],
        [e[:n] for e in ibp.charge_errors],
    )


def membrane_bounds(
    network: SpikingNetwork,
    ibp: IBPResult,
    lower: Tensor,
    upper: Tensor,
    k: int,
    max_elements: int = MAX_ELEMENTS,
) -> tuple[Tensor, Tensor]:
    """Bounds ``[T, B, N...]`` on layer ``k``'s membranes: the backward-pass bound where
    S-IBP's interval ``ibp.membrane[k]`` is unstable, intersected with that interval;
    S-IBP's interval elsewhere (module docstring; ``T (T + 1) / 2`` step-walks per layer,
    the rows of step ``t`` over steps ``0..t``, unless an operator declares
    ``couples_steps``: one whose bound at a step depends on the other steps' inputs, such
    as the certificates' flip budget over a whole recording, gets every step)."""
    ml, mu = ibp.membrane[k]
    T, B = ml.shape[:2]
    N = ml[0, 0].numel()
    unstable = ibp.stability[k].unstable.reshape(T, B, N)
    width = max([N] + [int(m[0][0, 0].numel()) for m in ibp.membrane[:k]])
    tol = grid_tolerance(ml.dtype)
    rows = torch.arange(B, device=ml.device).unsqueeze(1)
    coupled = any(getattr(op, "couples_steps", False) for stage in bound_graph(network) for op in stage.ops)
    lows, highs = [], []
    for t in range(T):
        low = ml.new_full((B, N), float("-inf"))
        high = ml.new_full((B, N), float("inf"))
        counts = unstable[t].sum(1)
        R = int(counts.max())
        if R:
            # per sample, its unstable neurons first; rows past its count are padding
            order = torch.argsort(unstable[t].to(torch.int8), dim=1, descending=True, stable=True)[:, :R]
            valid = torch.arange(R, device=ml.device).unsqueeze(0) < counts.unsqueeze(1)
            n = T if coupled else t + 1  # steps walked
            window = _first_steps(ibp, n)
            chunk = max(1, min(R, max_elements // (2 * n * B * width)))
            for r0 in range(0, R, chunk):
                idx = order[:, r0:r0 + chunk]  # [B, c]
                c = idx.shape[1]
                # coefficients on the membranes of step t: +e_j (lower bound), then -e_j (upper)
                A_m = ml.new_zeros(n, B, 2 * c, N)
                cols = torch.arange(c, device=ml.device)
                A_m[t, rows, cols, idx] = 1.0
                A_m[t, rows, cols + c, idx] = -1.0
                lb = s_crown(network, window, lower[:n], upper[:n], None, stops=True, start=(k, A_m)) - tol
                ok = valid[:, r0:r0 + chunk]
                inf = torch.full_like(lb[:, :c], float("inf"))
                low = low.scatter(1, idx, torch.where(ok, lb[:, :c], -inf))
                high = high.scatter(1, idx, torch.where(ok, -lb[:, c:], inf))
        lows.append(low)
        highs.append(high)
    low = torch.stack(lows).reshape(ml.shape)
    high = torch.stack(highs).reshape(ml.shape)
    return torch.maximum(ml, low), torch.minimum(mu, high)


def full_intervals(network: SpikingNetwork, lower: Tensor, upper: Tensor) -> IBPResult:
    """S-IBP with every LIF layer after the first clipped by :func:`membrane_bounds`,
    layer by layer (module docstring)."""
    ibp = s_ibp(network, lower, upper)
    clips: dict[int, tuple[Tensor, Tensor]] = {}
    for k in range(1, len(ibp.membrane)):
        if not bool(ibp.stability[k].unstable.any()):
            continue
        clips[k] = membrane_bounds(network, ibp, lower, upper, k)
        ibp = s_ibp(network, lower, upper, clips=clips)
    return ibp
