"""Bound propagation: S-IBP (forward intervals) and S-CROWN (backward linear bounds)."""
from .api import METHODS, compute_bounds, margin_spec
from .crown import s_crown
from .ibp import IBPResult, s_ibp

__all__ = ["METHODS", "compute_bounds", "margin_spec", "s_crown", "s_ibp", "IBPResult"]
