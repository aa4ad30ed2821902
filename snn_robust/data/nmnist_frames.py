"""N-MNIST: find the official layout under the data root, check each recording (known SHA-256
or format), and bin the events into binary frames."""
from __future__ import annotations

import io as _io
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..validation import check_positive_int
from .common import ChecksumError, DatasetNotFoundError, _as_root, _require, _sha256

__all__ = ["NMNIST_SENSOR_SIZE", "NMNISTCheck", "NMNISTFrames", "check_nmnist_recording", "locate_nmnist",
           "nmnist", "verify_nmnist"]

log = logging.getLogger(__name__)

#: N-MNIST sensor size as tonic writes it: (width x, height y, polarities).
NMNIST_SENSOR_SIZE = (34, 34, 2)
_NMNIST_SPLITS = {True: "Train", False: "Test"}


def _nmnist_candidates(root: Path) -> list[Path]:
    """Folders under the data root that may hold the official layout, in the order tried."""
    return [root, root / "NMNIST", root / "nmnist", root / "nmnist-small"]


def _has_split(folder: Path, split: str) -> bool:
    d = folder / split
    return d.is_dir() and any(any((d / str(c)).glob("*.bin")) for c in range(10) if (d / str(c)).is_dir())


def locate_nmnist(root: str | os.PathLike[str] | None = None, train: bool | None = None) -> Path:
    """Find a folder with N-MNIST in the official layout ``{Train,Test}/<label>/<id>.bin``.

    Tries ``root``, ``root/NMNIST`` (tonic's layout), ``root/nmnist`` and ``root/nmnist-small``
    (``root`` defaults to :func:`default_data_root`); no folder outside the data root. For
    the small real subset of the development machines, pass its parent folder as ``root``
    (``--data-root``, or ``$SNN_ROBUST_DATA``).

    Args:
        train: the split that must be present (``None``: Train or Test).

    Raises:
        DatasetNotFoundError: no candidate holds the split; says where to put the release.
    """
    base = _as_root(root)
    candidates = _nmnist_candidates(base)
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
        steps = check_positive_int("steps", steps)
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
    from ..nmnist_manifest import RECORDINGS

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
    verify: bool = True,
) -> NMNISTFrames:
    """N-MNIST as binary frames ``[T=steps, 2, 34, 34]``; see :class:`NMNISTFrames` for the binning.

    The folder is found by :func:`locate_nmnist` under the data root ``root`` (default
    :func:`default_data_root`).

    Raises:
        DatasetNotFoundError: no folder holds the requested split.
    """
    folder = locate_nmnist(root, train)
    log.info("N-MNIST: using %s", folder)
    return NMNISTFrames(folder, train, steps, first_saccade_only=first_saccade_only, cache=cache, verify=verify)
