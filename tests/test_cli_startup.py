"""The command line starts fast: building the parser and --help import no torch, and the
choices that come from the library (bound methods, datasets) are the library's own lists."""

from __future__ import annotations

import subprocess
import sys

import pytest

from snn_robust.bounds import METHODS
from snn_robust.cli import build_parser
from snn_robust.data import DATASETS


# (the help of certify, robust-train and data fetch lists the bound methods or the datasets,
# which live beside the torch code: those pay the import)
@pytest.mark.parametrize("argv", [["--help"], ["recipe", "--help"], ["train", "--help"], ["attack", "--help"]])
def test_help_imports_no_torch(argv: list[str]) -> None:
    code = ("import sys\nfrom snn_robust.cli import main\nrc = main(sys.argv[1:])\n"
            "heavy = sorted(m for m in ('torch', 'snntorch', 'spikingjelly', 'numpy') if m in sys.modules)\n"
            "sys.exit(f'imported {heavy}' if heavy else rc)")
    proc = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "usage: snn-robust" in proc.stdout


@pytest.mark.parametrize("command", [["certify", "--model", "m.pt", "--eps", "0.1"],
                                     ["robust-train", "--model", "m.pt", "--eps", "0.1", "--out", "o.pt"]])
def test_method_choices_are_the_library_methods(command: list[str]) -> None:
    parser = build_parser()
    for method in METHODS:  # crown-ibp-optimized included
        got = parser.parse_args([*command, "--method", method]).method
        assert got in (method, [method])
    from snn_robust.cli import UsageError

    with pytest.raises(UsageError, match="invalid choice"):
        parser.parse_args([*command, "--method", "crown"])


def test_dataset_choices_are_the_library_datasets() -> None:
    parser = build_parser()
    assert [parser.parse_args(["data", "fetch", d]).dataset for d in DATASETS] == list(DATASETS)


# Entry points a user may import first. With lazy package __init__ files no import order is
# forced, so an import cycle between submodules would surface here (network <-> bounds did).
FIRST_IMPORTS = ["snn_robust.network", "snn_robust.models", "snn_robust.bounds.api", "snn_robust.training",
                 "snn_robust.evaluate", "snn_robust.adapters", "snn_robust.recipes.pipeline"]


@pytest.mark.slow
def test_every_entry_module_imports_first() -> None:
    procs = {m: subprocess.Popen([sys.executable, "-c", f"import {m}"], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE, text=True) for m in FIRST_IMPORTS}
    failed = {}
    for module, proc in procs.items():
        _, err = proc.communicate(timeout=300)
        if proc.returncode:
            failed[module] = err.strip().splitlines()[-1]
    assert not failed, failed
