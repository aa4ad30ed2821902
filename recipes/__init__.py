"""Recipes: the paper's experiments as configs plus one shared pipeline.

``snn-robust recipe NAME --profile smoke|quick|paper`` or, from Python::

    from snn_robust.recipes import get_recipe, get_profile, run_recipe
    results = run_recipe(get_recipe("mnist-fc"), get_profile("quick"), "runs/mnist-fc-quick")

See :mod:`.configs` (recipes, profiles, the paper's reference numbers), :mod:`.pipeline`
(the stages, model files, resumption) and :mod:`.report` (results.md and plots).
"""
from .configs import PROFILES, RECIPES, PaperReference, Profile, Recipe, get_profile, get_recipe
from .pipeline import MODEL_FORMAT, RecipeConfigError, RecipeRun, load_model, run_recipe, save_model

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
