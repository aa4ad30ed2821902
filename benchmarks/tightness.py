"""Tightness of every bound method on the same weights and input bounds.

Models: files written by ``snn-robust train`` / ``robust-train`` or a recipe (their test
set is loaded: MNIST / Fashion-MNIST images with ``DigitalLinf``, N-MNIST event frames with
``SpikeL0``), or ``paper-fc`` / ``paper-conv``: the paper's MNIST networks with their
random initial weights (seed 0) on uniform random images (no data needed), each labelled
with the network's own clean prediction (T = 10).

Per model, eps and method it prints one JSON line: the share of samples verified (every
margin bound > 0), the mean margin lower bound, the shares of margins where the method is
strictly tighter / looser than S-IBP, and the time. Every method sees the same sampled
input bounds (seed 0). At eps 0 (``lower == upper``) it also prints ``max_gap_to_forward``:
the largest distance between a margin bound and the forward pass's true margin (0 when the
bounds are exact).

    python benchmarks/tightness.py paper-fc paper-conv runs/nmnist-fc-robust.pt --eps 0 0.002 0.005 --n 64
    python benchmarks/tightness.py ... --error-model any-order    # widen fixed inputs too
    python benchmarks/tightness.py ... --box-attack 300    # how many samples a search inside the box breaks
    python benchmarks/tightness.py ... --intervals          # per layer: S-IBP's and full S-CROWN's membranes
    python benchmarks/tightness.py ... --methods ibp crown-ibp milp --milp-time 10   # the MILP's per-sample limit

The ``milp`` row is computed as ``compute_bounds(method="milp")`` computes it (``crown-ibp``,
then :func:`~snn_robust.bounds.milp.milp_verify` on the rows it leaves unverified, with
``--milp-time`` seconds and ``--milp-binaries`` binaries per sample), called directly so that
the row also reports the samples the MILP falsified (a real counterexample in the box),
left undecided (time-out, or only counterexamples inside the rounding band: ``band_limited``)
or skipped (over the binary cap), and the time per sample.

``--box-attack N`` also searches the input box itself for a margin ``<= 0`` (``N`` random
corners, then 30 signed-gradient steps through the surrogate, each rounded to a corner):
a sample it breaks can be verified by no sound method, so ``n - broken`` bounds from above
what any bound on these input bounds can verify (the search is not exhaustive, so the true
ceiling may be lower).
"""
from __future__ import annotations

import argparse
import json
import time

import torch

import snn_robust as sr
from snn_robust.bounds.api import margin_spec
from snn_robust.bounds.milp import box_search, milp_limits, milp_verify
from snn_robust.bounds.rounding import ERROR_MODELS, set_error_model
from snn_robust.models import paper_model


def _model_and_data(spec: str, n: int, steps: int, data_root: str | None):
    """``(net, x, labels, perturbation)``; ``x`` is images ``[N, ...]`` or time-major frames."""
    if spec in ("paper-fc", "paper-conv"):
        torch.manual_seed(0)
        net = paper_model(spec[6:], "mnist")
        g = torch.Generator().manual_seed(1)
        x = torch.rand(n, 1, 28, 28, generator=g)
        with torch.no_grad():  # random images have no class: certify the network's own prediction
            y = net(sr.bernoulli_encode(x, 10, g)).argmax(1)
        return net, x, y, sr.DigitalLinf
    from snn_robust.recipes.pipeline import load_model, load_test_set, perturbation_for

    net, info = load_model(spec)
    x, y = load_test_set(info["dataset"], n, data_root)
    if info["dataset"] == "nmnist":
        x = x.transpose(0, 1)[:steps]  # time-major frames, the first T' steps
    return net, x, y, (lambda eps: perturbation_for(info["dataset"], eps))


def _bounds(pert, eps: float, x, steps: int):
    gen = torch.Generator().manual_seed(0)
    return pert(eps).bounds(x, steps, gen)


def _box_attack(net, lower, upper, y, tries: int, gen: torch.Generator) -> torch.Tensor:
    """``[B]``: samples with an input inside ``[lower, upper]`` whose margin is ``<= 0``
    (a tie counts: a certified sample needs every margin ``> 0``; :func:`box_search`)."""
    spec = margin_spec(y, net(lower).shape[1])
    return box_search(net, lower, upper, spec, tries, gen)[0].any(1)


def _milp(net, lower, upper, y, time_limit: float, max_binaries: int) -> tuple[torch.Tensor, dict]:
    """``milp``'s margin bounds ``[B, C-1]`` (``crown-ibp``'s, then the MILP on the rows they
    leave at ``<= 0``: what ``compute_bounds(method="milp")`` returns) and the MILP's counts."""
    prior = sr.compute_bounds(net, lower, upper, y, method="crown-ibp")
    found = milp_verify(net, lower, upper, margin_spec(y, prior.shape[1] + 1), prior=prior, time_limit=time_limit,
                        max_binaries=max_binaries)
    lb = torch.maximum(prior, found.lower)
    solved = [b for b, row in enumerate(found.status) if any(s != "prior" for s in row)]
    verified, falsified = found.verified(), found.falsified()
    seconds = sorted(found.seconds[b] for b in solved) or [0.0]
    stats = {
        "milp_samples": len(solved),
        "milp_verified": int(sum(verified[b] for b in solved)),
        "falsified": int(falsified.sum()),
        "skipped_over_cap": int(sum(1 for b in solved if found.binaries[b] < 0)),
        "undecided": int((~verified & ~falsified).sum()),
        "band_limited": len({b for b, _ in found.band_limited}),
        "milp_seconds_mean": round(sum(seconds) / len(seconds), 2),
        "milp_seconds_median": round(seconds[len(seconds) // 2], 2),
        "milp_seconds_max": round(seconds[-1], 2),
        "search_seconds": round(found.search_seconds, 2),
        "binaries_median": sorted(found.binaries[b] for b in solved)[len(solved) // 2] if solved else 0,
    }
    return lb, stats


def _intervals(net, lower, upper) -> list[dict]:
    """Per LIF layer: unstable membrane-steps per sample and the mean width of the unstable
    ones, for S-IBP's intervals and full S-CROWN's (``crown-full``)."""
    from snn_robust.bounds.ibp import s_ibp
    from snn_robust.bounds.intermediate import full_intervals

    with torch.no_grad():
        ibp, full = s_ibp(net, lower, upper), full_intervals(net, lower, upper)
    rows = []
    for k, ((il, iu), (fl, fu)) in enumerate(zip(ibp.membrane, full.membrane)):
        unstable = ibp.stability[k].unstable
        rows.append({
            "layer": k, "membrane_steps": int(il[:, 0].numel()),
            "unstable_ibp": round(unstable.sum().item() / il.shape[1], 2),
            "unstable_full": round(full.stability[k].unstable.sum().item() / il.shape[1], 2),
            "width_ibp": round((iu - il)[unstable].mean().item(), 5) if unstable.any() else 0.0,
            "width_full": round((fu - fl)[unstable].mean().item(), 5) if unstable.any() else 0.0,
        })
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", help="model files, paper-fc or paper-conv")
    parser.add_argument("--eps", type=float, nargs="+", default=[0.0, 0.002, 0.005])
    parser.add_argument("--n", type=int, default=64, help="test samples")
    parser.add_argument("--steps", type=int, default=3, help="T' of the bounds")
    parser.add_argument("--methods", nargs="+", default=list(sr.METHODS), choices=sr.METHODS)
    parser.add_argument("--error-model", default="same-kernel", choices=ERROR_MODELS)
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--box-attack", type=int, default=0, help="random corners tried (0: no search)")
    parser.add_argument("--intervals", action="store_true", help="per-layer S-IBP / full S-CROWN membrane intervals")
    parser.add_argument("--milp-time", type=float, default=None, help="MILP seconds per sample (default: the library's)")
    parser.add_argument("--milp-binaries", type=int, default=None, help="MILP binary cap per sample")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    set_error_model(args.error_model)
    for spec in args.models:
        net, x, y, pert = _model_and_data(spec, args.n, args.steps, args.data_root)
        for eps in args.eps:
            lower, upper = _bounds(pert, eps, x, args.steps)
            found, extra = {}, {}
            with torch.no_grad(), milp_limits(args.milp_time, args.milp_binaries) as limits:
                for method in args.methods:
                    t0 = time.perf_counter()
                    if method == "milp":
                        lb, extra[method] = _milp(net, lower, upper, y, limits["time_limit"], limits["max_binaries"])
                        extra[method].update(milp_time_limit=limits["time_limit"])
                    else:
                        # exhaustive: tightness of `best` on every sample, not the early exit's cheap
                        # maximum on samples the cheap methods already verify
                        lb = sr.compute_bounds(net, lower, upper, y, method=method, exhaustive=True)
                    found[method] = (lb, time.perf_counter() - t0)
                true = None
                if eps == 0:
                    rates = net(lower)
                    true = (margin_spec(y, rates.shape[1]) * rates.unsqueeze(1)).sum(-1)
            ibp = found["ibp"][0] if "ibp" in found else None
            for method, (lb, seconds) in found.items():
                row = {
                    "model": spec, "eps": eps, "method": method, "error_model": args.error_model,
                    "verified": round((lb > 0).all(1).float().mean().item(), 4),
                    "verified_count": int((lb > 0).all(1).sum()), "n": lb.shape[0],
                    "mean_margin_lb": round(lb.mean().item(), 4),
                    "seconds": round(seconds, 2),
                }
                if ibp is not None:
                    row["tighter_than_ibp"] = round((lb > ibp).float().mean().item(), 4)
                    row["looser_than_ibp"] = round((lb < ibp).float().mean().item(), 4)
                if true is not None:
                    row["max_gap_to_forward"] = float((lb - true).abs().max())
                row.update(extra.get(method, {}))
                print(json.dumps(row), flush=True)
            if args.intervals:
                for row in _intervals(net, lower, upper):
                    print(json.dumps({"model": spec, "eps": eps, "intervals": row}), flush=True)
            if args.box_attack:
                broken = _box_attack(net, lower, upper, y, args.box_attack, torch.Generator().manual_seed(1))
                print(json.dumps({"model": spec, "eps": eps, "method": "box-attack", "n": len(y),
                                  "broken": int(broken.sum()), "not_broken": int((~broken).sum()),
                                  # a sound method never verifies a broken sample: 0 for every one
                                  "verified_and_broken": {m: int(((lb > 0).all(1) & broken).sum())
                                                          for m, (lb, _) in found.items()}}), flush=True)


if __name__ == "__main__":
    main()
