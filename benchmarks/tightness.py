"""Tightness of every bound method on the same weights and input bounds.

Loads model files written by ``snn-robust train`` / ``robust-train`` or a recipe
(``runs/<recipe>/{natural,robust}/model.pt``) and prints, per eps and method, the mean
margin lower bound, the share of test images verified, the share of margins where the
method is strictly tighter than S-IBP, and the time. Same sampled bounds for all methods.

    python benchmarks/tightness.py runs/mnist-fc-quick/natural/model.pt runs/mnist-fc-quick/robust/model.pt \
        --eps 0.02 0.06 0.12 --n 200
"""
from __future__ import annotations

import argparse
import json
import time

import torch

import snn_robust as sr
from snn_robust.data import fashion_mnist, mnist
from snn_robust.recipes.pipeline import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+")
    parser.add_argument("--eps", type=float, nargs="+", default=[0.02, 0.06, 0.12])
    parser.add_argument("--n", type=int, default=200, help="test images")
    parser.add_argument("--steps", type=int, default=3, help="T' of the bounds")
    parser.add_argument("--data-root", default="data")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for path in args.models:
        net, meta = load_model(path)
        data = (fashion_mnist if meta.get("dataset") == "fmnist" else mnist)(args.data_root, train=False)
        x = torch.stack([data[i][0] for i in range(args.n)])
        y = torch.tensor([int(data[i][1]) for i in range(args.n)])
        for eps in args.eps:
            lower, upper = sr.DigitalLinf(eps).bounds(x, args.steps, torch.Generator().manual_seed(0))
            found = {}
            with torch.no_grad():
                for method in sr.METHODS:
                    t0 = time.perf_counter()
                    found[method] = (sr.compute_bounds(net, lower, upper, y, method=method), time.perf_counter() - t0)
            ibp = found["ibp"][0]
            for method, (lb, seconds) in found.items():
                print(json.dumps({
                    "model": path, "eps": eps, "method": method,
                    "mean_margin_lb": round(lb.mean().item(), 4),
                    "verified": round((lb > 0).all(1).float().mean().item(), 4),
                    "tighter_than_ibp": round((lb > ibp + 1e-6).float().mean().item(), 4),
                    "looser_than_ibp": round((lb < ibp - 1e-6).float().mean().item(), 4),
                    "seconds": round(seconds, 2),
                }))


if __name__ == "__main__":
    main()
