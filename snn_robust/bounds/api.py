"""The public bound entry point, :func:`compute_bounds`.

Shape glossary: ``T'`` bound steps, ``B`` batch, ``C`` classes, ``S`` specification rows.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..names import BOUND_METHODS, METHODS, Method, check_method
from ..network import SpikingNetwork
from ..validation import check_all_finite
from .crown import s_crown, s_crown_optimized
from .graph import readout_matrix
from .ibp import IBPResult, s_ibp
from .intermediate import full_intervals
from .milp import milp_supported, milp_verify
from .rounding import grid_tolerance, round_to_grid

__all__ = ["compute_bounds", "margin_spec", "METHODS"]


def margin_spec(labels: Tensor, num_classes: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """The paper's margin specification ``[B, C-1, C]``: rows ``e_y - e_j`` for every
    ``j != y``, in increasing ``j``."""
    B = labels.shape[0]
    eye = torch.eye(num_classes, dtype=dtype, device=labels.device)
    spec = eye[labels].unsqueeze(1) - eye.unsqueeze(0)  # [B, C, C], row j = e_y - e_j
    keep = torch.arange(num_classes, device=labels.device).unsqueeze(0) != labels.unsqueeze(1)
    return spec[keep].reshape(B, num_classes - 1, num_classes)


def _ibp_spec_lower(ibp: IBPResult, spec: Tensor) -> Tensor:
    rl, ru = ibp.rates()
    return (spec.clamp(min=0) * rl.unsqueeze(1)).sum(-1) + (spec.clamp(max=0) * ru.unsqueeze(1)).sum(-1)


def _maximum(bounds: list[Tensor]) -> Tensor:
    """The elementwise maximum of sound lower bounds (each ``[B, S]``): sound too."""
    lb = bounds[0]
    for other in bounds[1:]:
        lb = torch.maximum(lb, other)
    return lb


def _full(network: SpikingNetwork, lower: Tensor, upper: Tensor, spec: Tensor) -> list[Tensor]:
    """``crown-full``'s bounds ``[B, S]``: S-IBP's and the backward pass's (with stops) on
    the intervals tightened by full S-CROWN (:mod:`~snn_robust.bounds.intermediate`)."""
    full = full_intervals(network, lower, upper)
    return [_ibp_spec_lower(full, spec), s_crown(network, full, lower, upper, spec, stops=True)]


def _passes(
    network: SpikingNetwork, ibp: IBPResult, lower: Tensor, upper: Tensor, spec: Tensor
) -> dict[str, Callable[[], list[Tensor]]]:
    """The bound passes by name (the names of :attr:`snn_robust.names.BoundMethod.passes`),
    each computing a list of sound lower bounds ``[B, S]`` when called. The optimised
    S-CROWN runs on S-IBP's intervals, so ``best`` stays at least ``crown-ibp-optimized`` by
    construction (the optimisation is not monotone in the intervals)."""
    return {
        "ibp": lambda: [_ibp_spec_lower(ibp, spec)],
        "crown": lambda: [s_crown(network, ibp, lower, upper, spec, adaptive=False, stops=True)],
        "crown-paper": lambda: [s_crown(network, ibp, lower, upper, spec, adaptive=False)],
        "crown-adaptive": lambda: [s_crown(network, ibp, lower, upper, spec, adaptive=True)],
        "crown-full": lambda: _full(network, lower, upper, spec),
        "crown-optimized": lambda: [s_crown_optimized(network, ibp, lower, upper, spec)],
        "milp": lambda: [_milp(network, ibp, lower, upper, spec, None)],
    }


def _milp(network: SpikingNetwork, ibp: IBPResult, lower: Tensor, upper: Tensor, spec: Tensor,
          prior: Tensor | None) -> Tensor:
    """The MILP stage's bounds ``[B, S]`` (:mod:`~snn_robust.bounds.milp`) on the rows
    ``prior`` (the other passes' bounds, on the grid) leaves at ``<= 0``; ``prior`` itself
    where the encoding does not apply (:func:`~snn_robust.bounds.milp.milp_supported`), where
    the sample is over the binary cap or its time runs out. No gradient."""
    if prior is None:
        prior = torch.full(spec.shape[:2], -float(lower.shape[0]), dtype=lower.dtype, device=lower.device)
    if milp_supported(network) is not None:
        return prior.detach()
    with torch.no_grad():
        found = milp_verify(network, lower, upper, spec, prior=prior, ibp=ibp, falsify=False)
    return found.lower.to(device=prior.device, dtype=prior.dtype)


#: Passes that ``best``'s early exit runs only on the samples the other passes leave unverified.
_EXPENSIVE = ("crown-full", "crown-optimized")
#: The pass that runs last, with labels, on the rows all the others leave unverified.
_FINAL = "milp"


def _run(passes: dict[str, Callable[[], list[Tensor]]], names: list[str]) -> list[Tensor]:
    return [bound for name in names for bound in passes[name]()]


def _expensive(network: SpikingNetwork, ibp: IBPResult, lower: Tensor, upper: Tensor, spec: Tensor,
               names: list[str]) -> Tensor:
    """The maximum of the expensive passes ``names`` (:data:`_EXPENSIVE`)."""
    return _maximum(_run(_passes(network, ibp, lower, upper, spec), names))


def _optimized_unverified(
    network: SpikingNetwork,
    ibp: IBPResult,
    lower: Tensor,
    upper: Tensor,
    spec: Tensor,
    cheap: list[Tensor],
    finish,
    names: list[str],
) -> Tensor:
    """``best``'s early exit: the expensive bounds (:func:`_expensive`), ``[B, S]``, on
    the samples the ``cheap`` bounds (each ``[B, S]``, unrounded; ``finish`` rounds them
    as the result) do not verify, scattered into ``cheap[-1]`` (already in the maximum) elsewhere, so the
    maximum and its gradient on verified samples are the cheap methods'."""
    with torch.no_grad():
        lb = _maximum(cheap)
        todo = (finish(lb) <= 0).any(1).nonzero().squeeze(1)
    B = lb.shape[0]
    if todo.numel() == 0:
        return cheap[-1]
    if todo.numel() == B:
        return _expensive(network, ibp, lower, upper, spec, names)
    # S-IBP again on the subset (per sample, so the subset's intervals are the batch's)
    sub_l, sub_u = lower[:, todo], upper[:, todo]
    sub = _expensive(network, s_ibp(network, sub_l, sub_u), sub_l, sub_u, spec[todo], names)
    return cheap[-1].index_copy(0, todo, sub)


def _validate(
    network: SpikingNetwork, lower: Tensor, upper: Tensor, labels: Tensor | None, method: str
) -> tuple[Tensor, Tensor]:
    """Refuse what the engine cannot bound soundly, by name, and return the input bounds
    in the network's dtype. Empty inputs are refused (never an empty or NaN result):
    ``T' = 0`` has no output rate, and ``B = 0`` has nothing to certify, so a caller's
    loop should skip it rather than average over nothing."""
    if not isinstance(network, SpikingNetwork):
        raise TypeError(
            f"compute_bounds needs a SpikingNetwork, got {type(network).__name__}; convert framework models with "
            "snn_robust.from_snntorch / from_spikingjelly"
        )
    check_method(method)
    if not isinstance(lower, Tensor) or not isinstance(upper, Tensor):
        raise TypeError(f"lower and upper must be tensors, got {type(lower).__name__} and {type(upper).__name__}")
    if lower.shape != upper.shape:
        raise ValueError(f"lower and upper must have the same shape, got {tuple(lower.shape)} and {tuple(upper.shape)}")
    if not lower.is_floating_point() or not upper.is_floating_point():
        raise TypeError(f"input bounds must be floating point, got {lower.dtype} and {upper.dtype}")
    network.check_input(lower, "input bounds", steps="T'")
    if lower.shape[1] == 0:
        raise ValueError(
            f"input bounds have an empty batch (B = 0, shape {tuple(lower.shape)}): compute_bounds and "
            "certified_loss need at least one sample; skip empty batches"
        )
    if lower.device != network.device or upper.device != network.device:
        raise ValueError(
            f"input bounds are on {lower.device} / {upper.device} but the network on {network.device}: "
            f"move them with .to({str(network.device)!r})"
        )
    check_all_finite((("input bounds lower", lower), ("input bounds upper", upper)))
    # Casting is sound: a bound in float64 rounded to nearest keeps every input of the
    # network's dtype that it contained (rounding is monotone), and 0/1 are exact.
    lower, upper = lower.to(network.dtype), upper.to(network.dtype)
    network.check_parameters()
    if (lower > upper).any():
        worst = (lower - upper).max().item()
        raise ValueError(f"lower > upper somewhere (by up to {worst:g}); the input bounds must satisfy lower <= upper")
    if network.input_coding == "spike":
        for name, x in (("lower", lower), ("upper", upper)):
            if not ((x == 0) | (x == 1)).all():
                raise ValueError(
                    f"{name} must be binary (0/1) for a spike-input network; use input_coding='direct' for analog "
                    "inputs (DirectLinf) or build spike bounds with DigitalLinf / SpikeL0 (event frames from tonic's "
                    "ToFrame hold event counts: binarize them with (frames > 0).float())"
                )
    if labels is not None:
        B = lower.shape[1]
        if not isinstance(labels, Tensor):
            raise TypeError(f"labels must be an integer tensor of shape [{B}], got {type(labels).__name__}")
        if labels.dtype not in (torch.int64, torch.int32) or labels.shape != (B,):
            raise ValueError(f"labels must be an integer tensor of shape [{B}], got {labels.dtype} {tuple(labels.shape)}")
    return lower, upper


def compute_bounds(
    network: SpikingNetwork,
    lower: Tensor,
    upper: Tensor,
    labels: Tensor | None = None,
    method: Method = "crown-ibp",
    exhaustive: bool = False,
    *,
    ibp_sink: list[IBPResult] | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    """Certified bounds of a spiking network's output rates over an input box.

    Args:
        network: the :class:`SpikingNetwork`.
        lower, upper: ``[T', B, *input_shape]`` input bounds with ``lower <= upper``;
            binary for spike inputs, real for a direct-coded first layer.
        labels: ``LongTensor[B]``. With labels the result is ``[B, C-1]``: lower bounds of
            ``rate[y] - rate[j]`` for every ``j != y``, in increasing ``j``; a sample is
            verified (for these input bounds) when all are ``> 0``. Without labels the
            result is ``(lb, ub)``, each ``[B, C]``, bounds on the output rates.
        method: one of :data:`METHODS`.
        exhaustive: only for ``best`` / ``best-full`` with labels: run the optimised S-CROWN on every
            sample (the tightest margins everywhere) instead of the early exit below.
        ibp_sink: a list to which the S-IBP pass every method starts from is appended (its
            membrane intervals carry the graph), for a caller that also needs them, e.g.
            :func:`~snn_robust.loss.certified_loss`'s unstable-neuron regulariser, without a
            second pass.

    **``best`` with early exit.** ``best`` is the maximum over the methods (``best-full``
    with ``crown-full`` too), and the optimised S-CROWN costs ``iterations`` (20) S-CROWN
    passes, ``crown-full`` two backward rows per unstable membrane of the later layers. With labels and
    ``exhaustive=False`` the cheap methods (``ibp``, ``crown-ibp``, ``crown-ibp-adaptive``)
    run first on the whole batch; a sample whose cheap margins (rounded as below) are all
    ``> 0`` is verified already, and the optimised S-CROWN (and ``crown-full``) run only on
    the others
    (its Adam weights are per sample). A maximum of sound bounds that is ``> 0`` stays
    ``> 0`` when more bounds join it, so the verified set is the exhaustive one's and
    unverified samples get the exhaustive margins, exactly in exact arithmetic; in float32
    a sample's optimised bound also depends, through rounding amplified by the Adam steps,
    on which other samples share its batch (measured up to ~1e-2 with a real-valued
    readout, for the exhaustive path as much), so near-zero margins may differ there. A
    verified sample's margins are the cheap methods' maximum, still sound lower bounds but
    possibly below the exhaustive ``best``'s. Without
    labels (rate bounds) nothing is verified and every method runs on every sample.

    The result is differentiable with respect to the network's parameters.

    **Bad input** is refused before any bounding, with a ``ValueError`` (``TypeError`` for
    a wrong kind of object) that names the culprit: an empty batch or ``T' = 0`` (the same
    error for every method), NaN / infinite bounds, neuron parameters out of range or
    weights not finite (named by layer; checked on every call, since training moves
    them), a per-sample shape some layer cannot take or other than the network's
    ``input_shape``, bounds on another device, non-binary bounds for a spike-input
    network. float16 / float64 bounds are cast to the network's dtype (sound: rounding is
    monotone, so the cast box keeps every input of that dtype it held).

    **Readouts.** With ``network.readout`` (class scores ``W rate + b``: a voting layer,
    or a time-averaged chain of affine layers, whose ``W`` is read by their exact
    transposes) ``C`` is the readout's class count and the bounds are on the scores: the
    specification ``spec`` on classes becomes ``spec @ W`` on the output rates, bounded as
    above, plus ``spec @ b``. A voting readout's scores lie on the grid ``Z / (g T')``; a
    learned ``nn.Linear`` readout has no grid, so its bounds are only lowered by the
    rounding tolerance.

    **Floating point.** The membrane intervals hold every float membrane that any forward
    pass can compute (each widened by its own rounding-error bound,
    :mod:`~snn_robust.bounds.rounding`), so the bounds hold for our forward, snnTorch's and
    SpikingJelly's, with ``>`` or ``>=`` firing; with ``lower == upper`` and no membrane
    within its error bound of the threshold, every method returns the true margins.

    **The grid.** True margins and rates are multiples of ``1/T'``; every bound is rounded
    outward to that grid, ``ceil((lb - tol) T') / T'`` (:func:`~snn_robust.bounds.rounding.round_to_grid`),
    so a sample is never certified where a reachable input ties (a margin ``> 0`` is at
    least ``1/T'``). The rounding is straight-through for gradients: the value is rounded,
    the gradient is that of the unrounded bound, which certified training needs (a plain
    ``ceil`` has zero gradient almost everywhere).

    **crown-ibp >= ibp.** The backward pass of S-CROWN keeps, after each layer, a linear
    bound ``sum_t A_t . s_t[k] + c`` on the specification. Concretised over S-IBP's spike
    box of layer ``k`` it is a sound bound ``P_k``; at the output (coefficients ``C/T'`` on
    the output spikes, nothing relaxed yet) ``P_K`` is exactly S-IBP's bound. ``crown-ibp``
    returns ``max(P_K, P_{K-1}, ..., P_0)`` per row, ``P_0`` the bound at the input, so it is
    at least S-IBP's bound on every margin. (No choice of the fire relaxation alone can
    guarantee this: for an unstable neuron the lower line ``(m - th)/(m^u - th)`` is below
    S-IBP's constant 0 on ``[m^l, th)`` and the upper line above 1 on ``(th, m^u]``, so each
    line is looser than the interval it replaces, pointwise, and only the backward pass
    can win it back through cancellations; the maximum keeps the win where there is one.)
    """
    lower, upper = _validate(network, lower, upper, labels, method)
    ibp = s_ibp(network, lower, upper)
    if ibp_sink is not None:
        ibp_sink.append(ibp)
    rl, _ = ibp.rates()
    B, C = rl.shape
    readout = network.readout
    if readout is not None:  # class scores W rate + b: the specification moves onto the rates
        W, b = readout_matrix(readout, tuple(ibp.spikes[-1][0].shape[2:]), rl)
        C = W.shape[0]
    if labels is not None:
        if ((labels < 0) | (labels >= C)).any():
            what = "classes (the readout's)" if readout is not None else "outputs"
            raise ValueError(f"labels must lie in [0, {C - 1}] for a network with {C} {what}")
        spec = margin_spec(labels, C, rl.dtype)
    else:
        eye = torch.eye(C, dtype=rl.dtype, device=rl.device)
        spec = torch.cat([eye, -eye]).unsqueeze(0).expand(B, 2 * C, C)
    spec_bias = None
    if readout is not None:
        spec_bias = None if b is None else spec @ b
        spec = spec @ W

    def finish(lb: Tensor) -> Tensor:
        if readout is None:
            return round_to_grid(lb, lower.shape[0])
        if spec_bias is not None:
            lb = lb + spec_bias
        # a voting readout's scores are on a finer grid; real readout weights have none
        grid = readout.grid()
        return round_to_grid(lb, lower.shape[0] * grid) if grid else lb - grid_tolerance(lb.dtype)

    # the method's passes (its registry entry), in order; the expensive ones of a method that
    # also has cheap ones (best) run, with labels, only where the cheap ones do not verify
    names = BOUND_METHODS[method].passes
    final = _FINAL in names and labels is not None and readout is None
    names = tuple(name for name in names if name != _FINAL)
    cheap = [name for name in names if name not in _EXPENSIVE]
    costly = [name for name in names if name in _EXPENSIVE]
    passes = _passes(network, ibp, lower, upper, spec)
    found = _run(passes, cheap)
    if cheap and costly and labels is not None and not exhaustive:
        found.append(_optimized_unverified(network, ibp, lower, upper, spec, found, finish, costly))
    else:
        found += _run(passes, costly)
    lb = _maximum(found)
    if len(found) > 1 and lb.requires_grad:
        # the value is the maximum; its gradient comes from the last (most expressive) method
        # within the grid tolerance of it, so ties with S-IBP (whose gradient vanishes where
        # the surrogate windows are empty) still train through the linear bound
        tol = grid_tolerance(lb.dtype)
        source = found[0]
        for other in found[1:]:
            source = torch.where(other >= lb - tol, other, source)
        lb = source + (lb - source).detach()
    if final:  # the MILP on the rows still unverified; its value, the gradient of the others
        tight = _milp(network, ibp, lower, upper, spec, finish(lb.detach()))
        lb = lb + (torch.maximum(lb.detach(), tight) - lb.detach())
    lb = finish(lb)

    if labels is not None:
        return lb
    return lb[:, :C], -lb[:, C:]
