"""Cost of one robust training step against one natural step, measured side by side.

Robust step: clean forward/backward at T=10 plus ``certified_loss`` at T'=3 and its
backward (the paper's 0.4/0.6 mix). Natural step: clean forward/backward at T=10.
Models: the paper's MNIST FC (784-512-256-10) and CONV (C64K3S2-C128K3S2-FC256-FC10).

    python benchmarks/robust_step.py [--batch 64] [--repeats 5] [--method crown-ibp] [--threads 1]
    python benchmarks/robust_step.py --models --weights runs/mnist-fc-quick/robust/model.pt
"""
from __future__ import annotations

import argparse
import json
import resource
import time

import torch
import torch.nn.functional as F

import snn_robust as sr
from snn_robust.models import paper_model


def _time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(arch: str, batch: int, repeats: int, method: str, eps: float, weights: str | None = None) -> dict:
    torch.manual_seed(0)
    net = paper_model(arch, "mnist")
    if weights:  # trained weights (where few neurons are unstable the transposes shrink)
        from snn_robust.recipes.pipeline import load_model

        net, _ = load_model(weights)
    opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
    images = torch.rand(batch, 1, 28, 28)
    labels = torch.randint(0, 10, (batch,))
    pert = sr.DigitalLinf(eps)
    gen = torch.Generator().manual_seed(0)

    def natural():
        opt.zero_grad()
        rates = net(sr.bernoulli_encode(images, 10, gen))
        F.cross_entropy(rates * 10, labels).backward()
        opt.step()

    def robust():
        opt.zero_grad()
        rates = net(sr.bernoulli_encode(images, 10, gen))
        clean = F.cross_entropy(rates * 10, labels)
        bound = sr.certified_loss(net, images, labels, pert, steps=3, method=method, generator=gen)
        (0.4 * clean + 0.6 * bound).backward()
        opt.step()

    t_nat = _time(natural, repeats)
    rss_nat = _peak_rss_mb()
    t_rob = _time(robust, repeats)
    rss_rob = _peak_rss_mb()
    return {
        "model": arch if not weights else weights,
        "batch": batch,
        "method": method,
        "natural_s": round(t_nat, 4),
        "robust_s": round(t_rob, 4),
        "ratio": round(t_rob / t_nat, 2),
        "peak_rss_mb_after_natural": round(rss_nat),
        "peak_rss_mb_after_robust": round(rss_rob),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--method", default="crown-ibp", choices=sr.METHODS)
    parser.add_argument("--eps", type=float, default=0.12)
    parser.add_argument("--models", nargs="*", default=["fc", "conv"])
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's default)")
    parser.add_argument("--weights", nargs="*", default=[], help="model files (snn-robust train / recipes) to time instead")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    for arch in args.models:
        print(json.dumps(measure(arch, args.batch, args.repeats, args.method, args.eps)))
    for path in args.weights:
        print(json.dumps(measure("fc", args.batch, args.repeats, args.method, args.eps, path)))


if __name__ == "__main__":
    main()
