"""A complete verifier for small spiking networks: a mixed-integer encoding of the network
over one sample's input box, solved per margin row with HiGHS (``scipy.optimize.milp``).

Shape glossary: ``T'`` bound steps, ``B`` batch, ``S`` specification rows, ``N`` a layer's
neurons (flattened), ``n_in`` its inputs (flattened).

**What is encoded** (method.md section 1, for one sample; every neuron parameter per neuron):

* inputs: elements with ``l == u`` are constants; the others are binaries for a spike input
  (``input_coding="spike"``: digital coupled maps, spike l_0, event frames) and continuous
  in ``[l, u]`` for a direct-coded first layer;
* each stage's spatial part must be one affine layer (``Linear``, ``Conv2d`` or
  ``AvgPool2d``) with ``Flatten`` before or after it: the rows of its matrix that the
  encoding needs are read with the layer's exact transpose (:meth:`BoundOp.transpose`);
  anything else (BatchNorm, max pooling, a rate readout, two affine layers in one stage) is
  refused with a :class:`MILPUnsupportedError` naming the layer;
* LIF layers, hard reset (``m_t = scale sp_t + alpha m_{t-1} (1 - s_{t-1})``) and soft reset
  (``m_t = scale sp_t + alpha m_{t-1} - kappa th s_{t-1}``). A neuron that S-IBP proves stable
  at every step is a constant spike train (no variables). The others get a membrane variable
  for every step up to their last unstable one, in S-IBP's (rounding-widened) interval; a
  step that S-IBP proves stable keeps its spike constant, an unstable one gets a binary
  ``s`` with the big-M constraints ``s = 1 => m >= th - delta`` and ``s = 0 => m <= th +
  delta``, and a hard reset's product ``z = m (1 - s)`` its exact big-M linearisation
  (``z <= m - L s``, ``z >= m - U s``, ``z <= U (1 - s)``, ``z >= L (1 - s)`` for ``m`` in
  ``[L, U]``);
* row ``c`` (integer coefficients on the output neurons, e.g. ``e_y - e_j``) adds the
  constraint ``count = sum_t c . s_t <= 0`` on the spike counts of the last LIF layer (an
  integer); the row's margin is that count over ``T'``.

**Floating point.** The encoding describes the *float* forward passes (ours, snnTorch's,
SpikingJelly's, ``>`` or ``>=`` firing): every membrane equation holds up to a band
``delta = scale E_sp + E_charge + SLACK``, where ``E_sp = gamma_{n+2} (|W| |x|_max + |b|)``
bounds the distance between the layer's float output, summed in any order (``n`` inputs
that can be nonzero; Higham Eq. 3.5, as in :mod:`~snn_robust.bounds.rounding`, whatever
the global error model: the inputs here are not fixed), and the exact sum of its float
weights times the inputs, ``E_charge`` the charge's rounding (:func:`charge_error`, which
also covers the float decay), and the fire constraints let both ``s = 0`` and ``s = 1`` be feasible within ``delta`` of the
threshold. So every float trajectory of an input in the box is a feasible point of the
encoding, strictly inside its rows by at least :data:`SLACK`.

**What is proved and what rests on the solver.** A row is verified when HiGHS reports the
encoding plus the row ``count <= 0`` infeasible (a feasibility problem: the solver stops at
its first point with ``count <= 0``, and pays for no optimality proof; the count is an integer,
so infeasibility means ``count >= 1``, a margin of at least ``1 / T'``, which is the bound
returned). HiGHS is a floating-point solver, not a proof checker: the certificate rests on
its answer. :data:`SLACK` (``2e-6 max(1, th)``, 20x HiGHS's primal feasibility tolerance of
``1e-7``) keeps every real trajectory inside the rows by more than the solver's tolerances,
so a tolerance-level error of the solver cannot cut it off (its tolerances, the integrality
one included, only ever let it accept more points, which costs completeness, not
soundness). The band is what keeps the verifier from being complete: a row whose only
counterexamples are "trajectories" with a membrane within ``delta`` of its threshold
(about ``1e-5`` on a 784-input layer) on the wrong side stays undecided. A time-out, a
binary count above the cap or any other status leaves the row with the cheaper bound (never
more than proved). When the solver finds a point with ``count <= 0``, its input is replayed
through the network's own forward pass; if that forward also gives a margin ``<= 0``, the
row is *falsified* (a real counterexample in the box), otherwise undecided.
"""
from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.optimize import LinearConstraint, milp
from scipy.sparse import coo_matrix
from torch import Tensor

from ..network import SpikingNetwork
from .graph import BoundStage, bound_graph
from .ibp import IBPResult, s_ibp
from .rounding import charge_error, gamma, unit_roundoff
from .spatial import BoundAvgPool2d, BoundConv2d, BoundFlatten, BoundLinear

__all__ = [
    "MILPUnsupportedError", "MILPResult", "milp_verify", "milp_supported", "milp_limits", "box_search", "SLACK",
]

SLACK = 2e-6
"""Absolute slack (times ``max(1, th)``) added to every band (module docstring)."""

_LIMITS = {"time_limit": 2.0, "max_binaries": 2000}


@contextmanager
def milp_limits(time_limit: float | None = None, max_binaries: int | None = None):
    """Within the ``with`` block, :func:`~snn_robust.compute_bounds`'s ``milp`` stage (of
    ``milp``, ``best`` and ``best-full``) uses these limits: seconds per sample (all its
    rows together; default 2) and the largest number of binaries a sample's encoding may
    have (default 2000; a sample above it keeps the cheaper bound)."""
    previous = dict(_LIMITS)
    if time_limit is not None:
        if not time_limit > 0:
            raise ValueError(f"milp time_limit must be > 0 seconds, got {time_limit!r}")
        _LIMITS["time_limit"] = float(time_limit)
    if max_binaries is not None:
        if max_binaries < 0:
            raise ValueError(f"milp max_binaries must be >= 0, got {max_binaries!r}")
        _LIMITS["max_binaries"] = int(max_binaries)
    try:
        yield dict(_LIMITS)
    finally:
        _LIMITS.clear()
        _LIMITS.update(previous)


class MILPUnsupportedError(ValueError):
    """The network has a layer (or a readout) the MILP encoding does not cover."""


_AFFINE = (BoundLinear, BoundConv2d, BoundAvgPool2d)


def _affine_index(stage: BoundStage) -> int:
    """The index of the stage's one affine operator; refuses anything else by name."""
    found = None
    for i, op in enumerate(stage.ops):
        if type(op) is BoundFlatten:
            continue
        # exact types: an operator that subclasses one of these may bound another input set
        # than the box (certificates' flip-budget layer, whose box is the observation alone)
        if type(op) not in _AFFINE:
            raise MILPUnsupportedError(
                f"milp: layer {op.name} ({type(op.module).__name__}) has no MILP encoding (supported: Linear, Conv2d, "
                "AvgPool2d, Flatten); use method='best' (it skips the MILP stage for such networks) or 'crown-full'"
            )
        if found is not None:
            raise MILPUnsupportedError(
                f"milp: stage {stage.name} has two affine layers ({stage.ops[found].name}, {op.name}) in front of its "
                "LIF layer; the MILP encoding takes one per stage"
            )
        found = i
    if found is None:
        raise MILPUnsupportedError(f"milp: stage {stage.name} has no Linear / Conv2d / AvgPool2d layer")
    return found


def milp_supported(network: SpikingNetwork) -> str | None:
    """``None`` if :func:`milp_verify` can encode ``network``, else the reason."""
    if network.readout is not None:
        return "milp: networks with a rate readout (class scores W rate + b) have no MILP encoding; use method='best'"
    try:
        for stage in bound_graph(network):
            _affine_index(stage)
    except MILPUnsupportedError as exc:
        return str(exc)
    return None


@dataclass
class MILPResult:
    """:func:`milp_verify`'s answer for ``B`` samples and ``S`` rows.

    ``lower``: ``[B, S]`` margin lower bounds (count / ``T'`` where the MILP proved one, else
    the ``prior`` bound); ``status``: ``[B][S]`` strings, ``"verified"``, ``"falsified"``,
    ``"undecided"`` (time-out or a spurious point), ``"skipped"`` (over the binary cap, or the
    sample's time was spent / a row already failed) or ``"prior"`` (verified by the prior
    bound, not solved); ``counterexamples``: ``{(b, s): input [T', *input_shape]}`` for the
    falsified rows; ``seconds``: time per sample (the MILP; ``search_seconds``: the box search,
    for all samples together); ``band_limited``: undecided rows ``(b, s)`` whose encoding
    without the rounding band is infeasible (every counterexample the solver can find has a
    membrane within the band of its threshold: verified if the forward's rounding were below
    :data:`SLACK`, not proved); ``binaries``: binaries per sample (``-1``: over
    the cap, not solved)."""

    lower: Tensor
    status: list[list[str]]
    counterexamples: dict[tuple[int, int], Tensor] = field(default_factory=dict)
    seconds: list[float] = field(default_factory=list)
    binaries: list[int] = field(default_factory=list)
    search_seconds: float = 0.0
    band_limited: set[tuple[int, int]] = field(default_factory=set)

    def verified(self) -> Tensor:
        """``[B]`` bool: every row verified (by the MILP or the prior bound)."""
        return torch.tensor([all(s in ("verified", "prior") for s in row) for row in self.status], dtype=torch.bool)

    def falsified(self) -> Tensor:
        """``[B]`` bool: some row has a real counterexample."""
        return torch.tensor([any(s == "falsified" for s in row) for row in self.status], dtype=torch.bool)


class _Model:
    """The growing MILP of one sample: variables (bounds, integrality) and sparse rows."""

    def __init__(self) -> None:
        self.lo: list[float] = []
        self.hi: list[float] = []
        self.integer: list[int] = []
        self.rows: list[np.ndarray] = []
        self.cols: list[np.ndarray] = []
        self.vals: list[np.ndarray] = []
        self.row_lo: list[float] = []
        self.row_hi: list[float] = []
        self.tags: list[tuple] = []  # what each variable stands for: ("x", t, i) or ("m" | "s" | "z", k, t, n)

    def var(self, lo: float, hi: float, integer: bool = False, tag: tuple = ()) -> int:
        self.tags.append(tag)
        self.lo.append(lo)
        self.hi.append(hi)
        self.integer.append(int(integer))
        return len(self.lo) - 1

    def row(self, cols, vals, lo: float, hi: float) -> None:
        r = len(self.row_lo)
        cols = np.asarray(cols, dtype=np.int64)
        self.rows.append(np.full(len(cols), r, dtype=np.int64))
        self.cols.append(cols)
        self.vals.append(np.asarray(vals, dtype=np.float64))
        self.row_lo.append(lo)
        self.row_hi.append(hi)

    @property
    def binaries(self) -> int:
        return sum(self.integer)

    def constraint(self, extra_cols=None, extra_vals=None, extra_hi: float = math.inf) -> LinearConstraint:
        rows, cols, vals = list(self.rows), list(self.cols), list(self.vals)
        lo, hi = list(self.row_lo), list(self.row_hi)
        if extra_cols is not None:
            rows.append(np.full(len(extra_cols), len(lo), dtype=np.int64))
            cols.append(np.asarray(extra_cols, dtype=np.int64))
            vals.append(np.asarray(extra_vals, dtype=np.float64))
            lo.append(-math.inf)
            hi.append(extra_hi)
        n = len(self.lo)
        A = coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(len(lo), n))
        return LinearConstraint(A.tocsr(), np.array(lo), np.array(hi))


class _Layer:
    """The spikes of one layer for one sample, step by step: constants ``const[t]``
    (``[N]`` float64, 0 where a variable stands) and variables ``(index, var)`` pairs."""

    def __init__(self, const: np.ndarray, var_idx: list[np.ndarray], var_ids: list[np.ndarray]) -> None:
        self.const = const  # [T, N]
        self.var_idx = var_idx  # per t: positions with a variable
        self.var_ids = var_ids  # per t: the variables' ids


def _per_neuron(value: Tensor, N: int) -> np.ndarray:
    v = value.detach().double().cpu().reshape(-1)
    return np.broadcast_to(v.numpy(), (N,)) if v.numel() == 1 else v.numpy()


def _rows_of(op, rows: np.ndarray, in_shape: tuple[int, ...], out_shape: tuple[int, ...], like: Tensor) -> np.ndarray:
    """The rows ``rows`` of the affine operator's matrix (flat output index -> flat input
    index), ``[R, n_in]``, read with its exact transpose in chunks."""
    out = []
    n_out = math.prod(out_shape)
    for start in range(0, len(rows), 256):
        chunk = torch.as_tensor(rows[start:start + 256])
        A = like.new_zeros(len(chunk), n_out)
        A[torch.arange(len(chunk)), chunk] = 1
        with torch.no_grad():
            W = op.transpose(A.reshape(len(chunk), *out_shape), in_shape)
        out.append(W.reshape(len(chunk), -1).double().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, math.prod(in_shape)))


def _encode(network: SpikingNetwork, ibp: IBPResult, lower: Tensor, upper: Tensor, b: int,
            max_binaries: int, rounding: bool = True) -> tuple[_Model, _Layer, _Layer] | None:
    """The MILP of sample ``b``: the model, the input layer's variables and the output
    layer's spikes; ``None`` if it would have more than ``max_binaries`` binaries. With
    ``rounding=False`` the membrane rows leave out the floating-point band (only
    :data:`SLACK` remains): not sound, used only to look for counterexamples."""
    model = _Model()
    T = lower.shape[0]
    lo = lower[:, b].reshape(T, -1).double().cpu().numpy()
    hi = upper[:, b].reshape(T, -1).double().cpu().numpy()
    spike_input = network.input_coding == "spike"
    # a cheap count first, so a sample far over the cap costs nothing more
    binaries = int((lo != hi).sum()) if spike_input else 0
    for st in ibp.stability:
        unstable = st.unstable[:, b].reshape(T, -1)
        binaries += int(unstable.sum())
    if binaries > max_binaries:
        return None
    const = np.where(lo == hi, lo, 0.0)
    var_idx, var_ids = [], []
    for t in range(T):
        idx = np.nonzero(lo[t] != hi[t])[0]
        ids = np.array([model.var(0.0 if spike_input else lo[t, i], 1.0 if spike_input else hi[t, i], spike_input,
                                  ("x", t, int(i))) for i in idx], dtype=np.int64)
        var_idx.append(idx)
        var_ids.append(ids)
    layer = inputs = _Layer(const, var_idx, var_ids)
    for k, stage in enumerate(bound_graph(network)):
        layer = _encode_stage(model, stage, k, ibp, b, layer, T, rounding)
        if model.binaries > max_binaries:
            return None
    return model, inputs, layer


def _encode_stage(model: _Model, stage: BoundStage, k: int, ibp: IBPResult, b: int, x: _Layer, T: int,
                  rounding: bool) -> _Layer:
    i = _affine_index(stage)
    op = stage.ops[i]
    l_in, u_in = ibp.op_inputs[k][i]  # [T * B, X...]
    B = l_in.shape[0] // T
    in_shape = tuple(l_in.shape[1:])
    ml_t, mu_t = (m.detach()[:, b].reshape(T, -1) for m in ibp.membrane[k])
    st = ibp.stability[k]
    unstable = st.unstable[:, b].reshape(T, -1).cpu().numpy()
    fires = st.fires[:, b].reshape(T, -1).cpu().numpy()
    ml, mu = ml_t.double().cpu().numpy(), mu_t.double().cpu().numpy()
    N = ml.shape[1]
    lif = stage.neuron.lif
    alpha, th = _per_neuron(lif.alpha, N), _per_neuron(lif.threshold, N)
    scale, kappa = _per_neuron(lif.input_scale, N), _per_neuron(lif.kappa, N)
    hard = stage.neuron.reset.name == "zero"

    spikes = fires.astype(np.float64)  # constants; 0 where a variable stands (unstable)
    spikes[unstable] = 0.0
    any_unstable = unstable.any(0)
    V = np.nonzero(any_unstable)[0]
    out_idx: list[list[int]] = [[] for _ in range(T)]
    out_ids: list[list[int]] = [[] for _ in range(T)]
    if len(V) == 0:
        return _Layer(spikes, [np.array(o, dtype=np.int64) for o in out_idx], [np.array(o, dtype=np.int64) for o in out_ids])
    last = np.array([np.nonzero(unstable[:, n])[0].max() for n in V])

    # the layer's rows for the neurons with variables, and their constant inputs' share
    sample = slice(b, None, B)  # this sample's rows of the folded [T * B] inputs, in step order
    with torch.no_grad():
        W = _rows_of(op, V, in_shape, _op_out_shape(op, l_in[:1]), l_in)
        bias = op.module(l_in[:1] * 0).reshape(-1).double().cpu().numpy()[V]
        # the band: the layer's float output against the exact sum of its float weights times
        # the inputs, in any order (Higham 3.5: gamma_{n+1} (|W| |x| + |b|), n the inputs that
        # can be nonzero, one more term for an average pool's division), then the charge's
        u = unit_roundoff(l_in.dtype)
        x_abs = torch.maximum(l_in[sample].abs(), u_in[sample].abs())
        sp_abs = op.abs_linear(x_abs)
        sp_abs = sp_abs + op.abs_bias(sp_abs)
        n = op.window_count((x_abs != 0).to(x_abs.dtype)).clamp(max=op.fan_in(x_abs))
        e_sp = (gamma(n.double() + 2, u) * sp_abs.double()).reshape(T, -1).cpu().numpy()[:, V]
        sp_abs = sp_abs.reshape(T, -1).double().cpu().numpy()[:, V]
    offset = 0.0 if hard else th[V]
    v_abs = np.zeros(len(V))
    mlV, muV = ml[:, V], mu[:, V]
    slack = SLACK * np.maximum(1.0, th[V])
    thV, aV, sV, kV = th[V], alpha[V], scale[V], kappa[V]
    m_ids = np.full((T, len(V)), -1, dtype=np.int64)
    s_ids = np.full((T, len(V)), -1, dtype=np.int64)
    z_ids = np.full((T, len(V)), -1, dtype=np.int64)
    for t in range(T):
        e_charge = charge_error(torch.from_numpy(sp_abs[t] * (1 + 1e-3)), torch.from_numpy(v_abs),
                                torch.from_numpy(aV.copy()), torch.from_numpy(sV.copy()), u).numpy()
        band = (sV * e_sp[t] * (1 + 1e-3) + e_charge if rounding else 0.0) + slack
        v_abs = np.maximum(np.abs(mlV[t]), np.abs(muV[t])) + offset
        live = np.nonzero(last >= t)[0]
        const_sp = W[live] @ x.const[t] + bias[live]
        cols_in = x.var_ids[t]
        W_var = W[live][:, x.var_idx[t]] if len(cols_in) else None
        for j, n in enumerate(live):
            L, U = mlV[t, n] - slack[n], muV[t, n] + slack[n]
            m = model.var(L, U, tag=("m", k, t, int(V[n])))
            m_ids[t, n] = m
            cols, vals = [m], [1.0]
            if W_var is not None:
                keep = W_var[j] != 0
                cols += list(cols_in[keep])
                vals += list(-sV[n] * W_var[j][keep])
            rhs = sV[n] * const_sp[j]
            if t > 0:
                prev_fires = fires[t - 1, V[n]] and not unstable[t - 1, V[n]]
                if hard:
                    if unstable[t - 1, V[n]]:
                        cols.append(z_ids[t - 1, n])
                        vals.append(-aV[n])
                    elif not prev_fires:
                        cols.append(m_ids[t - 1, n])
                        vals.append(-aV[n])
                else:
                    cols.append(m_ids[t - 1, n])
                    vals.append(-aV[n])
                    if unstable[t - 1, V[n]]:
                        cols.append(s_ids[t - 1, n])
                        vals.append(kV[n] * thV[n])
                    elif prev_fires:
                        rhs -= kV[n] * thV[n]
            model.row(cols, vals, rhs - band[n], rhs + band[n])
            if unstable[t, V[n]]:
                s = model.var(0.0, 1.0, True, ("s", k, t, int(V[n])))
                s_ids[t, n] = s
                lo_th, hi_th = thV[n] - slack[n], thV[n] + slack[n]
                # s = 1 => m >= th - delta;  s = 0 => m <= th + delta
                model.row([m, s], [1.0, -(lo_th - L)], L, math.inf)
                model.row([m, s], [1.0, -(U - hi_th)], -math.inf, hi_th)
                out_idx[t].append(int(V[n]))
                out_ids[t].append(s)
                if hard and t < last[n]:  # z = m (1 - s), exactly, for m in [L, U]
                    z = model.var(min(0.0, L), max(0.0, U), tag=("z", k, t, int(V[n])))
                    z_ids[t, n] = z
                    model.row([z, m, s], [1.0, -1.0, L], -math.inf, 0.0)
                    model.row([z, m, s], [1.0, -1.0, U], 0.0, math.inf)
                    model.row([z, s], [1.0, U], -math.inf, U)
                    model.row([z, s], [1.0, L], L, math.inf)
    return _Layer(spikes, [np.array(o, dtype=np.int64) for o in out_idx], [np.array(o, dtype=np.int64) for o in out_ids])


def _op_out_shape(op, x: Tensor) -> tuple[int, ...]:
    with torch.no_grad():
        return tuple(op.module(x).shape[1:])


def _replay(network: SpikingNetwork, lower: Tensor, upper: Tensor, b: int, inputs: _Layer, solution: np.ndarray) -> Tensor:
    """The input ``[T', *input_shape]`` of a solver point (its input variables, rounded to
    the box's binaries for a spike input, clipped to the box for a direct one)."""
    T = lower.shape[0]
    x = lower[:, b].reshape(T, -1).clone()
    hi = upper[:, b].reshape(T, -1)
    for t in range(T):
        if len(inputs.var_idx[t]) == 0:
            continue
        idx = torch.as_tensor(inputs.var_idx[t])
        val = torch.as_tensor(solution[inputs.var_ids[t]], dtype=x.dtype)
        if network.input_coding == "spike":
            val = (val > 0.5).to(x.dtype)
        x[t, idx] = torch.minimum(torch.maximum(val, x[t, idx]), hi[t, idx])
    return x.reshape(lower[:, b].shape)


def box_search(
    network: SpikingNetwork, lower: Tensor, upper: Tensor, spec: Tensor, tries: int, gen: torch.Generator,
    steps: int = 30,
) -> tuple[Tensor, Tensor]:
    """Search the box ``[lower, upper]`` (``[T', B, ...]``) for inputs with a row of ``spec``
    (``[B, S, C]``, on the output rates) ``<= 0``: both corners, ``tries`` random corners,
    then ``steps`` signed-gradient steps (through the surrogate) from the centre, each
    rounded to a corner. Returns ``(found [B, S] bool, inputs [S, T', B, ...])``:
    ``found[b, s]`` when some tried input of sample ``b`` has row ``s`` ``<= 0`` in the
    forward pass (a real counterexample; a tie counts), ``inputs[s, :, b]`` the first such
    input."""
    found = torch.zeros(spec.shape[:2], dtype=torch.bool)
    best = lower.unsqueeze(0).repeat(spec.shape[1], *([1] * lower.dim()))

    def check(z: Tensor) -> None:
        with torch.no_grad():
            bad = (spec * network(z).unsqueeze(1)).sum(-1).cpu() <= 0
            for s, samples in enumerate((bad & ~found).t()):
                best[s][:, samples] = z[:, samples]
            found.logical_or_(bad)

    check(lower)
    check(upper)
    width = upper - lower
    for _ in range(tries):
        check(lower + width * (torch.rand(lower.shape, generator=gen) < torch.rand(1, generator=gen)).to(lower.dtype))
    z = ((lower + upper) / 2).requires_grad_(True)
    for _ in range(steps):
        margins = (spec * network(z).unsqueeze(1)).sum(-1)
        (grad,) = torch.autograd.grad(-margins.min(1).values.sum(), z)
        with torch.no_grad():
            z += 0.3 * grad.sign() * width
            z.copy_(torch.minimum(torch.maximum(z, lower), upper))
        check(torch.where(grad > 0, upper, lower))
        check(lower + width * (z.detach() - lower > width / 2).to(lower.dtype))
    return found, best


def _solve(model: _Model, cols: np.ndarray, coef: np.ndarray, base: float, seconds: float) -> tuple[str, np.ndarray | None]:
    """Is the model plus ``base + coef . x[cols] <= 0`` feasible? ``("infeasible", None)``,
    ``("point", x)`` or ``("unknown", None)`` (time-out or failure). A feasibility problem:
    the solver stops at its first point (no optimality proof to pay for)."""
    res = milp(
        np.zeros(len(model.lo)), integrality=np.array(model.integer), bounds=(np.array(model.lo), np.array(model.hi)),
        constraints=model.constraint(cols, coef, -base), options={"time_limit": float(seconds), "presolve": True},
    )
    if res.status == 2:
        return "infeasible", None
    return ("point", res.x) if res.x is not None else ("unknown", None)


def _falsified(network: SpikingNetwork, lower: Tensor, upper: Tensor, b: int, inputs: _Layer, point: np.ndarray,
               c_row: np.ndarray, result: "MILPResult", s: int) -> bool:
    """Replay a solver point's input through the forward pass; keep it as a counterexample
    of row ``s`` if its count there is ``<= 0``."""
    x = _replay(network, lower, upper, b, inputs, point)
    with torch.no_grad():
        counts = network(x.unsqueeze(1)).double().cpu()[0] * lower.shape[0]
    if float(torch.round(counts @ torch.from_numpy(c_row))) <= 0:
        result.counterexamples[(b, int(s))] = x
        return True
    return False


def milp_verify(
    network: SpikingNetwork,
    lower: Tensor,
    upper: Tensor,
    spec: Tensor,
    prior: Tensor | None = None,
    ibp: IBPResult | None = None,
    time_limit: float | None = None,
    max_binaries: int | None = None,
    stop_early: bool = True,
    search: int = 50,
) -> MILPResult:
    """The MILP verifier (module docstring) on ``spec`` rows ``[B, S, C]`` (integer
    coefficients on the output spike counts, e.g. :func:`~snn_robust.bounds.api.margin_spec`)
    over the input box ``[lower, upper]`` (``[T', B, ...]``, already validated).

    ``prior`` (``[B, S]``): sound lower bounds from cheaper methods (rounded to the grid);
    rows with ``prior > 0`` are not solved, and every returned bound is at least ``prior``.
    ``time_limit``: seconds per sample for all its rows (default :func:`milp_limits`'s);
    ``max_binaries``: larger encodings are skipped. ``stop_early``: stop a sample at its first
    row the MILP does not verify (the sample cannot be verified then; the remaining rows keep
    ``prior`` and the status ``"skipped"``), hardest rows (lowest ``prior``) first.
    ``search``: random corners tried by :func:`box_search` first (0: none); a row it breaks is
    falsified at once, and with ``stop_early`` its sample skips the MILP (finding a
    counterexample by branch and bound costs seconds, by a search milliseconds).

    Raises :class:`MILPUnsupportedError` (a ``ValueError``) naming the layer for networks the
    encoding does not cover (:func:`milp_supported`)."""
    reason = milp_supported(network)
    if reason is not None:
        raise MILPUnsupportedError(reason)
    time_limit = _LIMITS["time_limit"] if time_limit is None else time_limit
    max_binaries = _LIMITS["max_binaries"] if max_binaries is None else max_binaries
    T, B = lower.shape[:2]
    S = spec.shape[1]
    spec_np = spec.detach().double().cpu().numpy()
    if not np.array_equal(spec_np, np.round(spec_np)):
        raise ValueError("milp: specification rows must have integer coefficients (margins e_y - e_j, rates +-e_i)")
    if ibp is None:
        with torch.no_grad():
            ibp = s_ibp(network, lower, upper)
    prior = torch.full((B, S), -float(T), dtype=lower.dtype) if prior is None else prior.detach().cpu().clone()
    lb = prior.clone()
    status = [["prior" if prior[b, s] > 0 else "skipped" for s in range(S)] for b in range(B)]
    result = MILPResult(lb, status)
    searched = torch.zeros(B, S, dtype=torch.bool)
    pending = (prior <= 0).any(1).nonzero().squeeze(1)
    if search and len(pending):
        t0 = time.perf_counter()
        with torch.enable_grad():
            broken, inputs = box_search(network, lower[:, pending], upper[:, pending], spec[pending].to(lower.dtype),
                                        search, torch.Generator().manual_seed(0))
        searched[pending] = broken & (prior[pending] <= 0)
        for j, b in enumerate(pending.tolist()):
            for s in searched[b].nonzero().squeeze(1).tolist():
                status[b][s] = "falsified"
                result.counterexamples[(b, s)] = inputs[s, :, j]
        result.search_seconds = time.perf_counter() - t0
    for b in range(B):
        start = time.perf_counter()
        todo = [s for s in np.argsort(prior[b].numpy(), kind="stable") if prior[b, s] <= 0 and not searched[b, s]]
        if stop_early and searched[b].any():
            todo = []
        built = _encode(network, ibp, lower, upper, b, max_binaries) if todo else None
        result.binaries.append(built[0].binaries if built is not None else (-1 if todo else 0))
        if built is None:
            result.seconds.append(time.perf_counter() - start)
            continue
        model, inputs, out = built
        exact = None  # the same encoding without the rounding band, built on the first spurious point
        for s in todo:
            left = time_limit - (time.perf_counter() - start)
            if left <= 0.01:
                break
            c_row = spec_np[b, s]
            obj = np.zeros(len(model.lo))
            base = 0.0
            for t in range(T):
                base += float(c_row @ out.const[t])
                if len(out.var_ids[t]):
                    np.add.at(obj, out.var_ids[t], c_row[out.var_idx[t]])
            cols = np.nonzero(obj)[0]
            state, proved = "undecided", None
            if len(cols) == 0:  # the count is the constant base on the whole box
                proved = base
                if base >= 1:
                    state = "verified"
                elif _falsified(network, lower, upper, b, inputs, np.zeros(len(model.lo)), c_row, result, s):
                    state = "falsified"
            else:
                found, point = _solve(model, cols, obj[cols], base, left)
                if found == "infeasible":  # count >= 1 everywhere
                    state, proved = "verified", 1.0
                elif point is not None and _falsified(network, lower, upper, b, inputs, point, c_row, result, s):
                    state = "falsified"
                elif point is not None:
                    # a spurious point: some membrane within the band of its threshold on the
                    # wrong side. Without the band (the forward's own arithmetic, up to SLACK)
                    # the solver finds a real counterexample, or none (band-limited)
                    left = time_limit - (time.perf_counter() - start)
                    if exact is None and left > 0.01:
                        exact = _encode(network, ibp, lower, upper, b, max_binaries, rounding=False)[0]
                    if exact is not None and left > 0.01:
                        found, point = _solve(exact, cols, obj[cols], base, left)
                        if found == "infeasible":
                            result.band_limited.add((b, int(s)))
                        elif point is not None and _falsified(network, lower, upper, b, inputs, point, c_row, result, s):
                            state = "falsified"
            if proved is not None:
                lb[b, s] = max(float(lb[b, s]), proved / T)
            status[b][s] = state
            if state != "verified" and stop_early:
                break
        result.seconds.append(time.perf_counter() - start)
    return result
