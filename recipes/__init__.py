"""Recipes: the paper's experiments as configs plus one shared pipeline.

``snn-robust recipe NAME --profile smoke|quick|paper`` or, from Python::

    from snn_robust.recipes import get_recipe, get_profile, run_recipe
    results = run_recipe(get_recipe("mnist-fc"), get_profile("quick"), "runs/mnist-fc-quick")

See :mod:`.configs` (recipes, profiles, the paper's reference numbers), :mod:`.pipeline`
(the run: stages, resumption; with :mod:`.evaluation`, :mod:`.plan`, :mod:`.search`) and
:mod:`.report` (results.md and plots). The library pieces the recipes use (model files,
datasets by name, the training stage, provenance) are in :mod:`snn_robust` itself.
"""
from __future__ import annotations

import importlib
from typing import Any

# configs is plain Python (no torch): imported now, so that the command line can list the
# recipes and profiles quickly. The pipeline's names load torch and are imported on first use.
from .configs import PROFILES, RECIPES, PaperReference, Profile, Recipe, get_profile, get_recipe

_PIPELINE = ("MODEL_FORMAT", "RecipeConfigError", "RecipeRun", "load_model", "run_recipe", "save_model")

__all__ = [
    "MODEL_FORMAT",
    "PROFILES",
    "RECIPES",
    "PaperReference",
    "Profile",
    "Recipe",
    "RecipeConfigError",
    "RecipeRun",
    "get_profile",
    "get_recipe",
    "load_model",
    "run_recipe",
    "save_model",
]


def __getattr__(name: str) -> Any:
    if name not in _PIPELINE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(".pipeline", __name__), name)
    globals()[name] = value
    return value
