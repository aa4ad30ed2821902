"""The one pipeline every recipe runs: train, attack, certify, report.

Stages of a ``"table"`` recipe (Tables 1-2, Figure 5), each with its own result file in the
run folder; a stage whose file exists is not recomputed, so re-running the same command
continues an interrupted run (training itself resumes from ``fit``'s ``last.pt``):

================  ===============================  ==========================================
stage             result file                      what
================  ===============================  ==========================================
natural           natural/model.pt                 natural training (BPTT), Table 1
robust            robust/model.pt                  robust training from the natural model
clean-<model>     eval/<model>-clean.json          clean error over seeds
search-<attack>   eval/search-<attack>.json        eps giving the natural model 20/30/40/50 %
attack-<m>-<a>    eval/<model>-attack-<a>.json     attack error at the paper's + searched eps
certify-<model>   eval/<model>-certify.json        certified error per bound method and T'
ball-<model>      eval/<model>-ball.json           the stronger certificates (docs/certificates.md):
                                                   over the coding maps (images), the l_0 ball (N-MNIST)
report            results.json, results.md, *.png  always rewritten from the files above
================  ===============================  ==========================================

A ``"tprime"`` recipe (Figure 4) trains one robust model per T' (``robust-t<T'>``) from the
same natural model and evaluates clean error, the S-CROWN loss on test samples and time per
epoch.

The library pieces a stage uses live in snn_robust: the training stage and model files
(:mod:`snn_robust.stages`, :mod:`snn_robust.modelfile`; the format the CLI's ``train`` /
``robust-train`` write and ``attack`` / ``certify`` read), datasets by name with their
perturbation sets and attacks (:mod:`snn_robust.datasets`), provenance records
(:mod:`snn_robust.provenance`). Their names are importable from here too, as before.
"""
from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from snn_robust import DigitalLinf, compute_bounds, distributed
from snn_robust.datasets import attack_errors, attack_names, load_test_set, load_train_set, make_attack, perturbation_for
from snn_robust.fileio import read_json, read_jsonl, write_json
from snn_robust.loss import bound_logits
from snn_robust.modelfile import MODEL_FORMAT, ModelFileError, load_model, save_model
from snn_robust.models import paper_model
from snn_robust.network import SpikingNetwork
from snn_robust.perturbations import Perturbation
from snn_robust.progress import format_duration
from snn_robust.provenance import environment, hardware
from snn_robust.stages import train_and_save
from snn_robust.training import TrainConfig

from .configs import Profile, Recipe

__all__ = [
    "MODEL_FORMAT",
    "ModelFileError",
    "RecipeConfigError",
    "attack_names",
    "environment",
    "hardware",
    "load_model",
    "load_test_set",
    "load_train_set",
    "make_attack",
    "perturbation_for",
    "run_recipe",
    "save_model",
    "search_eps",
]

log = logging.getLogger(__name__)

MODEL_FORMAT = "snn-robust-model/1"
RESULTS_SCHEMA = "snn-robust-recipe-results/1"


class RecipeConfigError(ValueError):
    """The run folder holds a run made with a different configuration."""


# --------------------------------------------------------------------------------------------
# eps search


def search_eps(error_at: Callable[[float], float], targets: tuple[float, ...], hi: float, iters: int,
               max_hi: float = 1.0) -> dict[str, Any]:
    """Find eps where ``error_at(eps)`` (an attack error, roughly increasing in eps) is near
    each target, by bisection that shares every evaluation between targets.

    The bracket starts at ``[0, hi]``; ``hi`` doubles (up to ``max_hi``) while its error is
    below the largest target. For each target, the bracket is narrowed from the evaluated
    points on either side of it, then bisected ``iters`` times; the chosen eps is the
    evaluated one (over all targets' evaluations) whose error is nearest the target (ties:
    the smaller eps). A target below the error at eps -> 0 (the clean error) cannot be
    reached; it gets the smallest-error eps found.
    Returns ``{"targets", "eps", "errors", "evaluated": [[eps, error], ...]}``.
    """
    cache: dict[float, float] = {}

    def f(e: float) -> float:
        e = float(f"{e:.6g}")
        if e not in cache:
            cache[e] = float(error_at(e))
            log.info("eps search: eps %.6g -> attack error %.3f", e, cache[e])
        return cache[e]

    while f(hi) < max(targets) and hi < max_hi:
        hi = min(2 * hi, max_hi)
    for target in targets:
        below = [e for e, v in cache.items() if v < target]
        lo = max(below, default=0.0)
        above = [e for e, v in cache.items() if v >= target and e > lo]
        top = min(above, default=hi)
        for _ in range(iters):
            mid = (lo + top) / 2
            if f(mid) < target:
                lo = mid
            else:
                top = mid
    # choose from every evaluation, so a later target's bisection can serve an earlier one
    chosen = [min(cache, key=lambda e: (abs(cache[e] - t), e)) for t in targets]
    return {"targets": list(targets), "eps": chosen, "errors": [cache[e] for e in chosen],
            "evaluated": sorted([e, v] for e, v in cache.items())}


# --------------------------------------------------------------------------------------------
# The run


def _write_json(path: Path, obj: Any) -> None:
    if distributed.is_main():  # several processes (torchrun): rank 0 alone writes the run folder
        write_json(path, obj)


@dataclass
class _Ctx:
    recipe: Recipe
    profile: Profile
    out: Path
    arch: str
    device: torch.device
    seed: int
    data_root: Any
    verify: bool
    progress: bool


class RecipeRun:
    """One recipe under one profile in one run folder. :meth:`run` runs the stages that have
    no result file yet and writes the report; see the module docstring."""

    def __init__(self, recipe: Recipe, profile: Profile, out: str | os.PathLike[str], *,
                 data_root: Any = None, device: str | torch.device = "cpu", seed: int = 0,
                 verify_data: bool = True, progress: bool = True) -> None:
        profile = profile.for_recipe(recipe)
        self.c = _Ctx(recipe, profile, Path(out), recipe.arch_for(profile), torch.device(device), int(seed),
                      data_root, verify_data, progress)
        self.stages: dict[str, dict[str, Any]] = {}
        self._train = None
        self._test: tuple[Tensor, Tensor] | None = None
        self._started = time.time()
        self._t_run = time.perf_counter()

    # -- configuration ----------------------------------------------------------------------
    @property
    def perturbation(self) -> Perturbation:
        return perturbation_for(self.c.recipe.dataset, self.c.recipe.train_eps)

    def natural_config(self) -> TrainConfig:
        return TrainConfig.natural(**{**self.c.profile.natural, "seed": self.c.seed})

    def robust_config(self, bound_steps: int | None = None) -> TrainConfig:
        p = self.c.profile
        over = {**p.robust, "seed": self.c.seed}
        if bound_steps is not None:
            over["bound_steps"] = bound_steps
        return getattr(TrainConfig, p.robust_base)(self.c.recipe.train_eps, **over)

    def config(self) -> dict[str, Any]:
        """Everything that decides the numbers (written to config.json and results.json)."""
        c = self.c
        cfg: dict[str, Any] = {
            "recipe": c.recipe.to_dict(), "profile": c.profile.to_dict(), "arch": c.arch, "seed": c.seed,
            "natural_training": self.natural_config().to_dict(),
            "perturbation": repr(self.perturbation),
            "attacks": attack_names(c.recipe.dataset),
        }
        if c.recipe.kind == "tprime":
            cfg["robust_training"] = {f"t{t}": self.robust_config(t).to_dict() for t in c.recipe.tprimes}
        else:
            cfg["robust_training"] = self.robust_config().to_dict()
        return cfg

    # -- data -------------------------------------------------------------------------------
    def train_set(self) -> Any:
        if self._train is None:
            c = self.c
            self._train = load_train_set(c.recipe.dataset, c.profile.n_train, c.data_root, c.verify)
        return self._train

    def test_set(self) -> tuple[Tensor, Tensor]:
        if self._test is None:
            c = self.c
            self._test = load_test_set(c.recipe.dataset, c.profile.n_test, c.data_root, c.verify)
        return self._test

    # -- stage bookkeeping --------------------------------------------------------------------
    def _stage(self, name: str, result_file: Path, compute: Callable[[], Any], *, model: bool = False) -> Any:
        """Run ``compute`` unless ``result_file`` exists; record wall time and status.
        JSON stages store ``{"stage", "wall_s", "result"}``; model stages store the model file
        plus ``stage.json`` beside it."""
        marker = result_file.parent / "stage.json" if model else result_file
        # under torchrun rank 0 decides, so that every rank runs the same stages (training and
        # the sharded evaluations are collective)
        if distributed.broadcast_object(result_file.exists() and marker.exists()):
            info = read_json(marker, f"delete it to redo stage {name}")
            if name not in self.stages:  # a stage that ran in this invocation stays "ran"
                self.stages[name] = {"status": "cached", "wall_s": info.get("wall_s"), "file": str(result_file)}
                if "training_s" in info:
                    self.stages[name]["training_s"] = info["training_s"]
                log.info("%s: done in an earlier run (%s), read from %s", self._stage_title(name),
                         format_duration(info.get("wall_s") or 0.0), result_file)
            return info.get("result") if not model else None
        t0 = time.perf_counter()  # before the description, which may load the data (part of the stage)
        log.info("%s: %s", self._stage_title(name), self._stage_doc(name))
        result = compute()
        wall = time.perf_counter() - t0
        if model:
            if distributed.is_main():
                rows = read_jsonl(result_file.parent / "metrics.jsonl")
                # fit's own clock spans every resumption; wall_s only this invocation's part
                _write_json(marker, {"stage": name, "wall_s": wall, "training_s": rows[-1]["time"] if rows else None})
            # under torchrun every rank trains (fit is collective), then all read rank 0's files;
            # the other stages run on every rank alike (no collectives, no waiting), rank 0 writes
            distributed.barrier()
        else:
            _write_json(result_file, {"stage": name, "wall_s": wall, "result": result})
        self.stages[name] = {"status": "ran", "wall_s": wall, "file": str(result_file)}
        if model:
            self.stages[name]["training_s"] = json.loads(marker.read_text()).get("training_s")
        log.info("%s: done in %s (%s since the start of this run)%s", self._stage_title(name), format_duration(wall),
                 format_duration(time.perf_counter() - self._t_run), self._time_left(name))
        return result

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

    # -- training stages ----------------------------------------------------------------------
    def _train_and_save(self, path: Path, net: SpikingNetwork, config: TrainConfig, **meta: Any) -> None:
        """The library's training stage (:func:`snn_robust.stages.train_and_save`, as the
        CLI's train commands), checkpointing in the model file's folder."""
        c = self.c
        train_and_save(path, net, arch=c.arch, dataset=c.recipe.dataset, train_set=self.train_set(), config=config,
                       run_dir=path.parent, device=c.device, progress=c.progress, log_points=c.profile.log_points,
                       recipe=c.recipe.name, profile=c.profile.name, **meta)

    def natural_model(self) -> SpikingNetwork:
        c = self.c
        path = c.out / "natural" / "model.pt"

        def train() -> None:
            torch.manual_seed(c.seed)
            net = paper_model(c.arch, c.recipe.dataset)
            self._train_and_save(path, net, self.natural_config())

        self._stage("natural", path, train, model=True)
        return self._stage_model("natural", path)

    def _stage_model(self, name: str, path: Path) -> SpikingNetwork:
        try:
            return load_model(path, self.c.device)[0]
        except ModelFileError as exc:
            raise ModelFileError(f"stage {name}: {exc}; delete {path} and {path.parent / 'stage.json'} to redo "
                                 "that stage (training resumes from its checkpoint)") from None

    def robust_model(self, tag: str = "robust", bound_steps: int | None = None) -> SpikingNetwork:
        c = self.c
        path = c.out / tag / "model.pt"

        def train() -> None:
            net = self.natural_model()
            net.train()
            self._train_and_save(path, net, self.robust_config(bound_steps),
                                 initialised_from=str(c.out / "natural" / "model.pt"))

        self._stage(tag, path, train, model=True)
        return self._stage_model(tag, path)

    # -- evaluation stages --------------------------------------------------------------------
    def clean(self, tag: str, net: SpikingNetwork) -> dict[str, Any]:
        from snn_robust.evaluate import clean_error

        c = self.c
        return self._stage(f"clean-{tag}", c.out / "eval" / f"{tag}-clean.json", lambda: distributed.combine_errors(clean_error(
            net, self._test_share(), coding=c.recipe.coding, seeds=c.profile.seeds, batch_size=c.profile.eval_batch,
            progress=c.progress)).to_dict())

    def _test_share(self, max_samples: int | None = None) -> tuple[Tensor, Tensor]:
        """This process's share of the first ``max_samples`` test samples (all of them with one
        process); :func:`snn_robust.distributed.combine_errors` gives the error over all."""
        x, y = self.test_set()
        n = len(y) if max_samples is None else min(max_samples, len(y))
        return distributed.shard((x[:n], y[:n]))

    def search(self, attack: str, net: SpikingNetwork) -> dict[str, Any]:
        c = self.c
        p = c.profile

        def compute() -> dict[str, Any]:
            def error_at(e: float) -> float:
                r = attack_errors(net, self.test_set(), attack, [e], dataset=c.recipe.dataset, arch=c.arch,
                                  iters=p.attack_iters, eot_samples=p.eot_samples, seeds=p.attack_seeds[:1],
                                  batch_size=p.eval_batch, max_samples=p.search_samples, progress=False)
                return r["errors"][0]["error"]

            res = search_eps(error_at, p.search_targets, c.recipe.search_hi, p.search_iters)
            res["samples"] = min(p.search_samples, len(self.test_set()[1]))
            return res

        return self._stage(f"search-{attack}", c.out / "eval" / f"search-{attack}.json", compute)

    def attack(self, tag: str, net: SpikingNetwork, attack: str, searched: list[float]) -> dict[str, Any]:
        c = self.c
        p = c.profile
        eps = list(c.recipe.attack_eps) + list(searched)
        sources = ["paper"] * len(c.recipe.attack_eps) + [f"search {int(round(100 * t))}%" for t in p.search_targets]

        def compute() -> dict[str, Any]:
            res = attack_errors(net, self.test_set(), attack, eps, dataset=c.recipe.dataset, arch=c.arch,
                                iters=p.attack_iters, eot_samples=p.eot_samples, seeds=p.attack_seeds,
                                batch_size=p.eval_batch, progress=c.progress)
            res["sources"] = sources
            return res

        return self._stage(f"attack-{tag}-{attack}", c.out / "eval" / f"{tag}-attack-{attack}.json", compute)

    def certify(self, tag: str, net: SpikingNetwork) -> dict[str, Any]:
        from snn_robust.evaluate import certified_error

        c = self.c
        p = c.profile

        def compute() -> dict[str, Any]:
            out: dict[str, Any] = {"eps": c.recipe.train_eps, "perturbation": repr(self.perturbation), "methods": {}}
            for method in p.certify_methods:
                out["methods"][method] = {}
                for steps in p.certify_steps:
                    r = certified_error(net, self._test_share(p.certify_samples), self.perturbation, steps, method,
                                        seeds=p.certify_seeds, batch_size=p.eval_batch, progress=c.progress)
                    out["methods"][method][str(steps)] = distributed.combine_errors(r).to_dict()
            return out

        return self._stage(f"certify-{tag}", c.out / "eval" / f"{tag}-certify.json", compute)

    def _ball_samples(self) -> int:
        p = self.c.profile
        n = p.ball_samples if p.ball_samples is not None else p.certify_samples
        total = len(self.test_set()[1])
        return total if n is None else min(n, total)

    def ball_certificate(self, tag: str, net: SpikingNetwork) -> dict[str, Any]:
        """The certificates stronger than the sampled one (docs/certificates.md), at T' = the
        smallest ``certify_steps``, on the first ``ball_samples`` test samples.

        Images: :func:`~snn_robust.certificates.coding_certificate_summary`, the
        Clopper-Pearson lower bound on the probability over coding maps that the whole
        ``DigitalLinf(train_eps)`` ball is certified (``coding_maps`` maps per sample, seed
        0), computed alike on every process (its per-sample lists are not sharded).
        N-MNIST: :func:`~snn_robust.certificates.event_certified_error` over every recording
        within ``k`` flipped events of the whole recording, per ``k`` in ``event_flips``,
        sharded and combined like the certified error."""
        from snn_robust.certificates import coding_certificate_summary, event_certified_error

        c = self.c
        p = c.profile
        steps = min(p.certify_steps)

        def compute() -> dict[str, Any]:
            n = self._ball_samples()
            out: dict[str, Any] = {"method": p.ball_method, "steps": steps, "samples": n}
            if c.recipe.coding == "spike":
                out["event_l0"] = {str(k): distributed.combine_errors(event_certified_error(
                    net, self._test_share(n), k, steps=steps, method=p.ball_method,  # type: ignore[arg-type]
                    batch_size=p.eval_batch)).to_dict() for k in p.event_flips}
            else:
                x, y = self.test_set()
                out["over_codings"] = coding_certificate_summary(
                    net, (x[:n], y[:n]), DigitalLinf(c.recipe.train_eps), p.coding_maps, p.coding_confidence,
                    steps=steps, method=p.ball_method, seed=0, batch_size=p.eval_batch)  # type: ignore[arg-type]
            return out

        return self._stage(f"ball-{tag}", c.out / "eval" / f"{tag}-ball.json", compute)

    def bound_loss(self, tag: str, net: SpikingNetwork, steps: int) -> dict[str, Any]:
        """Mean S-CROWN (CROWN-IBP) loss ``CE(-[0, lb])`` on the test samples at the training
        eps, and the share verified by it, over the profile's seeds."""
        c = self.c

        def compute() -> dict[str, Any]:
            x, y = self.test_set()
            losses, verified = [], []
            for seed in c.profile.seeds:
                gen = torch.Generator(device=c.device).manual_seed(1000 + seed)
                total, ok = 0.0, 0
                for i in range(0, len(y), c.profile.eval_batch):
                    xb, yb = x[i:i + c.profile.eval_batch].to(c.device), y[i:i + c.profile.eval_batch].to(c.device)
                    if c.recipe.coding == "spike":
                        xb = xb.transpose(0, 1)
                    lo, up = self.perturbation.bounds(xb, steps, gen)
                    with torch.no_grad():
                        m = compute_bounds(net, lo, up, labels=yb, method="crown-ibp")
                    total += float(F.cross_entropy(bound_logits(m, yb), yb, reduction="sum"))
                    ok += int((m > 0).all(1).sum())
                losses.append(total / len(y))
                verified.append(ok / len(y))
            return {"steps": steps, "loss": sum(losses) / len(losses), "loss_per_seed": losses,
                    "verified": sum(verified) / len(verified), "seeds": list(c.profile.seeds)}

        return self._stage(f"bound-loss-{tag}-t{steps}", c.out / "eval" / f"{tag}-bound-loss-t{steps}.json", compute)

    # -- whole runs ---------------------------------------------------------------------------
    def _check_config(self) -> dict[str, Any]:
        cfg = self.config()
        path = self.c.out / "config.json"
        if path.exists():
            saved = read_json(path, "delete it (the stages' files are kept) or use another --out folder").get("config")
            if _comparable(saved) != _comparable(json.loads(json.dumps(cfg)), like=saved):
                raise RecipeConfigError(
                    f"{self.c.out} holds a run with a different configuration (recipe, profile or seed); "
                    "use another --out folder or delete that one")
        self.c.out.mkdir(parents=True, exist_ok=True)
        _write_json(path, {"config": cfg, "environment": environment(), "hardware": hardware(self.c.device)})
        return cfg

    def run(self) -> dict[str, Any]:
        """Run every missing stage, then write results.json, results.md and the plots."""
        from . import report

        cfg = self._check_config()
        t0 = self._t_run = time.perf_counter()
        log.info("%s (%s profile) into %s: %d stages; finished ones are read back", self.c.recipe.name,
                 self.c.profile.name, self.c.out, len(self.plan()))
        models: dict[str, Any]
        if self.c.recipe.kind == "tprime":
            models = self._run_tprime()
        else:
            models, search = self._run_table()
        results: dict[str, Any] = {
            "schema": RESULTS_SCHEMA,
            "recipe": self.c.recipe.name,
            "profile": self.c.profile.name,
            "config": cfg,
            "environment": environment(),
            "hardware": hardware(self.c.device),
            "stages": self.stages,
            "wall_s": {"this_invocation": time.perf_counter() - t0,
                       "all_stages": sum(s["wall_s"] or 0.0 for s in self.stages.values())},
            "models": models,
            "paper": self.c.recipe.paper.to_dict() if self.c.recipe.paper else None,
        }
        if self.c.recipe.kind == "table":
            results["eps_search"] = search
        if distributed.is_main():
            report.write_report(results, self.c.out)
        return results

    def _run_table(self) -> tuple[dict[str, Any], dict[str, Any]]:
        nat = self.natural_model()
        rob = self.robust_model()
        names = attack_names(self.c.recipe.dataset)
        search = {a: self.search(a, nat) for a in names}
        models = {}
        for tag, net in (("natural", nat), ("robust", rob)):
            models[tag] = {
                "clean_error": self.clean(tag, net),
                "attack": {a: {**self.attack(tag, net, a, search[a]["eps"]), "role": role} for a, role in names.items()},
                "certified": self.certify(tag, net),
                "ball_certificate": self.ball_certificate(tag, net),
            }
        return models, search

    def _run_tprime(self) -> dict[str, Any]:
        nat = self.natural_model()
        models: dict[str, Any] = {"natural": {"clean_error": self.clean("natural", nat),
                                              "bound_loss": self.bound_loss("natural", nat, 3)}}
        for t in self.c.recipe.tprimes:
            tag = f"robust-t{t}"
            net = self.robust_model(tag, bound_steps=t)
            metrics = read_jsonl(self.c.out / tag / "metrics.jsonl")
            times = [r["time"] for r in metrics]
            per_epoch = [b - a for a, b in zip([0.0] + times[:-1], times)]
            models[tag] = {
                "tprime": t,
                "clean_error": self.clean(tag, net),
                "bound_loss": self.bound_loss(tag, net, 3),
                "time_per_epoch_s": sum(per_epoch) / len(per_epoch) if per_epoch else None,
                "final_training_row": metrics[-1] if metrics else None,
            }
        return models


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


#: Profile fields added after run folders existed: a saved config without them was made
#: before they did (its finished stages hold; the new stages use the current values).
_LATER_PROFILE_FIELDS = ("coding_maps", "coding_confidence", "event_flips", "ball_method", "ball_samples")


def _comparable(cfg: Any, like: Any = None) -> Any:
    """A config without its documentation-only fields (the profile's ``reductions`` text),
    and without the :data:`_LATER_PROFILE_FIELDS` that the saved config ``like`` lacks."""
    if not isinstance(cfg, dict):
        return cfg
    out = json.loads(json.dumps(cfg))
    if isinstance(out.get("profile"), dict):
        out["profile"].pop("reductions", None)
        saved = like.get("profile") if isinstance(like, dict) else None
        if isinstance(saved, dict):
            for key in _LATER_PROFILE_FIELDS:
                if key not in saved:
                    out["profile"].pop(key, None)
    return out


def run_recipe(recipe: Recipe, profile: Profile, out: str | os.PathLike[str], **kwargs: Any) -> dict[str, Any]:
    """Run ``recipe`` under ``profile`` into ``out`` (resumable); return the results dict.
    Keyword arguments go to :class:`RecipeRun` (``data_root``, ``device``, ``seed``,
    ``verify_data``, ``progress``)."""
    return RecipeRun(recipe, profile, out, **kwargs).run()
