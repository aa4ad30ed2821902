"""Names the command line lists before it computes anything: the bound methods and the
datasets. They live here, in a module that imports nothing heavy, so that building the
``snn-robust`` parser and every ``--help`` stay free of torch; :mod:`snn_robust.bounds.api`
and :mod:`snn_robust.data` import them from here (one source of truth)."""

from __future__ import annotations

from typing import Literal, get_args

from .datasets import SPECS

__all__ = ["DATASETS", "METHODS", "Method"]

Method = Literal[
    "ibp", "crown-ibp", "crown-ibp-paper", "crown-ibp-adaptive", "crown-ibp-optimized", "crown-full", "best"
]

METHODS: tuple[str, ...] = get_args(Method)
"""``ibp``: S-IBP (Eq. 7, 9, 11). ``crown-ibp`` (the default): S-CROWN (Eq. 8, 10,
Algorithm 2) with S-IBP intermediate bounds, concretised also at every hidden spike layer
and at the output (where it is S-IBP's bound), the per-row maximum: never looser than
S-IBP, by construction (see :func:`snn_robust.bounds.compute_bounds`). ``crown-ibp-paper``:
the paper's S-CROWN exactly (its relaxation, concretised at the input only), for
reproduction; it can be looser than S-IBP. ``crown-ibp-adaptive``: the paper's with the
reset planes chosen per neuron among the four faces of the reset's convex hull.
``crown-ibp-optimized``: fire lines and reset planes optimised per neuron within their valid
families (alpha-CROWN style, 20 projected Adam steps; for certification rather than
training). ``crown-full``: full S-CROWN, the membranes of every LIF layer after the first
bounded by backward passes too where S-IBP leaves them unstable, then ``crown-ibp`` on the
tightened intervals (:mod:`snn_robust.bounds.intermediate`; for certification: many more
backward rows). ``best``: the elementwise maximum of all of them (each is sound, so their max is)."""

#: Names accepted by :func:`snn_robust.data.fetch` and ``snn-robust data fetch``: the
#: datasets of :data:`snn_robust.datasets.SPECS` (plain data, no torch).
DATASETS: tuple[str, ...] = tuple(SPECS)
