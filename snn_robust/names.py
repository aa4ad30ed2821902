"""Names the command line lists before it computes anything: the registry of bound methods
and the datasets. They live here, in a module that imports nothing heavy, so that building
the ``snn-robust`` parser and every ``--help`` stay free of torch; :mod:`snn_robust.bounds.api`,
the training configs, the CLI and :mod:`snn_robust.data` read them from here (one source of
truth)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from .datasets import SPECS

__all__ = ["BOUND_METHODS", "BoundMethod", "DATASETS", "METHODS", "Method", "check_method"]

Method = Literal[
    "ibp", "crown-ibp", "crown-ibp-paper", "crown-ibp-adaptive", "crown-ibp-optimized", "crown-full", "milp", "best",
    "best-full",
]
"""The bound methods' names as a type (for annotations); :data:`BOUND_METHODS` describes them
(tests/test_cli_startup.py checks that both list the same names)."""


@dataclass(frozen=True)
class BoundMethod:
    """One bound method of :func:`snn_robust.compute_bounds`: its ``name`` (the ``method``
    argument, ``--method`` on the command line), a one-line ``summary``, the longer
    ``description``, and ``passes``: the bound passes it computes, whose elementwise maximum
    (each pass is sound, so the maximum is) is the method's bound; the passes themselves are
    functions of :mod:`snn_robust.bounds.api` (``_passes``): ``ibp`` (S-IBP), ``crown``
    (S-CROWN concretised at every layer), ``crown-paper``, ``crown-adaptive``, ``crown-full``,
    ``crown-optimized``, ``milp`` (last, on the rows the others leave unverified). ``training``: whether its bound is meant for certified training
    (cheap enough, and differentiable in a useful way), as opposed to certification only."""

    name: str
    summary: str
    description: str
    passes: tuple[str, ...]
    training: bool = True


_REGISTRY = (
    BoundMethod("ibp", "S-IBP (Eq. 7, 9, 11)", "S-IBP: interval bounds through every layer and time step (Eq. 7, 9, 11).", ("ibp",)),
    BoundMethod(
        "crown-ibp", "S-CROWN with S-IBP intermediate bounds, never looser than S-IBP",
        "S-CROWN (Eq. 8, 10, Algorithm 2) with S-IBP intermediate bounds, concretised also at every hidden "
        "spike layer and at the output (where it is S-IBP's bound), the per-row maximum: never looser than "
        "S-IBP, by construction (see :func:`snn_robust.bounds.compute_bounds`).", ("ibp", "crown")),
    BoundMethod(
        "crown-ibp-paper", "the paper's S-CROWN exactly (for reproduction)",
        "The paper's S-CROWN exactly (its relaxation, concretised at the input only), for reproduction; it "
        "can be looser than S-IBP.", ("crown-paper",)),
    BoundMethod(
        "crown-ibp-adaptive", "S-CROWN with reset planes chosen per neuron",
        "The paper's S-CROWN with the reset planes chosen per neuron among the four faces of the reset's "
        "convex hull.", ("crown-adaptive",)),
    BoundMethod(
        "crown-ibp-optimized", "S-CROWN with relaxations optimised per neuron (certification)",
        "Fire lines and reset planes optimised per neuron within their valid families (alpha-CROWN style, "
        "20 projected Adam steps; for certification rather than training).", ("crown-optimized",), training=False),
    BoundMethod(
        "crown-full", "full S-CROWN: hidden membranes bounded by backward passes too (certification)",
        "Full S-CROWN: the membranes of every LIF layer after the first bounded by backward passes too where "
        "S-IBP leaves them unstable, then ``crown-ibp`` on the tightened intervals "
        "(:mod:`snn_robust.bounds.intermediate`; for certification: many more backward rows).", ("crown-full",),
        training=False),
    BoundMethod(
        "milp", "crown-ibp, then an exact MILP on the margins it leaves unverified (certification)",
        "``crown-ibp``, then, with labels, a mixed-integer encoding of the network (exact up to a "
        "floating-point band) solved with HiGHS per margin row that ``crown-ibp`` leaves unverified "
        "(:mod:`snn_robust.bounds.milp`; per-sample time limit and binary cap from ``milp_limits``). "
        "Networks it does not encode (BatchNorm, max pooling, rate readouts) and rate bounds get "
        "``crown-ibp``'s bound.", ("ibp", "crown", "milp"), training=False),
    BoundMethod(
        "best", "the maximum of the methods up to crown-ibp-optimized, then the MILP (certification)",
        "The elementwise maximum of ``ibp``, ``crown-ibp``, ``crown-ibp-adaptive`` and "
        "``crown-ibp-optimized`` (each is sound, so their maximum is); with labels, the optimised one runs "
        "only on samples the cheap ones leave unverified, and the MILP (``milp``) last, on the rows still "
        "unverified. ``crown-full`` is left out: it costs 20-130x "
        "``crown-ibp`` and up to minutes per CONV sample where most neurons are unstable "
        "(docs/tightness.md); ``best-full`` adds it.",
        ("ibp", "crown", "crown-adaptive", "crown-optimized", "milp"), training=False),
    BoundMethod(
        "best-full", "best plus crown-full (certification; slow where many neurons are unstable)",
        "The elementwise maximum of all the methods, ``crown-full`` included; with labels, the expensive "
        "ones run only on samples the cheap ones leave unverified, the MILP last.",
        ("ibp", "crown", "crown-adaptive", "crown-full", "crown-optimized", "milp"), training=False),
)

BOUND_METHODS: dict[str, BoundMethod] = {m.name: m for m in _REGISTRY}
"""Every bound method by name, in the order the command line lists them."""

METHODS: tuple[str, ...] = tuple(BOUND_METHODS)
"""The bound methods' names (:data:`BOUND_METHODS`): ``ibp``, ``crown-ibp`` (the default),
``crown-ibp-paper``, ``crown-ibp-adaptive``, ``crown-ibp-optimized``, ``crown-full``,
``milp``, ``best``, ``best-full``."""

def check_method(method: Any, what: str = "method") -> str:
    """``method`` if it names a bound method; otherwise a ``ValueError`` naming ``what`` and
    listing the methods with their summaries. The one check of a method name: the public
    entry points that take one (:func:`~snn_robust.compute_bounds`, the training configs and
    steps, the command line's choices) all use it or :data:`METHODS`."""
    if isinstance(method, str) and method in BOUND_METHODS:
        return method
    listing = "; ".join(f"{m.name}: {m.summary}" for m in _REGISTRY)
    raise ValueError(f"{what} must be one of {METHODS}, got {method!r} ({listing})")


#: Names accepted by :func:`snn_robust.data.fetch` and ``snn-robust data fetch``: the
#: datasets of :data:`snn_robust.datasets.SPECS` (plain data, no torch).
DATASETS: tuple[str, ...] = tuple(SPECS)
