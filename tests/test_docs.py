"""Every code block of README.md and docs/*.md is checked here, so the documentation cannot rot.

The rule:

* Every fenced block names its language: ```python, ```bash or ```text (equations, sample
  output). An unlabelled block fails :func:`test_every_block_names_its_language`.
* ```python blocks run. The blocks of one file run in order in one namespace, as a reader
  would paste them (a later block may use an earlier block's names), on the tiny stand-in
  data the blocks themselves build; each takes seconds. After a block runs, its entry in
  :data:`EFFECTS` (keyed by file, the heading above the block and its number under that
  heading) checks what the block is there to show: a loss that falls, gradients that reach
  the user's model, bounds that hold against the network's own forward pass. A python block
  without an entry fails: a new example needs a check of its effect, not only a run.
* ```bash blocks are not run (they start set-ups and recipes that take minutes). Each of
  their commands must be one this file checks without running it (:func:`check_command`):
  ``make T`` (a Makefile target whose recipe ``make -n`` expands, and whose ``snn-robust``
  calls parse), ``snn-robust ...`` (the CLI's own parser accepts the arguments and the
  command exists), ``bash scripts/X`` (the script exists), ``pip install -e '.[E]'`` (the
  extras exist in pyproject.toml). Leading ``VAR=value`` assignments are allowed.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LANGUAGES = ("python", "bash", "text")


@dataclass(frozen=True)
class Block:
    file: str  # path relative to the repository root
    heading: str  # the nearest heading above the block, without its '#'
    index: int  # number of the block of this language under that heading, from 1
    language: str
    line: int  # line of the first code line
    code: str

    @property
    def key(self) -> tuple[str, str, int]:
        return self.file, self.heading, self.index


def blocks(path: Path, root: Path = ROOT) -> list[Block]:
    """The fenced blocks of a Markdown file (``` fences at the start of a line)."""
    out: list[Block] = []
    heading, counts = "", {}
    lines = path.read_text().splitlines()
    i = 0
    while i < len(lines):
        text = lines[i]
        if text.startswith("#"):
            heading = text.lstrip("#").strip()
        elif text.startswith("```"):
            language = text[3:].strip()
            end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith("```")), None)
            if end is None:
                raise ValueError(f"{path.name}:{i + 1}: code block is never closed")
            n = counts[(heading, language)] = counts.get((heading, language), 0) + 1
            out.append(Block(str(path.relative_to(root)), heading, n, language, i + 2, "\n".join(lines[i + 1:end])))
            i = end
        i += 1
    return out


ALL_BLOCKS = [b for path in DOC_FILES for b in blocks(path)]


# -- what each python block must show ---------------------------------------------------------


def _sound_on_lower(ns: dict[str, Any], margins: torch.Tensor) -> None:
    """The bound never exceeds the true margin of an input inside the set: ``lower`` (itself a
    spike train between the input bounds) through the network's own forward pass."""
    net, lower, labels = ns["net"], ns["lower"], ns["labels"]
    with torch.no_grad():
        rates = net(lower)
    true = rates.gather(1, labels[:, None]) - rates
    true = torch.cat([true[i, torch.arange(rates.shape[1]) != labels[i]][None] for i in range(len(labels))])
    assert (margins <= true + 1e-6).all()


def _readme_quickstart(ns: dict[str, Any]) -> None:
    sr, net, lower, upper, labels = ns["sr"], ns["net"], ns["lower"], ns["upper"], ns["labels"]
    got = {m: sr.compute_bounds(net, lower, upper, labels=labels, method=m) for m in ("ibp", "crown-ibp", "best")}
    assert got["best"].shape == (8, 9)
    assert (got["best"] >= torch.maximum(got["ibp"], got["crown-ibp"]) - 1e-6).all()  # best is never looser
    _sound_on_lower(ns, got["best"])
    grads = [p.grad for p in net.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)  # the certified loss trains something


def _guide_snntorch(ns: dict[str, Any]) -> None:
    _sound_on_lower(ns, ns["margins"])
    weight = ns["model"][1].weight
    assert weight.grad is not None and weight.grad.abs().sum() > 0  # gradients land in the user's model


def _guide_spikingjelly(ns: dict[str, Any]) -> None:
    losses = ns["losses"]
    assert len(losses) == 30
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.9 * first, f"the example's loss should fall: first five {losses[:5]}, last five {losses[-5:]}"
    assert ns["model"][1].weight.grad is not None  # the step trained the user's model itself


def _guide_recommended(ns: dict[str, Any]) -> None:
    history = ns["history"]
    assert len(history) == 20 and history[0]["eps"] == 0.0 and history[-1]["eps"] == pytest.approx(0.12)
    assert history[-1]["clean"] < history[0]["clean"]  # it trains (tests/test_user_loop.py checks the robustness gain)


def _guide_certify_attack(ns: dict[str, Any]) -> None:
    clean, certified, paper, strong = ns["clean"], ns["certified"], ns["paper"], ns["strong"]
    assert certified.error >= clean.error - 1e-9  # a misclassified sample is never verified
    for result in (paper, strong):
        assert result.eps == [0.05, 0.1] and len(result.errors) == 2
        assert "eps" not in result.attack  # the template's eps is not a budget that was run
        assert all(r.error >= result.clean.error for r in result.errors)


def _adapters_convert(ns: dict[str, Any]) -> None:
    sr = ns["snn_robust"]
    for model, net in ((ns["model"], ns["net"]), (ns["sj_model"], ns["sj_net"])):
        assert isinstance(net, sr.SpikingNetwork)
        # shared, not copied: the converted network holds the model's own parameter objects
        assert {id(p) for p in model.parameters()} <= {id(p) for p in net.parameters()}


def _adapters_training(ns: dict[str, Any]) -> None:
    history, start = ns["history"], ns["WARMUP"]
    assert len(history) == 10
    # falls once it is trained, and not by silencing the network (a silent output gives every
    # loss log(10) = 2.303: the trap that certified training from scratch falls into)
    assert history[-1]["certified"] < history[start]["certified"], f"the certified loss should fall: {history}"
    assert history[-1]["clean"] < 2.29, f"the network fell silent: {history}"


EFFECTS: dict[tuple[str, str, int], Callable[[dict[str, Any]], None]] = {
    ("README.md", "Quickstart (CPU, seconds)", 1): _readme_quickstart,
    ("docs/user-guide.md", "1. Wrap an snnTorch model", 1): _guide_snntorch,
    ("docs/user-guide.md", "2. A SpikingJelly training loop", 1): _guide_spikingjelly,
    ("docs/user-guide.md", "Recommended settings (your own loop)", 1): _guide_recommended,
    ("docs/user-guide.md", "3. Certify and attack", 1): _guide_certify_attack,
    ("docs/adapters.md", "Adapters: snnTorch and SpikingJelly models", 1): _adapters_convert,
    ("docs/adapters.md", "Example: certified training in an snnTorch loop", 1): _adapters_training,
    ("docs/adapters.md", "Example: certified training in a SpikingJelly loop", 1): _adapters_training,
}


# -- tests --------------------------------------------------------------------------------------


def test_every_block_names_its_language() -> None:
    bad = [f"{b.file}:{b.line - 1}" for b in ALL_BLOCKS if b.language not in LANGUAGES]
    assert not bad, f"label these code blocks ```python, ```bash or ```text: {bad}"


def test_every_python_block_has_an_effect_check() -> None:
    keys = {b.key for b in ALL_BLOCKS if b.language == "python"}
    missing = sorted(keys - set(EFFECTS))
    assert not missing, f"python blocks without an entry in EFFECTS (add a check of what they show): {missing}"
    stale = sorted(set(EFFECTS) - keys)
    assert not stale, f"EFFECTS entries whose block is gone: {stale}"


PY_FILES = sorted({b.file for b in ALL_BLOCKS if b.language == "python"})


@pytest.mark.slow
@pytest.mark.parametrize("file", PY_FILES)
def test_python_blocks_run_and_show_their_effect(file: str) -> None:
    torch.manual_seed(0)
    ns: dict[str, Any] = {"__name__": f"docs:{file}"}
    for block in (b for b in ALL_BLOCKS if b.file == file and b.language == "python"):
        # Pad with blank lines so tracebacks point at the Markdown file's own line numbers.
        exec(compile("\n" * (block.line - 1) + block.code, str(ROOT / file), "exec"), ns)
        check = EFFECTS.get(block.key)
        assert check is not None, f"{file}:{block.line}: no entry in EFFECTS for {block.key}"
        check(ns)


# -- bash blocks --------------------------------------------------------------------------------


def _commands(code: str) -> list[list[str]]:
    """Each command line of a bash block as words, comments and VAR=value prefixes removed."""
    out = []
    for line in code.replace("\\\n", " ").splitlines():  # join continued lines first
        words = shlex.split(line, comments=True)
        while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=\S*", words[0]):
            words = words[1:]
        if words:
            out.append(words)
    return out


def _check_cli(args: list[str]) -> None:
    from snn_robust.cli import build_parser

    parsed = build_parser().parse_args(args)  # raises UsageError on anything the CLI would refuse
    assert callable(getattr(parsed, "handler", None)), f"'snn-robust {' '.join(args)}' names no command"


def _check_make(target: str) -> None:
    dry = subprocess.run(["make", "-n", "-C", str(ROOT), target], capture_output=True, text=True, timeout=60)
    assert dry.returncode == 0, f"make -n {target}: {dry.stderr}"
    calls = [words for words in _commands(dry.stdout) if words and words[0].endswith("snn-robust")]
    for words in calls:
        _check_cli([w for w in words[1:] if "$" not in w])


def check_command(words: list[str]) -> None:
    """Check one documented command without running it (see the module docstring)."""
    head = words[0]
    if head == "make":
        for target in words[1:] or ["test"]:
            _check_make(target)
    elif head.endswith("snn-robust"):
        _check_cli(words[1:])
    elif head == "bash":
        assert (ROOT / words[1]).is_file(), f"no script {words[1]}"
    elif head == "torchrun":  # torchrun [its options] -m snn_robust ARGS: the ARGS as for snn-robust
        assert "-m" in words and words[words.index("-m") + 1] == "snn_robust", f"torchrun must start -m snn_robust: {words}"
        _check_cli(words[words.index("-m") + 2:])
    elif head == "pip" and words[1:3] == ["install", "-e"]:
        extras = re.fullmatch(r"\.\[(.*)\]", words[3])
        assert extras, f"expected pip install -e '.[extras]', got {words}"
        known = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
        assert set(extras.group(1).split(",")) <= set(known), f"unknown extras in {words[3]}"
    else:
        raise AssertionError(f"teach tests/test_docs.py how to check {' '.join(words)!r} without running it")


BASH_COMMANDS = [(b, words) for b in ALL_BLOCKS if b.language == "bash" for words in _commands(b.code)]


@pytest.mark.parametrize("block,words", BASH_COMMANDS, ids=[f"{b.file}:{b.line}:{w[0]}" for b, w in BASH_COMMANDS])
def test_bash_commands_are_valid(block: Block, words: list[str]) -> None:
    check_command(words)


def test_the_checker_refuses_bad_commands() -> None:
    from snn_robust.cli import UsageError

    with pytest.raises(UsageError):
        check_command(["snn-robust", "recipe", "no-such-recipe"])
    with pytest.raises(UsageError):
        check_command(["snn-robust", "certify", "--model", "m.pt", "--eps", "0.1", "--method", "nonsense"])
    with pytest.raises(AssertionError):
        check_command(["make", "no-such-target"])
    with pytest.raises(AssertionError):
        check_command(["rm", "-rf", "runs"])


def test_blocks_parser_reads_fences(tmp_path: Path) -> None:
    doc = tmp_path / "x.md"
    doc.write_text("# A\n```python\nx = 1\n```\ntext\n```python\ny = 2\n```\n## B\n```bash\nmake run\n```\n")
    got = blocks(doc, tmp_path)
    assert [(b.heading, b.index, b.language, b.line, b.code) for b in got] == [
        ("A", 1, "python", 3, "x = 1"), ("A", 2, "python", 7, "y = 2"), ("B", 1, "bash", 11, "make run")]
    assert _commands("A=1 snn-robust recipe \\\n  mnist-fc  # quick\n\nmake test") == [
        ["snn-robust", "recipe", "mnist-fc"], ["make", "test"]]
