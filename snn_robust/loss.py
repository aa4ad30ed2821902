"""The certified (bound-based) training loss (Section 3.3, after CROWN-IBP [38])."""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from .bounds.api import Method, compute_bounds
from .bounds.loss_fusion import fused_ce_bound
from .network import SpikingNetwork
from .perturbations import Perturbation
from .validation import check_number

__all__ = ["certified_loss", "bound_logits"]

Reduction = Literal["mean", "sum", "none"]
REDUCTIONS = ("mean", "sum", "none")


def bound_logits(margins: Tensor, labels: Tensor) -> Tensor:
    """``-[0, lb]``: logits ``[B, C]`` with 0 at the label and ``-lb_j`` at every other
    class ``j`` (``margins`` is ``[B, C-1]`` in increasing ``j``). Cross-entropy on these
    upper-bounds the cross-entropy of every network output the bounds admit."""
    B, S = margins.shape
    C = S + 1
    keep = torch.arange(C, device=labels.device).unsqueeze(0) != labels.unsqueeze(1)
    logits = margins.new_zeros(B, C)
    return logits.masked_scatter(keep, -margins)


def certified_loss(
    network: SpikingNetwork,
    x: Tensor,
    labels: Tensor,
    perturbation: Perturbation,
    steps: int = 3,
    method: Method = "ibp",
    generator: torch.Generator | None = None,
    fusion: bool = False,
    *,
    bound_scale: float = 1.0,
    reduction: Reduction = "mean",
    return_margins: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """The paper's bound loss ``CE(bound_scale * -[0, lb], y)`` (Section 3.3), averaged over
    the batch; the one certified loss of the library (:class:`~snn_robust.RobustTrainingStep`
    and the recipes' evaluation call it).

    ``lb`` are the margin lower bounds (:func:`~snn_robust.compute_bounds` with ``method``)
    over the input bounds ``perturbation.bounds(x, steps, generator)``, ``steps`` being the
    paper's ``T'``. ``bound_scale`` multiplies the bound logits (paper: 1). ``reduction``:
    ``"mean"`` (default), ``"sum"`` or ``"none"`` (one loss per sample, ``[B]``), as in
    ``torch.nn.functional.cross_entropy``. ``return_margins=True`` returns ``(loss, lb)``
    with ``lb`` ``[B, C-1]`` (e.g. for the share verified, ``(lb > 0).all(1)``); the margins
    carry the graph when the loss does.

    ``fusion=True`` bounds the cross-entropy itself with one specification row instead of
    the ``C - 1`` margins (:func:`~snn_robust.bounds.loss_fusion.fused_ce_bound`; methods
    ``ibp``, ``crown-ibp``, ``crown-ibp-adaptive``): never above S-IBP's loss, one S-CROWN
    row in place of ``C - 1`` (docs/performance.md); with ``bound_scale`` it bounds
    ``CE(bound_scale * z, y)``, as the margin loss does.

    The default training bound is S-IBP (``method="ibp"``), not the paper's CROWN-IBP:
    measured on MNIST-FC at eps 0.12 with Adam (docs/results.md), training on the S-IBP
    bound gave the attack-error gain and verified samples, while training on CROWN-IBP made
    the network *easier* to attack and verified none. Certify with ``compute_bounds(...,
    method="best")`` afterwards. The recommended loop around it (Adam, eps ramp, loss
    weights) is in docs/user-guide.md, "Recommended settings".

    ``x`` is what the perturbation set takes (an image batch ``[B, X...]`` for
    ``DigitalLinf`` / ``DirectLinf``, a spike input ``[T, B, X...]`` for ``SpikeL0``);
    the input bounds are sampled with ``steps`` (the paper's ``T'``) steps.

    Bad input raises, never a NaN or silently wrong loss: ``ValueError`` naming the
    tensor for NaN / infinite ``x``, naming the layer for NaN / infinite neuron
    parameters or weights, and one ``ValueError`` for an empty batch (``B = 0``: there
    is no mean over nothing; skip empty batches) as from :func:`compute_bounds`;
    ``TypeError`` for a ``perturbation`` that is not a :class:`Perturbation`.
    """
    if not isinstance(perturbation, Perturbation):
        raise TypeError(
            f"certified_loss: perturbation must be an snn_robust Perturbation (DigitalLinf, SpikeL0, DirectLinf), "
            f"got {type(perturbation).__name__}"
        )
    bound_scale = check_number("certified_loss: bound_scale", bound_scale, 0.0, low_open=True)
    if reduction not in REDUCTIONS:
        raise ValueError(f"certified_loss: reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if fusion and return_margins:
        raise ValueError("certified_loss: fusion=True bounds the cross-entropy itself and computes no margin bounds: "
                         "use neither return_margins=True with it, or fusion=False to get the margins")
    lower, upper = perturbation.bounds(x, steps, generator)
    if fusion:
        per_sample = fused_ce_bound(network, lower, upper, labels, method=method, scale=bound_scale)
        return per_sample if reduction == "none" else getattr(per_sample, reduction)()
    margins = compute_bounds(network, lower, upper, labels=labels, method=method)
    loss = F.cross_entropy(bound_logits(margins, labels) * bound_scale, labels, reduction=reduction)
    return (loss, margins) if return_margins else loss
