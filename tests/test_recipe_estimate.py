"""The recipe log's estimate of the stages left: after each stage that ran, the time the
remaining stages will take from the seconds per unit of work measured on stages of the same
kind (training: per optimiser step), or "unknown" while no stage of their kinds has run.

The stages run through the real bookkeeping (``RecipeRun._stage``, the recipe's real plan
and step counts); only the work is replaced by a clock that advances a known time, so the
expected estimate is exact."""

from __future__ import annotations

import logging
import re
import time
import types
from pathlib import Path

import pytest

from snn_robust.recipes import RecipeRun, get_profile, get_recipe, pipeline

N_TRAIN = 128


class Clock:
    """``time.perf_counter`` of the pipeline: advances only when a stage's work says so."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def work(self, seconds: float, folder: Path | None = None):  # -> compute callable
        def compute() -> dict:
            if folder is not None:  # a training stage writes its model folder
                folder.mkdir(parents=True, exist_ok=True)
            self.now += seconds
            return {"error": 0.0}

        return compute


@pytest.fixture
def clocked(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture):
    clock = Clock()
    monkeypatch.setattr(pipeline, "time", types.SimpleNamespace(perf_counter=clock, time=time.time))
    caplog.set_level(logging.INFO, logger="snn_robust.recipes.pipeline")
    return clock


def _run(name: str, tmp_path: Path) -> RecipeRun:
    run = RecipeRun(get_recipe(name), get_profile("smoke"), tmp_path)
    run.train_set = lambda: range(N_TRAIN)  # type: ignore[method-assign]  # only its length counts
    return run


def _stage(run: RecipeRun, clock: Clock, name: str, seconds: float) -> None:
    if name == "natural" or name.startswith("robust"):
        folder = run.c.out / name
        run._stage(name, folder / "model.pt", clock.work(seconds, folder), model=True)
    else:
        run._stage(name, run.c.out / "eval" / f"{name}.json", clock.work(seconds))


def _left(caplog: pytest.LogCaptureFixture) -> str:
    done = [r.getMessage() for r in caplog.records if ": done in " in r.getMessage()]
    return done[-1].split(" this run)", 1)[1]


def test_table_recipe_estimates_each_kind_from_its_measured_time(tmp_path: Path, clocked: Clock,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    run = _run("mnist-fc", tmp_path)
    plan = run.plan()
    n = len(plan)
    (tmp_path / "eval").mkdir()
    _stage(run, clocked, "natural", 10.0)
    assert _left(caplog) == f"; time left for stages 2-{n} unknown until a stage of their kinds has run"
    _stage(run, clocked, "robust", 20.0)
    _stage(run, clocked, plan[2], 5.0)
    _stage(run, clocked, plan[3], 6.0)
    _stage(run, clocked, "clean-natural", 2.0)
    # clean-robust is timed by clean-natural; the attacks, certify and ball stages are not yet
    left = _left(caplog)
    untimed = len(plan) - plan.index("clean-natural") - 2
    assert left.startswith(f"; about 2.0 s left for stages 6-{n}, plus {untimed} stages not timed yet (attack-natural-")
    assert "clean-robust" not in left and left.endswith(", ...)"), left
    seconds = {}
    for name in plan[5:plan.index("clean-robust")]:
        seconds[name] = 7.0 + len(seconds) * 3
        _stage(run, clocked, name, seconds[name])
    # every stage left repeats one of the natural model's evaluations: their sum, exactly
    expected = 2.0 + sum(seconds.values())
    first = plan.index("clean-robust") + 1
    assert _left(caplog) == f"; about {pipeline.format_duration(expected)} left for stages {first}-{n}"
    for name in plan[first - 1:]:
        _stage(run, clocked, name, 1.0)
    assert _left(caplog) == ""  # the last stage: nothing left to estimate


def test_training_stages_are_estimated_per_step(tmp_path: Path, clocked: Clock,
                                                caplog: pytest.LogCaptureFixture) -> None:
    run = _run("tprime-sweep", tmp_path)
    plan = run.plan()
    robust = [name for name in plan if name.startswith("robust-t")]
    assert len(robust) >= 2
    (tmp_path / "eval").mkdir()
    for name in plan[:plan.index(robust[0]) + 1]:
        _stage(run, clocked, name, 12.0 if name == robust[0] else 1.0)
    line = _left(caplog)
    match = re.fullmatch(r"; about (.+) left for stages (\d+)-(\d+)", line)
    assert match, line
    assert (int(match[2]), int(match[3])) == (plan.index(robust[0]) + 2, len(plan))
    # the other T' stages at robust[0]'s seconds per step, the evaluations at theirs (1 s each)
    per_step = 12.0 / run._train_steps(robust[0])
    left = plan[plan.index(robust[0]) + 1:]
    expected = sum(per_step * run._train_steps(name) if name in robust else 1.0 for name in left)
    assert match[1] == pipeline.format_duration(expected)
    assert expected > 12.0 * (len(robust) - 1)  # a sane number: at least the training still to do
