"""The certified (bound-based) training loss (Section 3.3, after CROWN-IBP [38])."""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from .bounds.api import Method, compute_bounds
from .bounds.ibp import IBPResult, s_ibp
from .bounds.loss_fusion import fused_ce_bound
from .network import SpikingNetwork
from .perturbations import Perturbation
from .validation import check_number

__all__ = ["certified_loss", "bound_logits", "unstable_penalty"]

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


def unstable_penalty(network: SpikingNetwork, ibp: IBPResult) -> Tensor:
    r"""The unstable-neuron regulariser, one value per sample ``[B]``: over the ``K`` stages
    of ``network`` (threshold :math:`\vartheta_k`) and the S-IBP membrane bounds
    :math:`[\underline m^k, \overline m^k]` of ``ibp`` (Eq. 9 and 11, ``[T', B, N...]``),

    .. math::
        R = \frac1K \sum_{k=1}^{K} \operatorname{mean}_{t, n}
            \frac{\operatorname{relu}\big(\min(\overline m^k_{t,n} - \vartheta_k,\;
            \vartheta_k - \underline m^k_{t,n})\big)}{\vartheta_k},

    the relative distance by which each membrane interval that straddles the threshold must
    shrink to become stable (0 for a surely-firing or surely-silent neuron). The LIF analogue
    of the tightness term of Shi et al. 2021 ("Fast certified robust training"): its gradient
    reaches the membrane bounds also where the surrogate window of the S-IBP spike bound is
    empty, so it pushes unstable neurons towards stability that the bound loss alone does not.
    """
    parts = []
    for (ml, mu), stage in zip(ibp.membrane, network.stages):
        th = stage.lif.threshold
        gap = torch.relu(torch.minimum(mu - th, th - ml)) / th  # [T', B, N...]
        parts.append(gap.transpose(0, 1).flatten(1).mean(1))
    return torch.stack(parts).mean(0)


def certified_loss(
    network: SpikingNetwork,
    x: Tensor,
    labels: Tensor,
    perturbation: Perturbation,
    steps: int = 5,
    method: Method = "ibp",
    generator: torch.Generator | None = None,
    fusion: bool = False,
    *,
    bound_scale: float = 2.0,
    unstable_weight: float = 1 / 6,
    reduction: Reduction = "mean",
    return_margins: bool = False,
    ibp_sink: list[IBPResult] | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    """The paper's bound loss ``CE(bound_scale * -[0, lb], y)`` (Section 3.3), averaged over
    the batch, plus by default the unstable-neuron regulariser; the one certified loss of the
    library (:class:`~snn_robust.RobustTrainingStep` and the recipes' evaluation call it).

    **The defaults are the recommended training loss** (S-IBP bound over ``T' = 5`` input
    steps, bound logits scaled by 2, regulariser weight ``1/6``); certify at ``T' = 3`` as
    usual. Measured in a plain snnTorch loop on MNIST-FC at eps 0.12
    (``benchmarks/user_loop.py``, docs/results.md section 12; Adam 1e-3, 0.4 clean + 0.6 this
    loss, 2 seeds): against ``steps=3, unstable_weight=0`` T' = 5 and the regulariser gave +16
    points verified, -16 points EOT-PGD attack error and +10 points clean accuracy, the
    regulariser most of it. The scale 2 (docs/results.md section 14; ``fit``'s quick recipe, 3
    seeds) added 6 points verified and removed 3 of attack error at the same clean accuracy;
    1.5, 2.5, 3 and 4 did less. The paper's loss is ``certified_loss(..., steps=3,
    method="crown-ibp", bound_scale=1, unstable_weight=0)``.

    ``lb`` are the margin lower bounds (:func:`~snn_robust.compute_bounds` with ``method``)
    over the input bounds ``perturbation.bounds(x, steps, generator)``, ``steps`` being the
    paper's ``T'``. ``bound_scale`` multiplies the bound logits (paper: 1; default 2: the
    margins are spike rates in ``[-1, 1]``, so at scale 1 the loss of a verified sample stays
    large and its gradient weak, while a large scale lets the unverifiable samples dominate
    the loss: 4 lost clean accuracy and verified share). ``reduction``:
    ``"mean"`` (default), ``"sum"`` or ``"none"`` (one loss per sample, ``[B]``), as in
    ``torch.nn.functional.cross_entropy``. ``return_margins=True`` returns ``(loss, lb)``
    with ``lb`` ``[B, C-1]`` (e.g. for the share verified, ``(lb > 0).all(1)``); the margins
    carry the graph when the loss does.

    ``unstable_weight > 0`` adds ``unstable_weight * R`` per sample, ``R`` the
    unstable-neuron regulariser (:func:`unstable_penalty`, on the S-IBP membrane bounds over
    the same input bounds); it is no bound, only a training signal, so the margins returned
    with ``return_margins`` do not include it. The default ``1/6`` is 0.1 of the total loss
    in the paper's ``0.4 * clean + 0.6 * certified`` (``TrainConfig.unstable_weight=0.1``).
    In ``fit``'s quick recipe (docs/results.md sections 7 and 8) it added a few points of
    verified share and removed a few of attack error; a weight of 1 cost clean accuracy on
    one seed of two. ``unstable_weight=0`` gives the bound loss alone.

    ``ibp_sink``: a list to which the bound's S-IBP pass is appended (as
    :func:`~snn_robust.compute_bounds`' argument; :class:`~snn_robust.RobustTrainingStep`
    computes its regulariser on it).

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
    unstable_weight = check_number("certified_loss: unstable_weight", unstable_weight, 0.0)
    if reduction not in REDUCTIONS:
        raise ValueError(f"certified_loss: reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if fusion and return_margins:
        raise ValueError("certified_loss: fusion=True bounds the cross-entropy itself and computes no margin bounds: "
                         "use neither return_margins=True with it, or fusion=False to get the margins")
    lower, upper = perturbation.bounds(x, steps, generator)
    passes: list[IBPResult] = [] if ibp_sink is None else ibp_sink  # the bound's S-IBP pass
    if fusion:
        per_sample = fused_ce_bound(network, lower, upper, labels, method=method, scale=bound_scale)
        margins = None
        if unstable_weight > 0 or ibp_sink is not None:  # fusion keeps its own pass: a second one
            passes.append(s_ibp(network, lower, upper))
    else:
        margins = compute_bounds(network, lower, upper, labels=labels, method=method, ibp_sink=passes)
        if unstable_weight == 0:
            loss = F.cross_entropy(bound_logits(margins, labels) * bound_scale, labels, reduction=reduction)
            return (loss, margins) if return_margins else loss
        per_sample = F.cross_entropy(bound_logits(margins, labels) * bound_scale, labels, reduction="none")
    if unstable_weight > 0:
        per_sample = per_sample + unstable_weight * unstable_penalty(network, passes[-1])
    loss = per_sample if reduction == "none" else getattr(per_sample, reduction)()
    return (loss, margins) if return_margins else loss
