"""The mixed-integer encoding of a spiking network over one sample's input box, for the
MILP verifier (:mod:`~snn_robust.bounds.milp`, which solves it and says what is proved).

Shape glossary: ``T'`` bound steps, ``N`` a layer's neurons (flattened), ``n_in`` its
inputs (flattened).

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
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from ..network import SpikingNetwork
from .graph import BoundStage, bound_graph
from .ibp import IBPResult
from .rounding import charge_error, gamma, unit_roundoff
from .spatial import BoundAvgPool2d, BoundConv2d, BoundFlatten, BoundLinear

__all__ = ["MILPUnsupportedError", "MILPModel", "SpikeLayer", "encode", "milp_supported", "SLACK"]

SLACK = 2e-6
"""Absolute slack (times ``max(1, th)``) added to every band (module docstring)."""

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


class MILPModel:
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

    def constraint(self, extra_cols=None, extra_vals=None, extra_hi: float = math.inf):
        """The rows as a ``scipy.optimize.LinearConstraint``, plus one row ``extra . x <= extra_hi``."""
        from scipy.optimize import LinearConstraint  # scipy is imported only where a MILP is built
        from scipy.sparse import coo_matrix

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


class SpikeLayer:
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


def encode(network: SpikingNetwork, ibp: IBPResult, lower: Tensor, upper: Tensor, b: int,
            max_binaries: int, rounding: bool = True) -> tuple[MILPModel, SpikeLayer, SpikeLayer] | None:
    """The MILP of sample ``b``: the model, the input layer's variables and the output
    layer's spikes; ``None`` if it would have more than ``max_binaries`` binaries. With
    ``rounding=False`` the membrane rows leave out the floating-point band (only
    :data:`SLACK` remains): not sound, used only to look for counterexamples."""
    model = MILPModel()
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
    layer = inputs = SpikeLayer(const, var_idx, var_ids)
    for k, stage in enumerate(bound_graph(network)):
        layer = _encode_stage(model, stage, k, ibp, b, layer, T, rounding)
        if model.binaries > max_binaries:
            return None
    return model, inputs, layer


def _encode_stage(model: MILPModel, stage: BoundStage, k: int, ibp: IBPResult, b: int, x: SpikeLayer, T: int,
                  rounding: bool) -> SpikeLayer:
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
        return SpikeLayer(spikes, [np.array(o, dtype=np.int64) for o in out_idx], [np.array(o, dtype=np.int64) for o in out_ids])
    last = np.array([np.nonzero(unstable[:, n])[0].max() for n in V])

    # the layer's rows for the neurons with variables, and their constant inputs' share
    sample = slice(b, None, B)  # this sample's rows of the folded [T * B] inputs, in step order
    with torch.no_grad():
        W = _rows_of(op, V, in_shape, _op_out_shape(op, l_in[:1]), l_in)
        bias = op.module(l_in[:1] * 0).reshape(-1).double().cpu().numpy()[V]
        # the band: the layer's float output against the exact sum of its float weights times
        # the inputs, in any order (Higham 3.5: gamma_{n+1} (|W| |x| + |b|), n the inputs that
        # can be nonzero, one more term for an average pool's division), then the charge's
        u = unit_roundoff(l_in.dtype, l_in.device, op.rounding_op)
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
    return SpikeLayer(spikes, [np.array(o, dtype=np.int64) for o in out_idx], [np.array(o, dtype=np.int64) for o in out_ids])


def _op_out_shape(op, x: Tensor) -> tuple[int, ...]:
    with torch.no_grad():
        return tuple(op.module(x).shape[1:])
