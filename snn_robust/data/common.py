"""What every data module shares: the dataset errors, the data root (configuration, never a
development path: the argument, else ``$SNN_ROBUST_DATA``, else ``./data``), the SHA-256 helper
and optional dependencies."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

__all__ = ["DATA_ROOT_ENV", "ChecksumError", "DatasetError", "DatasetNotFoundError", "default_data_root"]

#: Environment variable that sets the default data root (else ``./data``).
DATA_ROOT_ENV = "SNN_ROBUST_DATA"

class DatasetError(Exception):
    """A dataset could not be located, fetched or read; the message says how to fix it."""


class DatasetNotFoundError(DatasetError, FileNotFoundError):
    """The dataset's files are not where they should be and could not be fetched."""


class ChecksumError(DatasetError):
    """A dataset file exists but its content is not the canonical file."""


def default_data_root() -> Path:
    """Return the default data root: ``$SNN_ROBUST_DATA`` if set and non-empty, else ``./data``."""
    env = os.environ.get(DATA_ROOT_ENV, "").strip()
    return Path(env) if env else Path("data")


def _as_root(root: str | os.PathLike[str] | None) -> Path:
    return default_data_root() if root is None else Path(root)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _require(module: str, package: str) -> Any:
    """Import an optional dependency or explain which extra installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise DatasetError(
            f"{package} is needed for this dataset but is not installed; "
            f"install it with: pip install 'snn-robust[data]'"
        ) from exc
