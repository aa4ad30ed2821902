"""Files that survive a crash and refuse damage: the one atomic writer and checksummed
torch files.

- :func:`atomic_write` writes through a temporary file in the target's folder, fsyncs it and
  renames it over the target (``os.replace``), so a reader sees the old file or the new one,
  never half of one. Every file snn-robust writes for later reading goes through it (model
  files, checkpoints, dataset files, JSON results).
- :func:`save_checked` / :func:`load_checked`: a torch file whose content carries its own
  SHA-256. The file is ``torch.save({"format": CHECKED_FORMAT, "sha256": h, "payload": b})``
  where ``b`` are the bytes of ``torch.save(obj)`` and ``h = sha256(b)``. Both levels are read
  with ``torch.load(weights_only=True)``: only tensors, numbers, strings, bytes and plain
  containers are rebuilt, so a file from a stranger cannot run code when it is loaded (a
  pickle with a ``__reduce__`` payload is refused before anything of it runs).
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import pickle
import re
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch

__all__ = [
    "CHECKED_FORMAT",
    "DamagedFileError",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "read_json",
    "read_jsonl",
    "write_json",
    "load_checked",
    "read_checked",
    "remove_stale_temporaries",
    "save_checked",
]

log = logging.getLogger(__name__)

CHECKED_FORMAT = "snn-robust-checked/1"


class DamagedFileError(ValueError):
    """A file is truncated, fails its checksum, is no torch file, or holds objects other than
    plain data (which would run code if unpickled). The message names the file."""


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not possible on every platform (Windows)
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _temp_prefix(path: Path) -> str:
    return f".{path.name}."


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], None], *,
                 keep_previous: str | os.PathLike[str] | None = None) -> Path:
    """Call ``write(f)`` on a temporary file beside ``path``, fsync it, then rename it over
    ``path`` (atomic on POSIX and Windows) and fsync the folder.

    With ``keep_previous``, an existing ``path`` is first renamed to ``keep_previous``, so the
    last good file survives one more write. A crash between the two renames leaves no
    ``path`` but an intact ``keep_previous`` (readers fall back to it). If ``write`` fails,
    the temporary file is removed and ``path`` is untouched. Temporary files are named
    ``.<name>.<random>.tmp``; :func:`remove_stale_temporaries` deletes those a killed process
    left behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_temp_prefix(path), suffix=".tmp")
    try:
        # mkstemp creates the file private (0600); give it the mode a plain open() would
        with contextlib.suppress(OSError):
            os.chmod(tmp, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if keep_previous is not None and path.exists():
            os.replace(path, keep_previous)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """:func:`atomic_write` of ``data``."""
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """:func:`atomic_write` of ``text`` in UTF-8."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """:func:`atomic_write_text` of ``obj`` as indented JSON."""
    return atomic_write_text(path, json.dumps(obj, indent=2))


def read_json(path: str | os.PathLike[str], fix: str) -> dict[str, Any]:
    """The JSON object in ``path``; a damaged file (unreadable, not JSON, not an object) is a
    :class:`DamagedFileError` naming it and saying ``fix``, what the user can do (files are
    written atomically, so damage comes from outside snn-robust)."""
    try:
        obj = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DamagedFileError(f"{path} is damaged ({exc}); {fix}") from None
    if not isinstance(obj, dict):
        raise DamagedFileError(f"{path} is damaged (not a JSON object); {fix}")
    return obj


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The rows of a JSON-lines file (one object per line, blank lines skipped); ``[]`` when
    there is no file (a run that has logged nothing yet)."""
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def remove_stale_temporaries(path: str | os.PathLike[str]) -> list[Path]:
    """Delete the ``.<name>.*.tmp`` files that :func:`atomic_write` of ``path`` leaves when
    its process is killed mid-write; return what was removed."""
    path = Path(path)
    removed = []
    if path.parent.is_dir():
        for stale in path.parent.glob(f"{_temp_prefix(path)}*.tmp"):
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()
                removed.append(stale)
    if removed:
        log.info("removed %d temporary file(s) left by an interrupted write of %s", len(removed), path)
    return removed


def _to_bytes(obj: Any) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def save_checked(obj: Any, path: str | os.PathLike[str], *,
                 keep_previous: str | os.PathLike[str] | None = None) -> Path:
    """Write ``obj`` (tensors, numbers, strings, bytes, plain containers) as a checksummed
    torch file, atomically (see the module docstring and :func:`atomic_write`)."""
    payload = _to_bytes(obj)
    wrapper = {"format": CHECKED_FORMAT, "sha256": hashlib.sha256(payload).hexdigest(), "payload": payload}
    return atomic_write(path, lambda f: torch.save(wrapper, f), keep_previous=keep_previous)


def _load_plain(source: Any, name: Path, map_location: Any) -> Any:
    try:
        with warnings.catch_warnings():
            # torch warns about the pickle protocol of foreign files: the refusal below says it all
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(source, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        # name what was refused, not torch's advice on allow-listing it
        found = re.search(r"Unsupported (global: GLOBAL \S+|operand \d+)", str(exc))
        detail = found.group(0) if found else ""
        raise DamagedFileError(
            f"{name} holds Python objects other than tensors, numbers, strings and plain containers"
            f"{f' ({detail})' if detail else ''}; it was refused without running anything from it "
            "(unpickle such a file only if you wrote it yourself)") from None
    except Exception as exc:  # zip, EOF and format errors from torch's reader
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise DamagedFileError(f"{name} is damaged, truncated or not a torch file ({type(exc).__name__}: {reason})") from None


def read_checked(path: str | os.PathLike[str], map_location: str | torch.device | None = "cpu") -> tuple[Any, bool]:
    """``(content, verified)`` of a torch file: ``verified`` is True for a file written by
    :func:`save_checked` whose SHA-256 holds, False for a plain torch file (no checksum, e.g.
    written by an older snn-robust). Both are read with ``weights_only=True``.

    Raises:
        FileNotFoundError: no file at ``path``.
        DamagedFileError: empty, truncated or corrupted file, checksum mismatch, or objects
            that are not plain data.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    if path.stat().st_size == 0:
        raise DamagedFileError(f"{path} is empty (0 bytes)")
    outer = _load_plain(path, path, map_location)
    if not (isinstance(outer, dict) and outer.get("format") == CHECKED_FORMAT):
        return outer, False
    payload, expected = outer.get("payload"), outer.get("sha256")
    if not isinstance(payload, bytes) or not isinstance(expected, str):
        raise DamagedFileError(f"{path} is damaged: its checksum record is incomplete")
    actual = hashlib.sha256(payload).hexdigest()
    if actual != expected:
        raise DamagedFileError(f"{path} is damaged: SHA-256 of its content is {actual[:16]}..., "
                               f"the file records {expected[:16]}...")
    return _load_plain(io.BytesIO(payload), path, map_location), True


def load_checked(path: str | os.PathLike[str], map_location: str | torch.device | None = "cpu") -> Any:
    """The content of a file written by :func:`save_checked`, its SHA-256 verified (see
    :func:`read_checked`, which also says what it raises). A plain torch file without a
    checksum is read with ``weights_only=True`` and a warning."""
    content, verified = read_checked(path, map_location)
    if not verified:
        log.warning("%s carries no checksum (written by an older version?); its integrity is not verified", path)
    return content
