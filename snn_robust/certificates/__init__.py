"""Certificates beyond the sampled ones of Section 3.2 (method.md section 4).

Shape glossary: ``T`` steps, ``B`` batch, ``C`` classes, ``S`` specification rows,
``M = T * B`` folded, ``X...`` one sample's input shape, ``D`` its size, ``N`` the
outputs of the first spatial layer.

The paper's certificate holds for *one draw* of the input randomness: the sampled
Bernoulli maps of :class:`~snn_robust.DigitalLinf`, the sampled picks of
:class:`~snn_robust.SpikeL0`. Two stronger, sound statements:

* :func:`certify_over_codings`: a lower confidence bound on the probability, over the
  random coding maps, that the whole l_inf ball is certified under the map drawn
  (Clopper-Pearson over ``n`` independent maps);
* :func:`event_l0_bounds`: margin bounds over *every* event recording within ``k``
  flipped events (added or removed) of the observed one, anywhere in the recording or
  per time step: no sampling at all.

Layout: :mod:`.codings` (the first), :mod:`.events` (the second); this package re-exports
the public names.
"""
from __future__ import annotations

from .codings import CodingCertificate, certify_over_codings, clopper_pearson_lower, coding_certificate_summary
from .events import event_certified_error, event_l0_bounds

__all__ = [
    "CodingCertificate",
    "certify_over_codings",
    "clopper_pearson_lower",
    "coding_certificate_summary",
    "event_l0_bounds",
    "event_certified_error",
]
