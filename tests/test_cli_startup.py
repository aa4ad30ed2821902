"""The command line starts fast: building the parser and --help import no torch, and the
choices that come from the library (bound methods, datasets) are the library's own lists."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from snn_robust.bounds import METHODS
from snn_robust.cli import build_parser
from snn_robust.data import DATASETS


def _help_commands() -> list[list[str]]:
    """Every command and subcommand path of the parser (``[]``, ``["data"]``, ``["data", "fetch"]``, ...)."""
    import argparse

    def walk(parser: argparse.ArgumentParser, path: list[str]) -> list[list[str]]:
        found = [path]
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    found += walk(sub, [*path, name])
        return found

    return walk(build_parser(), [])


def test_every_help_imports_no_torch() -> None:
    commands = _help_commands()
    assert ["certify"] in commands and ["data", "fetch"] in commands and ["robust-train"] in commands
    # one interpreter runs every --help (cheaper than one each); any heavy import fails it
    code = ("import contextlib, io, json, sys\nfrom snn_robust.cli import main\n"
            "for cmd in json.loads(sys.argv[1]):\n"
            "    out = io.StringIO()\n"
            "    with contextlib.redirect_stdout(out):\n"
            "        rc = main([*cmd, '--help'])\n"
            "    heavy = sorted(m for m in ('torch', 'snntorch', 'spikingjelly', 'numpy') if m in sys.modules)\n"
            "    if rc or heavy or 'usage: snn-robust' not in out.getvalue():\n"
            "        sys.exit(f'{cmd} --help: exit {rc}, imported {heavy}')\n")
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(commands)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_certify_help_lists_every_method(monkeypatch: pytest.MonkeyPatch) -> None:
    import contextlib
    import io

    from snn_robust.cli import main

    monkeypatch.setenv("COLUMNS", "300")  # argparse would wrap inside "crown-ibp"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["certify", "--help"]) == 0
    assert all(m in out.getvalue() for m in METHODS), out.getvalue()


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


def test_method_registry_is_the_method_type() -> None:
    """``Method`` (for annotations) and the registry list the same names, in the same order."""
    from typing import get_args

    from snn_robust.names import BOUND_METHODS, Method

    assert get_args(Method) == tuple(BOUND_METHODS) == METHODS
    assert all(m.name == name and m.summary and m.description for name, m in BOUND_METHODS.items())


def test_every_registered_pass_is_a_bound_pass() -> None:
    """compute_bounds runs a method's passes by name: each name the registry uses is one of
    the engine's passes, and each pass serves some method."""
    from snn_robust.bounds.api import _EXPENSIVE, _passes
    from snn_robust.names import BOUND_METHODS

    engine = set(_passes(None, None, None, None, None))  # the table only; nothing is computed
    used = {name for m in BOUND_METHODS.values() for name in m.passes}
    assert used == engine and set(_EXPENSIVE) <= engine
    assert all(m.passes and len(set(m.passes)) == len(m.passes) for m in BOUND_METHODS.values())


def test_check_method_accepts_the_registry_and_names_what_it_refuses() -> None:
    from snn_robust.names import BOUND_METHODS, check_method

    assert [check_method(m) for m in METHODS] == list(METHODS)
    for bad in ("crown", "IBP", None, 3, ""):
        with pytest.raises(ValueError, match="^config.method must be one of") as info:
            check_method(bad, "config.method")
        assert all(m.summary in str(info.value) for m in BOUND_METHODS.values())


@pytest.mark.parametrize("command", ["certify", "robust-train"])
def test_help_describes_every_method(command: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import contextlib
    import io

    from snn_robust.cli import main
    from snn_robust.names import BOUND_METHODS

    monkeypatch.setenv("COLUMNS", "300")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main([command, "--help"]) == 0
    lines = out.getvalue().splitlines()
    for m in BOUND_METHODS.values():
        assert any(line.split() and line.split()[0] == m.name and m.summary in line for line in lines), m.name
