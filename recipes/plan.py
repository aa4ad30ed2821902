"""A recipe run's plan, for its log: the stages in order, what each does in words, and the
time left, estimated from the stages that ran (:class:`StagePlan`, mixed into
:class:`~snn_robust.recipes.pipeline.RecipeRun`)."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from snn_robust.datasets import attack_names
from snn_robust.progress import format_duration
from snn_robust.training import TrainConfig

if TYPE_CHECKING:
    from .pipeline import _Ctx

__all__ = ["StagePlan"]


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"



class StagePlan:
    """The plan and the time estimates of a :class:`~snn_robust.recipes.pipeline.RecipeRun`
    (which provides the configuration ``c``, the ``stages`` run so far, the data and the
    training configs)."""

    # provided by RecipeRun (with train_set, natural_config, robust_config, _ball_samples)
    c: _Ctx
    stages: dict[str, dict[str, Any]]

    def plan(self) -> list[str]:
        """The stage names of this recipe in the order :meth:`run` meets them."""
        c = self.c
        if c.recipe.kind == "tprime":
            names = ["natural", "clean-natural", "bound-loss-natural-t3"]
            for t in c.recipe.tprimes:
                names += [f"robust-t{t}", f"clean-robust-t{t}", f"bound-loss-robust-t{t}-t3"]
            return names
        attacks = list(attack_names(c.recipe.dataset))
        names = ["natural", "robust", *(f"search-{a}" for a in attacks)]
        for tag in ("natural", "robust"):
            names += [f"clean-{tag}", *(f"attack-{tag}-{a}" for a in attacks), f"certify-{tag}", f"ball-{tag}"]
        return names

    def _stage_title(self, name: str) -> str:
        plan = self.plan()
        return f"stage {plan.index(name) + 1}/{len(plan)} {name}" if name in plan else f"stage {name}"

    def _train_config(self, name: str) -> TrainConfig:
        """The configuration of training stage ``name``: ``natural``, ``robust`` or ``robust-t<T'>``."""
        if name == "natural":
            return self.natural_config()
        return self.robust_config(int(name[len("robust-t"):]) if name.startswith("robust-t") else None)

    def _train_steps(self, name: str) -> int:
        cfg = self._train_config(name)
        return cfg.epochs * math.ceil(len(self.train_set()) / cfg.batch_size)

    def _stage_work(self, name: str) -> tuple[str, float]:
        """The kind of stage ``name`` and the work it does in that kind's units, for
        :meth:`_time_left`: a training stage's optimiser steps (kinds ``natural`` and
        ``robust``, every T' alike); an evaluation stage is one unit of its kind (``clean``,
        ``attack-<a>``, ``certify``, ...) because it repeats the same work on another model."""
        if name == "natural" or name == "robust" or name.startswith("robust-t"):
            return ("natural" if name == "natural" else "robust"), float(self._train_steps(name))
        if name.startswith("attack-"):  # attack-<model>-<attack>; attack names hold dashes
            return f"attack-{name.split('-', 2)[2]}", 1.0
        if name.startswith("bound-loss-"):
            return "bound-loss", 1.0
        if name.startswith("search-"):
            return name, 1.0  # one per attack: never timed before it runs
        return name.split("-")[0], 1.0

    def _time_left(self, done: str) -> str:
        """``"; about 3 min 10 s left for stages 5-14"``: the stages of the plan after
        ``done`` that have not run yet, each estimated as its work (:meth:`_stage_work`)
        times the seconds per unit measured on the stages of its kind that ran in this
        invocation (a training stage's time is fit's clock, across resumptions). Stages of a
        kind not timed yet are counted apart; nothing when no stage is left."""
        plan = self.plan()
        left = [n for n in plan[plan.index(done) + 1:] if n not in self.stages] if done in plan else []
        if not left:
            return ""
        spent: dict[str, list[float]] = {}  # kind -> [seconds, units]
        for name, info in self.stages.items():
            if info["status"] == "ran" and name in plan:
                kind, units = self._stage_work(name)
                seconds = info.get("training_s") or info["wall_s"]
                acc = spent.setdefault(kind, [0.0, 0.0])
                acc[0], acc[1] = acc[0] + seconds, acc[1] + units
        total, untimed = 0.0, []
        for name in left:
            kind, units = self._stage_work(name)
            if kind in spent:
                total += units * spent[kind][0] / spent[kind][1]
            else:
                untimed.append(name)
        first, last = plan.index(left[0]) + 1, plan.index(left[-1]) + 1
        which = f"stage {first}" if first == last else f"stages {first}-{last}"
        if len(untimed) == len(left):
            return f"; time left for {which} unknown until a stage of their kinds has run"
        shown = ", ".join(untimed[:3]) + (", ..." if len(untimed) > 3 else "")
        plus = f", plus {_count(len(untimed), 'stage')} not timed yet ({shown})" if untimed else ""
        return f"; about {format_duration(total)} left for {which}{plus}"

    def _stage_doc(self, name: str) -> str:
        """What a stage does, in words, for the log."""
        c, p = self.c, self.c.profile
        tag = name.split("-")[1] if "-" in name else name
        if name == "natural" or name.startswith("robust"):
            # the step count, so that the progress lines' time left reads against the whole stage
            cfg = self._train_config(name)
            size = f"{_count(cfg.epochs, 'epoch')} on {len(self.train_set())} samples, {self._train_steps(name)} steps"
            if name == "natural":
                return f"natural training (BPTT, {size})"
            return (f"robust training (certified loss, {cfg.method} bound at T' = {cfg.bound_steps}, "
                    f"eps {c.recipe.train_eps}, {size})")
        if name.startswith("search-"):
            targets = "/".join(f"{round(100 * t)}" for t in p.search_targets)
            return f"bisection for the eps that give the natural model {targets} % error under {name[len('search-'):]}"
        if name.startswith("clean-"):
            return f"clean error of the {name[len('clean-'):]} model over {len(p.seeds)} codings"
        if name.startswith("attack-"):
            return f"attack error of the {tag} model at the paper's and the searched eps"
        if name.startswith("certify-"):
            return (f"certified error of the {tag} model at eps {c.recipe.train_eps} "
                    f"({', '.join(p.certify_methods)}; T' = {', '.join(map(str, p.certify_steps))})")
        if name.startswith("ball-"):
            n = self._ball_samples()
            if c.recipe.coding == "spike":
                ks = ", ".join(map(str, p.event_flips))
                return (f"l_0 certificate of the {tag} model: every recording within k = {ks} flipped events "
                        f"({p.ball_method}, T' = {min(p.certify_steps)}, {n} samples)")
            return (f"certificate of the {tag} model over {p.coding_maps} coding maps at eps {c.recipe.train_eps} "
                    f"(confidence {p.coding_confidence}, {p.ball_method}, T' = {min(p.certify_steps)}, {n} samples)")
        return "S-CROWN bound loss on the test samples"
