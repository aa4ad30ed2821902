"""The ``snn-robust`` command line.

Usage::

    snn-robust [--device auto|cpu|cuda] [--seed N] COMMAND ...
    snn-robust data fetch {mnist,fmnist,nmnist} [--data-root DIR]
    snn-robust train --dataset D --arch A --out FILE        natural training -> model file
    snn-robust robust-train --model FILE --eps E --out FILE certified training -> model file
    snn-robust attack --model FILE --eps E [E ...]          attack error
    snn-robust certify --model FILE --eps E [E ...]         certified error
    snn-robust recipe NAME [--profile smoke|quick|paper]    a paper experiment end to end

Layout: :mod:`.common` (errors, argument types, options and output checks shared by the
commands), one module per command family (:mod:`.data_command`, :mod:`.train_commands`,
:mod:`.eval_commands`, :mod:`.recipe_command`), and here the parser and :func:`main`.
Adding a command: write ``add_<name>(subparsers)`` that creates its parser and sets
``handler=<function(args) -> int>`` with ``set_defaults``, then list it in :data:`COMMANDS`.
A command module imports only light modules at its top (the handlers import the library
when they run), so that ``--help`` loads no torch.
A handler raises :class:`UsageError` (or a :class:`snn_robust.data.DatasetError`) for a user
mistake; :func:`main` prints it, and the library's refusals of damaged or hostile files,
unusable checkpoints and non-finite training (see :func:`_refusals`), as one
``snn-robust: error: ...`` line and returns 2. Output paths are checked for writability
before anything is computed.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

from .common import Parser, UsageError, is_rank0, resolve_device, seed_everything
from .data_command import add_data
from .eval_commands import add_attack, add_certify
from .recipe_command import add_recipe
from .train_commands import add_robust_train, add_train

__all__ = ["COMMANDS", "UsageError", "build_parser", "main", "resolve_device", "seed_everything"]

PROG = "snn-robust"
EXIT_USAGE = 2

#: Every subcommand registers itself here, in the order shown by ``--help``.
COMMANDS: tuple[Callable[[Any], None], ...] = (add_data, add_train, add_robust_train, add_attack, add_certify, add_recipe)


def build_parser() -> argparse.ArgumentParser:
    """The full ``snn-robust`` parser: global options, then one subparser per command."""
    parser = Parser(prog=PROG, description="Certified bounds and robust training for spiking neural networks.")
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


def _refusals() -> tuple[type[Exception], ...]:
    """The library's own refusals of a file or of a run, printed like usage errors: damaged
    or hostile files, unusable checkpoints, non-finite training. (Imported only when an
    exception reaches :func:`main`.)"""
    from ..data import DatasetError
    from ..fileio import DamagedFileError
    from ..modelfile import ModelFileError
    from ..training import CheckpointError, NonFiniteError

    # (a recipe's RecipeConfigError is turned into a UsageError by the recipe command)
    return (DatasetError, DamagedFileError, ModelFileError, CheckpointError, NonFiniteError)


def _usage_error(exc: Exception) -> int:
    message = " ".join(str(exc).split())  # always one line
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``snn-robust`` with ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        logging.basicConfig(
            # under torchrun the other ranks log warnings only: rank 0 reports the run
            level=logging.WARNING if args.quiet or not is_rank0() else logging.INFO,
            format=f"{PROG}: %(message)s",
            stream=sys.stderr,
        )
        from tqdm.contrib.logging import logging_redirect_tqdm

        # On a terminal, log lines go above the progress bar instead of onto its line.
        with logging_redirect_tqdm():
            return int(args.handler(args))
    except SystemExit as exc:  # --help / --version; first, so that they import nothing more
        return exc.code if isinstance(exc.code, int) else 0
    except UsageError as exc:
        return _usage_error(exc)
    except Exception as exc:
        # The library's refusals (imported only now: they load torch) print like usage errors.
        if isinstance(exc, _refusals()):
            return _usage_error(exc)
        raise
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130



if __name__ == "__main__":
    sys.exit(main())
