"""The certified (bound-based) training loss (Section 3.3, after CROWN-IBP [38])."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .bounds.api import Method, compute_bounds
from .bounds.loss_fusion import fused_ce_bound
from .network import SpikingNetwork
from .perturbations import Perturbation

__all__ = ["certified_loss", "bound_logits"]


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
) -> Tensor:
    """The paper's bound loss ``CE(-[0, lb], y)``, averaged over the batch.

    ``fusion=True`` bounds the cross-entropy itself with one specification row instead of
    the ``C - 1`` margins (:func:`~snn_robust.bounds.loss_fusion.fused_ce_bound`; methods
    ``ibp``, ``crown-ibp``, ``crown-ibp-adaptive``): never above S-IBP's loss, one S-CROWN
    row in place of ``C - 1`` (docs/performance.md).

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
    lower, upper = perturbation.bounds(x, steps, generator)
    if fusion:
        return fused_ce_bound(network, lower, upper, labels, method=method).mean()
    margins = compute_bounds(network, lower, upper, labels=labels, method=method)
    return F.cross_entropy(bound_logits(margins, labels), labels)
