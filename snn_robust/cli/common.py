"""What the ``snn-robust`` commands share: the usage error, argument types, the run
options, output-path checks, device and seed set-up, and printing under ``torchrun``.
Imports nothing heavy at module level (``--help`` stays free of torch)."""
from __future__ import annotations

import argparse
import math
import os
from pathlib import Path
from typing import Any, NoReturn

from ..names import BOUND_METHODS

__all__ = ["UsageError", "resolve_device", "seed_everything"]

class UsageError(Exception):
    """A mistake in what the user asked for; printed as one line, exit code 2."""


class Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors become :class:`UsageError` instead of usage + exit."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


def resolve_device(name: str) -> Any:
    """Map ``--device`` (``auto``, ``cpu``, ``cuda``) to a ``torch.device`` with
    :func:`snn_robust.training.resolve_device`; a device that cannot be used is a
    :class:`UsageError`. On CUDA it switches TF32 off, as that function does."""
    from ..training import resolve_device as resolve

    try:
        return resolve(name)
    except ValueError:
        if name.split(":")[0] == "cuda":
            raise UsageError(
                f"--device {name} was requested but no CUDA device is available (use --device cpu or auto)"
            ) from None
        raise UsageError(f"--device must be auto, cpu or cuda, got {name!r}") from None


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's random generators with ``seed``."""
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def eps_type(text: str) -> float:
    """An eps in [0, 1] (a fraction of the pixel range, or of the spike elements for N-MNIST)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"eps must be a number in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"eps must be in [0, 1], got {text}")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def _finite_float(text: str, *, strict: bool) -> float:
    """A finite number > 0 (``strict``) or >= 0; ``inf`` and ``nan`` are refused: they would
    train a NaN model or never end."""
    what = "a finite number > 0" if strict else "a finite number >= 0"
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if not (math.isfinite(value) and (value > 0 if strict else value >= 0)):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text}")
    return value


def positive_float(text: str) -> float:
    return _finite_float(text, strict=True)


def nonnegative_float(text: str) -> float:
    return _finite_float(text, strict=False)


def confidence(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a confidence in (0, 1), got {text!r}") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a confidence strictly between 0 and 1, got {text}")
    return value


def add_run_options(p: argparse.ArgumentParser, data_root: bool = True) -> None:
    """``--device`` / ``--seed`` also after the command (they override the global ones)."""
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=argparse.SUPPRESS,
                   help="where to compute (default: auto = cuda if available)")
    p.add_argument("--seed", type=int, default=argparse.SUPPRESS, help="random seed (default: 0)")
    if data_root:
        p.add_argument("--data-root", metavar="DIR", default=None,
                       help="data root holding MNIST/raw, FashionMNIST/raw or N-MNIST (default: $SNN_ROBUST_DATA or ./data)")
        p.add_argument("--no-verify-data", dest="verify_data", action="store_false",
                       help="accept IDX files that are not the canonical ones (your own data, test fixtures)")


def data_root(args: argparse.Namespace) -> Path | None:
    if args.data_root is None:
        return None
    root = Path(args.data_root)
    if not root.is_dir():
        raise UsageError(f"--data-root {root} is not a folder")
    return root


def load_model_arg(path: str, device: Any) -> tuple[Any, dict[str, Any]]:
    from ..modelfile import load_model

    try:
        return load_model(path, device)
    except FileNotFoundError as exc:
        raise UsageError(f"--model: {exc}") from None
    except ValueError as exc:
        raise UsageError(f"--model: {exc}") from None


def probe_folder(folder: Path, option: str, shown: Path) -> None:
    """Create ``folder`` if needed and write and delete a file in it, so that an unwritable
    output fails before any computing (checking permission bits is not enough: root, ACLs,
    read-only mounts)."""
    import tempfile

    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".snn-robust-probe.", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UsageError(f"{option} {shown} cannot be written ({exc.strerror or type(exc).__name__}: "
                         f"{exc.filename or folder}); choose another path") from None


def writable_file(text: str, option: str, example: str) -> Path:
    """The output file ``text`` after checking that it can be written."""
    out = Path(text)
    if out.is_dir():
        raise UsageError(f"{option} {out} is a folder; give a file name such as {out / example}")
    probe_folder(out.parent, option, out)
    return out


def out_file(text: str) -> Path:
    return writable_file(text, "--out", "model.pt")


def join_processes(device: Any) -> Any:
    """Under ``torchrun`` (its variables in the environment): join the process group,
    gloo for CPU, nccl for CUDA with one GPU per process (``cuda:LOCAL_RANK``); see
    :mod:`snn_robust.distributed`. A plain run gets ``device`` back."""
    from .. import distributed

    return distributed.init_from_env(device)


def is_rank0() -> bool:
    """Whether this process is rank 0 of a torchrun job, or a plain run (read from the
    environment, so that it needs no torch import)."""
    return os.environ.get("RANK", "0") == "0"


def say(text: str) -> None:
    """Print on rank 0 only (every process of a torchrun job runs the same command)."""
    if is_rank0():
        print(text)


def print_json(obj: Any, out: Path | None) -> None:
    from ..fileio import write_json

    if out is not None:
        write_json(out, obj)
        print(f"wrote {out}")


def methods_listing() -> str:
    """The bound methods with their one-line summaries (:data:`snn_robust.names.BOUND_METHODS`)."""
    width = max(map(len, BOUND_METHODS))
    return "bound methods:\n" + "\n".join(f"  {m.name:<{width}}  {m.summary}" for m in BOUND_METHODS.values())

