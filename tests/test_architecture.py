"""The package's shape: it imports from a checkout, every module imports on its own, the
module-level imports among snn_robust's modules form no cycle, and a module longer than
400 lines says why at its top (issue 9, sections 2 and 5)."""
from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: Folders installed under snn_robust (pyproject.toml's package-dir), by subpackage name.
REMAPPED = {"adapters": ROOT / "adapters", "recipes": ROOT / "recipes"}
MAX_LINES = 400
REASON = re.compile(r"longer than 400 lines because", re.IGNORECASE)


def _modules() -> dict[str, Path]:
    """Every module of snn_robust (adapters/ and recipes/ under their installed names) -> file."""
    out: dict[str, Path] = {}
    for prefix, folder in (("snn_robust", ROOT / "snn_robust"), *((f"snn_robust.{k}", v) for k, v in REMAPPED.items())):
        for file in sorted(folder.rglob("*.py")):
            parts = list(file.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([prefix, *parts])] = file
    return out


MODULES = _modules()


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _resolve(module: str, node: ast.ImportFrom) -> str:
    """The absolute module name ``from <node.module>`` refers to inside ``module``."""
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    base = base if _is_package(module) else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _module_level_imports(module: str) -> set[str]:
    """The snn_robust modules ``module`` imports when it is executed: imports at module
    level (also inside ``try`` / ``if``), not those inside functions (lazy, run later) nor
    under ``if TYPE_CHECKING``. ``from pkg import name`` counts as ``pkg.name`` when that
    is a module, else as ``pkg``."""
    tree = ast.parse(MODULES[module].read_text(), filename=str(MODULES[module]))
    found: set[str] = set()

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                target = _resolve(module, node)
                for alias in node.names:
                    found.add(f"{target}.{alias.name}" if f"{target}.{alias.name}" in MODULES else target)
            elif isinstance(node, ast.If) and not _type_checking(node):
                visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
                for handler in node.handlers:
                    visit(handler.body)
                visit(node.orelse)
                visit(node.finalbody)

    visit(tree.body)
    return {name for name in found if name in MODULES and name != module}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def walk(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = walk(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            found = walk(start)
            if found:
                return found
    return None


def test_cycle_finder_finds_a_cycle_and_only_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_import_scan_resolves_relative_imports() -> None:
    # the command line imports its light name lists at module level, the library lazily
    assert "snn_robust.names" in _module_level_imports("snn_robust.cli.common")  # from ..names import
    assert "snn_robust.cli.common" in _module_level_imports("snn_robust.cli.train_commands")  # from .common import
    assert "snn_robust.cli.data_command" in _module_level_imports("snn_robust.cli")  # package: from .data_command
    cli = [name for name in MODULES if name.startswith("snn_robust.cli")]
    assert not any("snn_robust.training" in _module_level_imports(name) for name in cli)


def test_no_import_cycle_among_modules() -> None:
    graph = {name: _module_level_imports(name) for name in MODULES}
    cycle = _cycle(graph)
    assert cycle is None, "module-level import cycle: " + " -> ".join(cycle or [])


def _all_imports(module: str) -> set[str]:
    """Every snn_robust module ``module`` imports, at module level or inside functions."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(MODULES[module].read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, node)
            found.update(f"{target}.{a.name}" if f"{target}.{a.name}" in MODULES else target for a in node.names)
    return found


def test_the_library_does_not_import_the_recipes() -> None:
    """Recipes are experiments built on the library: nothing in snn_robust depends on them,
    except the ``recipe`` command, which runs one."""
    library = [m for m in MODULES if not m.startswith("snn_robust.recipes") and m != "snn_robust.cli.recipe_command"]
    offenders = {m: sorted(i for i in _all_imports(m) if i.startswith("snn_robust.recipes")) for m in library}
    assert not {m: i for m, i in offenders.items() if i}
    assert any(i.startswith("snn_robust.recipes") for i in _all_imports("snn_robust.cli.recipe_command"))


def test_every_module_imports_on_its_own() -> None:
    """Each module imported first, in a process where no other snn_robust module is loaded
    yet (one interpreter; the snn_robust modules are dropped between imports, so the
    import order of one test cannot hide another's missing or circular import)."""
    names = sorted(MODULES)
    script = (
        "import importlib, sys, traceback\n"
        f"failed = []\n"
        f"for name in {names!r}:\n"
        "    for loaded in [m for m in sys.modules if m == 'snn_robust' or m.startswith('snn_robust.')]:\n"
        "        del sys.modules[loaded]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except ImportError as exc:\n"
        "        # an optional framework or dependency missing is not the package's shape\n"
        "        if (exc.name or '').split('.')[0] in ('snntorch', 'spikingjelly', 'tonic', 'cupy', 'torchvision'):\n"
        "            continue\n"
        "        failed.append(name + ': ' + traceback.format_exc(limit=3))\n"
        "    except Exception:\n"
        "        failed.append(name + ': ' + traceback.format_exc(limit=3))\n"
        "print('\\n'.join(failed))\n"
        "sys.exit(1 if failed else 0)\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr


def test_package_imports_from_a_checkout_without_install(tmp_path: Path) -> None:
    """``python -S`` skips site's .pth files, hence the editable install's finder: only the
    checkout on PYTHONPATH (and the installed dependencies) is visible."""
    site_packages = sysconfig.get_paths()["purelib"]
    code = (
        "import sys, snn_robust, snn_robust.adapters, snn_robust.recipes, snn_robust.recipes.configs\n"
        "assert not any('editable' in m for m in sys.modules), sorted(m for m in sys.modules if 'editable' in m)\n"
        "print(snn_robust.__file__); print(snn_robust.adapters.__file__); print(snn_robust.recipes.configs.__file__)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), site_packages]), "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-S", "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == [str(ROOT / "snn_robust" / "__init__.py"), str(ROOT / "adapters" / "__init__.py"),
                                  str(ROOT / "recipes" / "configs.py")]


def test_pyproject_lists_every_package() -> None:
    """A regular (non-editable) install copies only the packages pyproject.toml lists."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    packages = {name for name in MODULES if _is_package(name)}
    assert set(config["packages"]) == packages
    assert config["package-dir"] == {"snn_robust": "snn_robust",
                                     **{f"snn_robust.{k}": k for k in REMAPPED}}


def _docstring_head(file: Path) -> str:
    doc = ast.get_docstring(ast.parse(file.read_text())) or ""
    return "\n".join(doc.splitlines()[:5])


@pytest.mark.parametrize("name", sorted(MODULES))
def test_long_modules_state_why(name: str) -> None:
    file = MODULES[name]
    lines = len(file.read_text().splitlines())
    if lines > MAX_LINES:
        assert REASON.search(_docstring_head(file)), (
            f"{file.relative_to(ROOT)} has {lines} lines (> {MAX_LINES}): split it by job, or start its docstring "
            "with the reason ('Longer than 400 lines because ...')")
