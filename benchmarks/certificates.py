"""The sampled certificate (Section 3.2) beside the two stronger ones of
``snn_robust.certificates`` on model files, with the cost per sample (docs/certificates.md).

Images (MNIST, Fashion-MNIST): the sampled certificate (one coding map per sample) and the
certificate over coding maps (``--maps`` maps per sample, Clopper-Pearson at
``--confidence``), at each ``--eps``. Events (N-MNIST): the sampled ``SpikeL0`` picks at each
``--eps`` and the whole l_0 ball of ``--flips`` events, in the recording and per step.
Every certificate on the first ``--n-test`` test samples, T' = ``--tprime``, each method.
One JSON line per measurement, then a markdown table.

    OMP_NUM_THREADS=1 python benchmarks/certificates.py runs/mnist-fc.pt runs/mnist-fc-robust.pt \\
        --eps 0.02 0.05 --maps 100 --n-test 100
    OMP_NUM_THREADS=1 python benchmarks/certificates.py runs/nmnist-fc.pt --eps 0.005 --flips 1 2 4
    OMP_NUM_THREADS=1 python benchmarks/certificates.py runs/nmnist-fc.pt --flips 1 2 --check
"""
from __future__ import annotations

import argparse
import json
import time
from typing import Any, Callable

import torch

import snn_robust as sr
from snn_robust.certificates import coding_certificate_summary, event_certified_error
from snn_robust.recipes.pipeline import load_model, load_test_set, perturbation_for


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def measure(path: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    net, info = load_model(path)
    net.eval()
    test = load_test_set(info["dataset"], args.n_test)
    n = len(test[1])
    rows = []

    def row(kind: str, budget: str, method: str, verified: float, seconds: float, **extra: Any) -> None:
        rows.append({"model": path, "dataset": info["dataset"], "certificate": kind, "budget": budget, "method": method,
                     "tprime": args.tprime, "samples": n, "verified": verified, "s_per_sample": seconds / n, **extra})
        print(json.dumps(rows[-1]), flush=True)

    for method in args.methods:
        for eps in args.eps:
            sampled, sec = _timed(lambda: sr.certified_error(net, test, perturbation_for(info["dataset"], eps), args.tprime,
                                                             method, seeds=(0,), progress=False))
            row("sampled", f"eps {eps:g}", method, 1 - sampled.error, sec)
            if info["dataset"] != "nmnist" and args.maps:
                r, sec = _timed(lambda: coding_certificate_summary(
                    net, test, perturbation_for(info["dataset"], eps), args.maps, args.confidence, steps=args.tprime,
                    method=method, seed=0))
                row(f"over {args.maps} maps", f"eps {eps:g}", method, r["share_above_half"], sec,
                    certified_share=r["certified_share"], mean_lower=r["mean_lower"])
        if info["dataset"] == "nmnist":
            for per_step in (False, True):
                for k in args.flips:
                    r, sec = _timed(lambda: event_certified_error(net, test, k, per_step=per_step, steps=args.tprime,
                                                                  method=method))
                    row("l0 ball", f"k={k} {'per step' if per_step else 'recording'}", method, 1 - r.error, sec)
    return rows


def check_by_flipping(path: str, args: argparse.Namespace) -> None:
    """Sanity check on real recordings: for the first 10 samples certified at each ``k`` in
    ``--flips`` (up to 2, IBP), run the network on every single-flip recording (``k = 1``)
    or on 3000 random ``k``-flip recordings, and count the misclassified ones (must be 0).
    For ``k = 1`` also the other side: of the first 10 samples that are correct but not
    certified, how many a single flip (searched exhaustively) really misclassifies."""
    from snn_robust.evaluate import is_correct

    net, info = load_model(path)
    x, y = load_test_set(info["dataset"], args.n_test)
    frames = x[:, : args.tprime].transpose(0, 1).contiguous()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for k in [k for k in args.flips if 1 <= k <= 2]:
            certified = (sr.event_l0_bounds(net, frames, k, y, "ibp") > 0).all(1).nonzero().squeeze(1)
            checked = wrong = 0
            for b in certified[:10].tolist():
                flat = frames[:, b].reshape(-1)
                if k == 1:
                    idx = torch.arange(flat.numel()).unsqueeze(1)
                else:
                    idx = torch.stack([torch.randperm(flat.numel(), generator=gen)[:k] for _ in range(3000)])
                recs = flat.repeat(idx.shape[0], 1)
                recs[torch.arange(idx.shape[0]).unsqueeze(1), idx] = 1 - recs[torch.arange(idx.shape[0]).unsqueeze(1), idx]
                recs = recs.reshape(-1, frames.shape[0], *frames.shape[2:]).transpose(0, 1)
                wrong += int((~is_correct(net(recs), y[b].repeat(recs.shape[1]))).sum())
                checked += recs.shape[1]
            print(json.dumps({"model": path, "check": f"k={k}", "certified": len(certified), "checked_recordings": checked,
                              "misclassified": wrong}), flush=True)
            if k == 1:
                correct = is_correct(net(frames), y)
                open_ = (correct & ~(sr.event_l0_bounds(net, frames, 1, y, "ibp") > 0).all(1)).nonzero().squeeze(1)
                broken = 0
                for b in open_[:10].tolist():
                    flat = frames[:, b].reshape(-1)
                    recs = flat.repeat(flat.numel(), 1)
                    recs.diagonal().copy_(1 - flat)
                    recs = recs.reshape(-1, frames.shape[0], *frames.shape[2:]).transpose(0, 1)
                    broken += int(not is_correct(net(recs), y[b].repeat(recs.shape[1])).all())
                print(json.dumps({"model": path, "check": "k=1, correct but not certified", "samples": len(open_),
                                  "searched": min(10, len(open_)), "broken_by_one_flip": broken}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", help="model files from 'snn-robust train' / 'robust-train'")
    parser.add_argument("--eps", type=float, nargs="+", default=[0.02], help="budgets of the sampled certificates")
    parser.add_argument("--flips", type=int, nargs="+", default=[1, 2, 4], help="N-MNIST: flip budgets k")
    parser.add_argument("--maps", type=int, default=100, help="images: coding maps per sample (0: skip)")
    parser.add_argument("--confidence", type=float, default=0.99)
    parser.add_argument("--methods", nargs="+", default=["ibp", "crown-ibp"])
    parser.add_argument("--tprime", type=int, default=3)
    parser.add_argument("--n-test", type=int, default=100)
    parser.add_argument("--check", action="store_true",
                        help="N-MNIST: only run the flip check of check_by_flipping on the certified samples")
    args = parser.parse_args()
    torch.manual_seed(0)
    if args.check:
        for path in args.models:
            check_by_flipping(path, args)
        return
    rows = [r for path in args.models for r in measure(path, args)]
    print("\n| model | certificate | budget | method | verified | ms / sample |\n|---|---|---|---|---:|---:|")
    for r in rows:
        extra = ""
        if "mean_lower" in r:
            extra = f" (lower bound > 1/2; certified under {100 * r['certified_share']:.1f} % of maps, mean lower bound " \
                    f"{100 * r['mean_lower']:.1f} %)"
        print(f"| {r['model']} | {r['certificate']} | {r['budget']} | {r['method']} | {100 * r['verified']:.0f} %{extra} "
              f"| {1000 * r['s_per_sample']:.0f} |")


if __name__ == "__main__":
    main()
