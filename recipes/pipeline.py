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

Here: the run folder, stage bookkeeping, training stages and whole runs
(:class:`RecipeRun`); beside it :mod:`.evaluation` (the evaluation stages), :mod:`.plan`
(the stage plan and time estimates for the log), :mod:`.search` (the eps search).
The library pieces a stage uses live in snn_robust: the training stage and model files
(:mod:`snn_robust.stages`, :mod:`snn_robust.modelfile`; the format the CLI's ``train`` /
``robust-train`` write and ``attack`` / ``certify`` read), datasets by name with their
perturbation sets and attacks (:mod:`snn_robust.datasets`), provenance records
(:mod:`snn_robust.provenance`). Their names are importable from here too, as before.
"""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

from snn_robust import distributed
from snn_robust.datasets import attack_names, load_test_set, load_train_set, make_attack, perturbation_for
from snn_robust.fileio import read_json, read_jsonl, write_json
from snn_robust.modelfile import MODEL_FORMAT, ModelFileError, load_model, save_model
from snn_robust.models import paper_model
from snn_robust.network import SpikingNetwork
from snn_robust.perturbations import Perturbation
from snn_robust.progress import format_duration
from snn_robust.provenance import environment, hardware
from snn_robust.stages import train_and_save
from snn_robust.training import TrainConfig

from .configs import Profile, Recipe
from .evaluation import EvaluationStages
from .plan import StagePlan
from .search import search_eps

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

RESULTS_SCHEMA = "snn-robust-recipe-results/1"


class RecipeConfigError(ValueError):
    """The run folder holds a run made with a different configuration."""


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


class RecipeRun(StagePlan, EvaluationStages):
    """One recipe under one profile in one run folder. :meth:`run` runs the stages that have
    no result file yet and writes the report; see the module docstring. The evaluation
    stages are :class:`~.evaluation.EvaluationStages`', the plan and time estimates for the
    log :class:`~.plan.StagePlan`'s."""

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
