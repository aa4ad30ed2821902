"""Exceptions raised on input the engine refuses (never a silently wrong bound)."""
from __future__ import annotations

__all__ = ["UnsupportedLayerError"]


class UnsupportedLayerError(TypeError):
    """A layer or model structure the bound engine cannot handle, named with its path."""
