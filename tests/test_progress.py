"""Progress output for logs: plain lines with counts and time left, readable epoch rows."""

from __future__ import annotations

import logging
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from snn_robust import progress
from snn_robust.progress import PlainProgress, format_duration, format_row, progress_bar


def test_plain_progress_writes_one_line_per_tenth_with_time_left(caplog: pytest.LogCaptureFixture,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.INFO, logger="snn_robust.progress")
    monkeypatch.setattr(progress, "QUIET_S", 0.0)
    bar = PlainProgress(50, "robust")
    for _ in range(50):
        bar.update()
        bar.set_postfix(loss="0.41", refresh=False)
    bar.close()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 10  # at 5, 10, ..., 45 steps and once on close at 50
    assert lines[0].startswith("robust: 5/50 steps (10 %), ")
    assert re.search(r"s/step, about .* left; loss 0\.41$", lines[0])
    assert lines[-1].startswith("robust: 50/50 steps (100 %)") and "in all" in lines[-1]
    assert "\r" not in "".join(lines)


def test_short_work_writes_nothing(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="snn_robust.progress")
    bar = PlainProgress(20, "clean error", unit="batch")  # done long before QUIET_S
    bar.update(20)
    bar.close()
    assert not caplog.records


def test_plain_progress_counts_its_rate_from_where_it_resumed(caplog: pytest.LogCaptureFixture,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.INFO, logger="snn_robust.progress")
    monkeypatch.setattr(progress, "QUIET_S", 0.0)
    bar = PlainProgress(100, "natural", initial=95)
    bar.close()  # nothing done in this run: no line, no division by zero
    assert not caplog.records
    bar = PlainProgress(100, "natural", initial=85, unit="batch")
    bar.update(5)
    bar.update(10)
    bar.close()
    assert [r.getMessage().split(",")[0] for r in caplog.records] == [
        "natural: 90/100 batches (90 %)", "natural: 100/100 batches (100 %)"]


def test_progress_bar_is_plain_when_stderr_is_not_a_terminal() -> None:
    # pytest replaces stderr by a capture that is not a terminal, as a log file is not
    assert isinstance(progress_bar(10, "x"), PlainProgress)
    assert not isinstance(progress_bar(10, "x", enabled=False), PlainProgress)


def test_format_row_is_text_not_a_dict() -> None:
    row = {"epoch": 1, "step": 20, "loss": 0.41234, "clean_acc": 0.912, "verified": 0.12, "eps": 0.12,
           "time": 154.0, "val_error": 0.05}
    assert format_row(row, 3, "robust") == ("robust epoch 2/3: loss 0.4123, clean acc 91.2 %, verified 12.0 %, "
                                            "eps 0.12, val error 0.05 (2 min 34 s in all)")


@given(st.floats(min_value=0, max_value=1e6, allow_nan=False))
def test_format_duration_reads_as_units(seconds: float) -> None:
    text = format_duration(seconds)
    assert re.fullmatch(r"\d+(\.\d)? s|\d+ min \d\d s|\d+ h \d\d min", text), text


@pytest.mark.parametrize("seconds,text", [(4.25, "4.2 s"), (45, "45 s"), (125, "2 min 05 s"), (3780, "1 h 03 min")])
def test_format_duration_examples(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_recipe_log_names_each_stage_once_with_its_index(tmp_path, caplog: pytest.LogCaptureFixture) -> None:
    from snn_robust.recipes import RecipeRun, get_profile, get_recipe

    caplog.set_level(logging.INFO, logger="snn_robust.recipes.pipeline")
    run = RecipeRun(get_recipe("mnist-fc"), get_profile("smoke"), tmp_path)
    plan = run.plan()
    assert plan[:2] == ["natural", "robust"] and len(plan) == len(set(plan)) == 14
    out = tmp_path / "eval" / "natural-clean.json"
    out.parent.mkdir()
    assert run._stage("clean-natural", out, lambda: {"error": 0.1}) == {"error": 0.1}
    assert run._stage("clean-natural", out, lambda: {"error": 0.2}) == {"error": 0.1}  # read back, not redone
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("stage 5/14 clean-natural: clean error of the natural model")
    assert lines[1].startswith("stage 5/14 clean-natural: done in ")
    assert len(lines) == 2  # meeting the stage again in the same run says nothing
    caplog.clear()
    RecipeRun(get_recipe("mnist-fc"), get_profile("smoke"), tmp_path)._stage("clean-natural", out, lambda: None)
    assert [r.getMessage().split(" (")[0] for r in caplog.records] == ["stage 5/14 clean-natural: done in an earlier run"]
