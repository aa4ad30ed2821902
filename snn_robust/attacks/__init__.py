"""White-box attacks on spiking networks: spike-compatible gradients, EOT-PGD, greedy flips.

Shape glossary: ``T`` time steps, ``B`` batch, ``X...`` one sample's input shape,
``D = T * prod(X)`` elements of one sample's spike train.

Layout: :mod:`.common` (the :class:`Attack` interface and the shared pieces), :mod:`.spike`
(spike inputs), :mod:`.digital` (images); this package re-exports the public names.

Two kinds of input, two budgets:

* **spike inputs** (``input_kind = "spike"``; event frames, or fixed spike trains): ``x`` is
  a binary ``[T, B, X...]`` tensor and the budget is an l_0 count of changed elements per
  sample, relative to the clean input. Attacks: :class:`SpikeCompatibleAttack`,
  :class:`GreedyFlip`. Both can be confined to a box ``[lower, upper]`` (e.g. the input
  bounds of :class:`~snn_robust.SpikeL0`): only positions with ``lower != upper`` change.
* **digital inputs** (``input_kind = "digital"``; images rate coded by Bernoulli sampling
  every step, Eq. 4): ``x`` is an image batch ``[B, X...]`` in ``[0, 1]`` and the budget is
  the l_inf ball of radius ``eps`` around it, intersected with ``[0, 1]``. Attacks:
  :class:`SpikeCompatibleDigitalAttack`, :class:`EOTPGD`. They return an *image*; whoever
  scores it must re-encode it with fresh Bernoulli samples (see
  :func:`snn_robust.evaluate.attack_error`), since the samples seen during the attack are
  not the ones the model will see.

Every attack shares one interface, ``attack(net, x, y, generator=None, *, callback=None)
-> x_adv``: ``generator`` (a ``torch.Generator`` on the input's device) makes it
deterministic; ``callback(i, x_adv_i)`` is called after iteration ``i`` with the current
adversarial input (for instrumentation: budgets, loss curves). The spike attacks also take
``box=(lower, upper)``. Attacks are frozen dataclasses of their parameters; ``with_eps``
returns the same attack at another budget and ``config()`` a JSON-ready description.

The loss maximised is the cross-entropy of the output rates (``loss="ce"``) or the rate
margin ``max_{j != y} r_j - r_y`` (``loss="margin"``); input gradients flow through BPTT and
the neurons' surrogate gradients. Every attack takes ``surrogate``, the surrogate gradient
used while attacking (``None``: the model's own; :class:`GreedyFlip` takes ``surrogates``
and tries them in turn). The model's training surrogate (the
paper's rectangle ``|m - th| < 0.5``) is zero for every neuron far from its threshold, so
gradients often vanish on a trained network; a wider window (e.g.
``Rectangular(half_width=2.0)``) can find adversarial inputs the model's own surrogate misses.
The forward pass, and so every success check and every evaluation, is unaffected.

Example: ``x_adv = EOTPGD(eps=0.1).attack(net, images, labels, torch.Generator().manual_seed(0))``
"""
from __future__ import annotations

from .common import Attack, attack_surrogate, spike_compatible_direction
from .digital import EOTPGD, SpikeCompatibleDigitalAttack
from .spike import GreedyFlip, SpikeCompatibleAttack

__all__ = [
    "Attack",
    "SpikeCompatibleAttack",
    "SpikeCompatibleDigitalAttack",
    "EOTPGD",
    "GreedyFlip",
    "attack_surrogate",
    "spike_compatible_direction",
]
