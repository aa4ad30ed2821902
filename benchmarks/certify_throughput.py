"""Certification throughput: images per second for ``compute_bounds`` with each method,
and with ``best`` exhaustive (every method on every sample) against ``best`` with early
exit (the optimised S-CROWN only on samples the cheap methods leave unverified).

Models: the paper's MNIST FC (784-512-256-10) with trained weights where a checkpoint is
given (``--fc-weights``, e.g. the quick robust recipe's model) and the paper's CONV
(C64K3S2-C128K3S2-FC256-FC10) with random weights unless ``--conv-weights`` is given.
Inputs: the first ``--batch`` MNIST test images from ``--data`` (random images if the
files are missing; the output says which). Bounds: ``DigitalLinf(eps)`` with ``T'`` steps,
one fixed Bernoulli draw, no gradients, as :func:`snn_robust.certified_error` runs them.

    python benchmarks/certify_throughput.py [--batch 64] [--eps 0.12] [--tprime 3] [--threads 1]
        [--fc-weights runs/h4/mnist-fc-quick-2/robust/model.pt] [--data data] [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import os

import torch

import snn_robust as sr
from snn_robust.models import paper_model

from robust_step import _time  # the median-of-repeats timer (this script's folder is on sys.path)

METHODS = ("ibp", "crown-ibp", "crown-ibp-adaptive", "crown-full", "crown-ibp-optimized")


def _images(data: str, batch: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    try:
        from snn_robust.data import mnist

        ds = mnist(data, train=False, download=False)
        xs, ys = zip(*(ds[i] for i in range(batch)))
        return torch.stack(xs), torch.as_tensor(ys), f"MNIST test images 0..{batch - 1}"
    except Exception as err:  # no local files: random inputs, said so in the output
        g = torch.Generator().manual_seed(0)
        return torch.rand(batch, 1, 28, 28, generator=g), torch.randint(0, 10, (batch,), generator=g), \
            f"random images ({type(err).__name__})"


def _model(arch: str, weights: str | None) -> tuple[sr.SpikingNetwork, str]:
    if weights and os.path.exists(weights):
        from snn_robust.recipes.pipeline import load_model

        net, _ = load_model(weights)
        return net, weights
    torch.manual_seed(0)
    return paper_model(arch, "mnist"), f"paper {arch}, random weights"


def measure(arch: str, weights: str | None, data: str, batch: int, eps: float, tprime: int, repeats: int) -> list[dict]:
    net, what = _model(arch, weights)
    net.eval()
    x, y, source = _images(data, batch)
    lower, upper = sr.DigitalLinf(eps).bounds(x, tprime, torch.Generator().manual_seed(0))
    rows = []
    runs = [(m, m, False) for m in METHODS] + [("best (exhaustive)", "best", True), ("best (early exit)", "best", False)]
    for name, method, exhaustive in runs:
        out = []

        def certify():
            with torch.no_grad():
                out[:] = [sr.compute_bounds(net, lower, upper, y, method=method, exhaustive=exhaustive)]

        seconds = _time(certify, repeats)
        lb = out[0]
        rows.append({
            "model": what, "inputs": source, "method": name, "batch": batch, "eps": eps, "tprime": tprime,
            "seconds": round(seconds, 4), "images_per_s": round(batch / seconds, 1),
            "verified": int((lb > 0).all(1).sum()),
        })
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--eps", type=float, default=0.12)
    ap.add_argument("--tprime", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--data", default="data")
    ap.add_argument("--fc-weights", default="runs/h4/mnist-fc-quick-2/robust/model.pt")
    ap.add_argument("--conv-weights", default=None)
    ap.add_argument("--models", nargs="+", default=["fc", "conv"], choices=["fc", "conv"])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for arch in args.models:
        weights = args.fc_weights if arch == "fc" else args.conv_weights
        rows += measure(arch, weights, args.data, args.batch, args.eps, args.tprime, args.repeats)
    print("\n| model | method | images/s | s per batch | verified |")
    print("|---|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['model']} | {r['method']} | {r['images_per_s']} | {r['seconds']} | {r['verified']}/{r['batch']} |")


if __name__ == "__main__":
    main()
