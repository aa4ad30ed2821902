"""How complete is ``best`` on a trained model? Where it leaves a sample unverified, is the
certificate missing or is the sample not robust?

For the first ``--n-test`` test images of a model file (digital l_inf at ``--eps``, T' = 3,
coding map seed 0, as ``certified_error`` samples it):

1. ``best``'s verified share with the MILP stage's time limit set to each of ``--time-limits``
   seconds per sample (no binary cap): does a longer MILP budget verify more? And with each
   of ``--node-limits`` instead (no time limit): a budget that does not depend on the load.
2. the MILP itself (``milp_verify`` with ``falsify=True``, the longest time limit) on the
   optimised S-CROWN bound's unverified rows: per sample *verified*, *falsified* (a real
   counterexample: an input in the sample's box whose forward pass, replayed, misclassifies),
   *band-limited* (only counterexamples within the rounding band) or *undecided* (time-out).

    OMP_NUM_THREADS=1 python benchmarks/milp_completeness.py runs/mnist-fc-quick/robust/model.pt --n-test 200
"""
from __future__ import annotations

import argparse
import collections
import json
import time

import torch

import snn_robust as sr
from snn_robust.bounds.api import margin_spec
from snn_robust.bounds.milp import milp_limits, milp_verify
from snn_robust.bounds.rounding import round_to_grid
from snn_robust.evaluate import certified_boxes
from snn_robust.recipes.pipeline import load_model, load_test_set

STEPS = 3  # T' of the certified error the recipes report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("--n-test", type=int, default=200)
    parser.add_argument("--eps", type=float, default=0.12)
    parser.add_argument("--time-limits", type=float, nargs="+", default=[1.0, 10.0])
    parser.add_argument("--node-limits", type=int, nargs="*", default=[],
                        help="also best with no time limit and this many branch-and-bound nodes per solve "
                             "(a limit on work: the same answer at any load)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    net, info = load_model(args.model)
    x, y = load_test_set(info["dataset"], args.n_test)
    perturbation = sr.DigitalLinf(args.eps)

    limits = [{"time_limit": t} for t in args.time_limits]
    limits += [{"time_limit": float("inf"), "node_limit": n} for n in args.node_limits]
    for limit in limits:
        t0 = time.perf_counter()
        with milp_limits(max_binaries=10**9, **limit):
            cert = sr.certified_error(net, (x, y), perturbation, steps=STEPS, method="best", seeds=(0,),
                                      progress=False)
        print(json.dumps({"model": args.model, "n": len(y), "milp_time_limit_s": limit["time_limit"],
                          "milp_node_limit": limit.get("node_limit"),
                          "verified_best_%": round(100 * (1 - cert.error), 2),
                          "seconds": round(time.perf_counter() - t0, 1)}), flush=True)

    # the coding maps certified_error draws for seed 0, so the MILP's verified count can be
    # checked against best's above
    parts = list(certified_boxes(net, (x, y), perturbation, STEPS, seed=0))
    lower, upper = torch.cat([p[0] for p in parts], 1), torch.cat([p[1] for p in parts], 1)
    with torch.no_grad():
        prior = sr.compute_bounds(net, lower, upper, labels=y, method="crown-ibp-optimized")
    result = milp_verify(net, lower, upper, margin_spec(y, prior.shape[1] + 1, lower.dtype),
                         prior=round_to_grid(prior, STEPS), time_limit=max(args.time_limits), max_binaries=10**9,
                         falsify=True)
    kinds: collections.Counter[str] = collections.Counter()
    for b, row in enumerate(result.status):
        if all(s in ("verified", "prior") for s in row):
            kinds["verified"] += 1
        elif "falsified" in row:
            kinds["falsified"] += 1
        elif any((b, s) in result.band_limited for s in range(len(row))):
            kinds["band-limited"] += 1
        else:
            kinds["undecided"] += 1
    print(json.dumps({"model": args.model, "n": len(y), "milp_time_limit_s": max(args.time_limits), **kinds,
                      "max_binaries": max(result.binaries), "max_sample_s": round(max(result.seconds), 2)}))


if __name__ == "__main__":
    main()
