"""Bound propagation: S-IBP (forward intervals) and S-CROWN (backward linear bounds)."""

from __future__ import annotations

import importlib
from typing import Any

#: Public name -> the submodule defining it, imported on first use (PEP 562). Lazy so that
#: ``snn_robust.network`` can import the small ``bounds.adapter_ops`` / ``bounds.spatial``
#: without running ``bounds.api``, which imports ``network`` back (whichever of the two a
#: program imports first).
_EXPORTS: dict[str, str] = {
    "METHODS": "api", "compute_bounds": "api", "margin_spec": "api", "s_crown": "crown",
    "IBPResult": "ibp", "s_ibp": "ibp",
}

__all__ = ["METHODS", "compute_bounds", "margin_spec", "s_crown", "s_ibp", "IBPResult"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
