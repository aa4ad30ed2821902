"""A complete verifier for small spiking networks: a mixed-integer encoding of the network
over one sample's input box, solved per margin row with HiGHS (``scipy.optimize.milp``).

Shape glossary: ``T'`` bound steps, ``B`` batch, ``S`` specification rows, ``N`` a layer's
neurons (flattened), ``n_in`` its inputs (flattened).

The encoding (what each layer becomes, and the floating-point band that makes every float
trajectory a feasible point) is :mod:`~snn_robust.bounds.milp_encoding`.

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
row is *falsified* (a real counterexample in the box). Otherwise the point is spurious (a
membrane inside the band, on the wrong side of its threshold) and, with ``falsify``, the same
encoding without the band is searched: its point is replayed the same way, and its
infeasibility marks the row *band-limited* (undecided: only band-width counterexamples).
A box search runs before any MILP (:func:`box_search`): most counterexamples are found there
in milliseconds, where branch and bound takes seconds.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from ..network import SpikingNetwork
from ..validation import check_all_finite, check_int
from .ibp import IBPResult, s_ibp
from .milp_encoding import SLACK, MILPModel, MILPUnsupportedError, SpikeLayer, encode, milp_supported

__all__ = [
    "MILPUnsupportedError", "MILPResult", "milp_verify", "milp_supported", "milp_limits", "box_search", "SLACK",
]

_LIMITS: dict[str, float | int | None] = {"time_limit": 1.0, "max_binaries": 2000, "node_limit": None}


def _check_limits(time_limit: float | None, max_binaries: int | None, node_limit: int | None = None) -> None:
    # `not x > 0` also refuses NaN; infinity stays allowed (no time limit)
    if time_limit is not None and (isinstance(time_limit, bool) or not isinstance(time_limit, (int, float))
                                   or not time_limit > 0):
        raise ValueError(f"milp time_limit must be > 0 seconds, got {time_limit!r}")
    if max_binaries is not None:
        check_int("milp max_binaries", max_binaries)
    if node_limit is not None:
        check_int("milp node_limit", node_limit, 1)


@contextmanager
def milp_limits(time_limit: float | None = None, max_binaries: int | None = None, node_limit: int | None = None):
    """Within the ``with`` block, :func:`~snn_robust.compute_bounds`'s ``milp`` stage (of
    ``milp``, ``best`` and ``best-full``) uses these limits: seconds per sample (all its
    rows together; default 1), the largest number of binaries a sample's encoding may
    have (default 2000; a sample above it keeps the cheaper bound) and the branch-and-bound
    nodes per solve (default none).

    A time limit makes the verified share depend on the machine's speed and load (a sample
    decided in 0.9 s on an idle core times out on a busy one). For numbers that do not,
    bound the work instead: ``milp_limits(time_limit=float("inf"), node_limit=N)``. With
    the clock out of the search, the same model, inputs and limits give the same answer at
    any load (``benchmarks/milp_completeness.py`` measures both budgets)."""
    previous = dict(_LIMITS)
    _check_limits(time_limit, max_binaries, node_limit)
    if time_limit is not None:
        _LIMITS["time_limit"] = float(time_limit)
    if max_binaries is not None:
        _LIMITS["max_binaries"] = int(max_binaries)
    if node_limit is not None:
        _LIMITS["node_limit"] = int(node_limit)
    try:
        yield dict(_LIMITS)
    finally:
        _LIMITS.clear()
        _LIMITS.update(previous)


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


def _replay(network: SpikingNetwork, lower: Tensor, upper: Tensor, b: int, inputs: SpikeLayer, solution: np.ndarray) -> Tensor:
    """The input ``[T', *input_shape]`` of a solver point (its input variables, rounded to
    the box's binaries for a spike input, clipped to the box for a direct one)."""
    T = lower.shape[0]
    x = lower[:, b].reshape(T, -1).clone()
    hi = upper[:, b].reshape(T, -1)
    for t in range(T):
        if len(inputs.var_idx[t]) == 0:
            continue
        idx = torch.as_tensor(inputs.var_idx[t], device=x.device)
        val = torch.as_tensor(solution[inputs.var_ids[t]], dtype=x.dtype, device=x.device)
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
            for s, samples in enumerate((bad & ~found).t().to(z.device)):
                best[s][:, samples] = z[:, samples]
            found.logical_or_(bad)

    check(lower)
    check(upper)
    width = upper - lower
    for _ in range(tries):
        corner = torch.rand(lower.shape, generator=gen) < torch.rand(1, generator=gen)  # gen is a CPU generator
        check(lower + width * corner.to(lower.device, lower.dtype))
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


def _solve(model: MILPModel, cols: np.ndarray, coef: np.ndarray, base: float, seconds: float,
           nodes: int | None = None) -> tuple[str, np.ndarray | None]:
    """Is the model plus ``base + coef . x[cols] <= 0`` feasible? ``("infeasible", None)``,
    ``("point", x)`` or ``("unknown", None)`` (time-out, node limit or failure). A feasibility
    problem: the solver stops at its first point (no optimality proof to pay for)."""
    from scipy.optimize import milp

    options: dict[str, float | int | bool] = {"presolve": True}
    if np.isfinite(seconds):
        options["time_limit"] = float(seconds)
    if nodes is not None:
        options["node_limit"] = int(nodes)
    res = milp(
        np.zeros(len(model.lo)), integrality=np.array(model.integer), bounds=(np.array(model.lo), np.array(model.hi)),
        constraints=model.constraint(cols, coef, -base), options=options,
    )
    if res.status == 2:
        return "infeasible", None
    return ("point", res.x) if res.x is not None else ("unknown", None)


def _falsified(network: SpikingNetwork, lower: Tensor, upper: Tensor, b: int, inputs: SpikeLayer, point: np.ndarray,
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
    node_limit: int | None = None,
    stop_early: bool = True,
    search: int = 50,
    falsify: bool = True,
) -> MILPResult:
    """The MILP verifier (module docstring) on ``spec`` rows ``[B, S, C]`` (integer
    coefficients on the output spike counts, e.g. :func:`~snn_robust.bounds.api.margin_spec`)
    over the input box ``[lower, upper]`` (``[T', B, ...]``; refused as :func:`~snn_robust.compute_bounds`
    refuses them: shapes, dtype, device, non-finite or crossed bounds).

    ``prior`` (``[B, S]``): sound lower bounds from cheaper methods (rounded to the grid);
    rows with ``prior > 0`` are not solved, and every returned bound is at least ``prior``.
    ``time_limit``: seconds per sample for all its rows (default :func:`milp_limits`'s);
    ``max_binaries``: larger encodings are skipped; ``node_limit``: branch-and-bound nodes per
    solve (a limit on work, not time: :func:`milp_limits`). ``stop_early``: stop a sample at its first
    row the MILP does not verify (the sample cannot be verified then; the remaining rows keep
    ``prior`` and the status ``"skipped"``), hardest rows (lowest ``prior``) first.
    ``search``: random corners tried by :func:`box_search` first (0: none); a row it breaks is
    falsified at once, and with ``stop_early`` its sample skips the MILP (finding a
    counterexample by branch and bound costs seconds, by a search milliseconds).
    ``falsify``: after a spurious solver point, search the encoding without the band for a
    real counterexample (time that decides samples but never verifies one: ``compute_bounds``
    turns it off).

    Raises :class:`MILPUnsupportedError` (a ``ValueError``) naming the layer for networks the
    encoding does not cover (:func:`milp_supported`)."""
    from .api import _validate  # api imports this module: a top-level import would be circular

    reason = milp_supported(network) if isinstance(network, SpikingNetwork) else None
    if reason is not None:
        raise MILPUnsupportedError(reason)
    lower, upper = _validate(network, lower, upper, None, "milp")
    _check_limits(time_limit, max_binaries, node_limit)
    T, B = lower.shape[:2]
    if not isinstance(spec, Tensor) or spec.dim() != 3 or spec.shape[0] != B or spec.shape[2] < 1:
        got = tuple(spec.shape) if isinstance(spec, Tensor) else type(spec).__name__
        raise ValueError(f"milp: spec must be a tensor [B, S, C] with B = {B} (the input bounds' batch), got {got}")
    if prior is not None and (not isinstance(prior, Tensor) or tuple(prior.shape) != tuple(spec.shape[:2])):
        got = tuple(prior.shape) if isinstance(prior, Tensor) else type(prior).__name__
        raise ValueError(f"milp: prior must be a tensor [B, S] = {tuple(spec.shape[:2])} like spec's rows, got {got}")
    check_all_finite((("milp spec", spec),) + ((("milp prior", prior),) if prior is not None else ()))
    time_limit = _LIMITS["time_limit"] if time_limit is None else time_limit
    max_binaries = _LIMITS["max_binaries"] if max_binaries is None else max_binaries
    node_limit = _LIMITS["node_limit"] if node_limit is None else node_limit
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
        built = encode(network, ibp, lower, upper, b, max_binaries) if todo else None
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
                found, point = _solve(model, cols, obj[cols], base, left, node_limit)
                if found == "infeasible":  # count >= 1 everywhere
                    state, proved = "verified", 1.0
                elif point is not None and _falsified(network, lower, upper, b, inputs, point, c_row, result, s):
                    state = "falsified"
                elif point is not None and falsify:
                    # a spurious point: some membrane within the band of its threshold on the
                    # wrong side. Without the band (the forward's own arithmetic, up to SLACK)
                    # the solver finds a real counterexample, or none (band-limited)
                    left = time_limit - (time.perf_counter() - start)
                    if exact is None and left > 0.01:
                        exact = encode(network, ibp, lower, upper, b, max_binaries, rounding=False)[0]
                    if exact is not None and left > 0.01:
                        found, point = _solve(exact, cols, obj[cols], base, left, node_limit)
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
