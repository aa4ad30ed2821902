"""Bound propagation: S-IBP (forward intervals) and S-CROWN (backward linear bounds).

The engine reads a :class:`~snn_robust.SpikingNetwork` (which imports nothing from here)
through its bound graph (:mod:`~snn_robust.bounds.graph`): one operator per layer,
spatial (:mod:`~snn_robust.bounds.spatial`, :mod:`~snn_robust.bounds.adapter_ops`) or
LIF (:mod:`~snn_robust.bounds.lif`). The complete verifier (the ``milp`` method and the
last stage of ``best``) writes the same network as a mixed-integer program
(:mod:`~snn_robust.bounds.milp`).
"""

from __future__ import annotations

from .api import METHODS, compute_bounds, margin_spec
from .crown import s_crown
from .ibp import IBPResult, s_ibp
from .milp import MILPResult, milp_limits, milp_verify
from .rounding import use_ieee_float32

__all__ = [
    "METHODS", "compute_bounds", "margin_spec", "s_crown", "s_ibp", "IBPResult", "MILPResult", "milp_limits",
    "milp_verify", "use_ieee_float32",
]
