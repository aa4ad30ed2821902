"""``snn-robust recipe``: a paper experiment end to end (the one command that imports
:mod:`snn_robust.recipes`)."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .common import UsageError, add_run_options, data_root, is_rank0, join_processes, probe_folder, resolve_device, say

def _cmd_recipe(args: argparse.Namespace) -> int:
    from ..recipes import RecipeConfigError, get_profile, get_recipe, run_recipe

    recipe, profile = get_recipe(args.name), get_profile(args.profile)
    out = Path(args.out) if args.out else Path("runs") / f"{args.name}-{args.profile}"
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a folder")
    probe_folder(out, "--out", out)
    root = data_root(args)
    device = join_processes(resolve_device(args.device))
    try:
        results = run_recipe(recipe, profile, out, data_root=root, device=device, seed=args.seed,
                             verify_data=args.verify_data, progress=not args.quiet and is_rank0())
    except RecipeConfigError as exc:
        raise UsageError(str(exc)) from None
    ran = [n for n, s in results["stages"].items() if s["status"] == "ran"]
    say(f"{recipe.name} ({profile.name}): {len(ran)} stage(s) run, {len(results['stages']) - len(ran)} reused; "
          f"results in {out}/results.md and {out}/results.json")
    return 0


def add_recipe(subparsers: Any) -> None:
    from ..recipes import PROFILES, RECIPES

    lines = [f"  {name:<14} {r.dataset} {r.arch.upper()}, train eps {r.train_eps}"
             + (f", T' {', '.join(map(str, r.tprimes))}" if r.tprimes else "") for name, r in RECIPES.items()]
    p = subparsers.add_parser(
        "recipe", help="reproduce one of the paper's experiments end to end",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Run a paper experiment: natural training, robust training at the paper's eps, the attack at\n"
            "the paper's four attack eps and at eps searched to give the natural model 20/30/40/50 %\n"
            "attack error (the paper's attack and a stronger reference), certified error per bound method\n"
            "at T' = 3 and 10. Writes results.json, results.md and plots into --out. Re-running the same\n"
            "command skips finished stages and resumes training from its last checkpoint.\n\n"
            "recipes:\n" + "\n".join(lines) + "\n\nprofiles:\n"
            "  smoke   the whole pipeline on tiny subsets in well under 2 minutes (tests; numbers mean nothing)\n"
            "  quick   a CPU budget (reduced; what it reduces and each recorded run's wall time: docs/reproduction.md)\n"
            "  paper   the paper's settings (80 + 300 epochs, SGD); for a GPU"),
        epilog=(
            "examples:\n"
            "  snn-robust recipe mnist-fc --profile quick\n"
            "  snn-robust recipe nmnist-conv --profile smoke --out /tmp/nmnist-smoke\n"
            "  snn-robust recipe mnist-conv --profile paper --device cuda"))
    p.add_argument("name", choices=list(RECIPES), metavar="NAME", help="recipe: " + ", ".join(RECIPES))
    p.add_argument("--profile", choices=list(PROFILES), default="quick", help="compute budget (default: quick)")
    p.add_argument("--out", metavar="DIR", default=None, help="run folder (default: runs/NAME-PROFILE)")
    add_run_options(p)
    p.set_defaults(handler=_cmd_recipe)

