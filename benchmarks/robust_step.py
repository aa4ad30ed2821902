"""Cost of one robust training step against one natural step, measured side by side.

Natural step: clean forward and backward at T = 10, SGD step. Robust step: the same clean
part plus the certified loss at T' = 3 and its backward (the paper's 0.4 / 0.6 mix). Bounds
(``--methods``): ``crown-ibp`` and ``ibp`` (``certified_loss`` on the C-1 margins) and
``fused`` (``certified_loss(..., method="crown-ibp", fusion=True)``: one S-CROWN row,
bounds/loss_fusion.py). Models: the paper's MNIST FC (784-512-256-10) and CONV
(C64K3S2-C128K3S2-FC256-FC10) with random weights, and trained FC model files
(``--weights``). Batch 64, DigitalLinf(0.12).

Timing: the two steps alternate (natural, robust, natural, ...) after one warm-up of each,
in one process, so both see the same load; the ratio is the median of the per-pair ratios,
the times the medians. The SGD learning rate is 0 (same work, weights unchanged, so trained
weights stay trained while being timed).

Memory (``--memory``): each step runs once in a fresh subprocess; the reported figure is
the peak resident set during the step minus the resident set just before it
(``getrusage`` maxrss against ``/proc/self/statm``), plus the process's peak.

    python benchmarks/robust_step.py [--models fc conv] [--methods crown-ibp ibp fused]
        [--threads 1 2] [--repeats 5] [--weights runs/h4/mnist-fc-quick-2/natural/model.pt ...]
    python benchmarks/robust_step.py --memory [--models fc conv] [--methods ...]
    python benchmarks/robust_step.py --losses --weights runs/h4/mnist-fc-quick-2/robust/model.pt
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from typing import Callable

import torch
import torch.nn.functional as F

import snn_robust as sr
from snn_robust.bounds.loss_fusion import FUSED_METHODS, fused_ce_bound
from snn_robust.loss import bound_logits
from snn_robust.models import paper_model

STEP_KINDS = ("crown-ibp", "ibp", "fused")


def _time(fn: Callable[[], None], repeats: int) -> float:
    """Median wall time of ``fn`` over ``repeats`` calls after one warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


def _median(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[len(xs) // 2] if len(xs) % 2 else (xs[len(xs) // 2 - 1] + xs[len(xs) // 2]) / 2


def _network(arch: str, weights: str | None) -> sr.SpikingNetwork:
    if weights:
        from snn_robust.recipes.pipeline import load_model

        return load_model(weights)[0]
    torch.manual_seed(0)
    return paper_model(arch, "mnist")


def steps(net: sr.SpikingNetwork, kind: str, batch: int, eps: float, tprime: int = 3,
          device: str = "cpu") -> tuple[Callable, Callable]:
    """``(natural, robust)`` step closures on a fixed random batch (on ``device``, where
    ``net`` must be too; benchmarks/gpu_step.py times them on a GPU)."""
    opt = torch.optim.SGD(net.parameters(), lr=0.0, momentum=0.9)
    images = torch.rand(batch, 1, 28, 28, generator=torch.Generator().manual_seed(0)).to(device)
    labels = torch.randint(0, 10, (batch,), generator=torch.Generator().manual_seed(1)).to(device)
    pert = sr.DigitalLinf(eps)
    gen = torch.Generator(device=device).manual_seed(0)
    method = "ibp" if kind == "ibp" else "crown-ibp"

    def natural() -> None:
        opt.zero_grad()
        rates = net(sr.bernoulli_encode(images, 10, gen))
        F.cross_entropy(rates * 10, labels).backward()
        opt.step()

    def robust() -> None:
        opt.zero_grad()
        rates = net(sr.bernoulli_encode(images, 10, gen))
        clean = F.cross_entropy(rates * 10, labels)
        bound = sr.certified_loss(net, images, labels, pert, steps=tprime, method=method, generator=gen,
                                  fusion=kind == "fused", unstable_weight=0.0)
        (0.4 * clean + 0.6 * bound).backward()
        opt.step()

    return natural, robust


def side_by_side(natural: Callable, robust: Callable, repeats: int) -> dict:
    """Alternate the two steps; medians and the median of the per-pair ratios."""
    natural(), robust()  # warm-up
    tn, tr = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        natural()
        t1 = time.perf_counter()
        robust()
        t2 = time.perf_counter()
        tn.append(t1 - t0)
        tr.append(t2 - t1)
    return {
        "natural_s": round(_median(tn), 4),
        "robust_s": round(_median(tr), 4),
        "ratio": round(_median([r / n for n, r in zip(tn, tr)]), 2),
        "ratio_min_max": [round(min(r / n for n, r in zip(tn, tr)), 2), round(max(r / n for n, r in zip(tn, tr)), 2)],
    }


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _memory_child(arch: str, weights: str | None, kind: str, which: str, batch: int, eps: float) -> None:
    torch.set_num_threads(1)
    net = _network(arch, weights)
    natural, robust = steps(net, kind, batch, eps)
    before = _rss_mb()
    (natural if which == "natural" else robust)()
    print(json.dumps({"step_mb": round(_peak_mb() - before, 1), "peak_mb": round(_peak_mb(), 1)}))


def memory(arch: str, weights: str | None, kind: str, batch: int, eps: float) -> dict:
    """Peak memory of each step, each in a fresh process."""
    out = {}
    for which in ("natural", "robust"):
        cmd = [sys.executable, __file__, "--memory-child", arch, weights or "", kind, which, str(batch), str(eps)]
        res = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
        out[f"{which}_step_mb"], out[f"{which}_peak_mb"] = res["step_mb"], res["peak_mb"]
    out["step_mb_ratio"] = round(out["robust_step_mb"] / out["natural_step_mb"], 2)
    out["peak_mb_ratio"] = round(out["robust_peak_mb"] / out["natural_peak_mb"], 2)
    return out


def losses(weights: list[str], data: str, batch: int, eps: float, tprime: int = 3) -> None:
    """The bound loss of each bound kind on MNIST test images (how tight the fused bound is
    next to the C-1 margin losses), one Bernoulli draw shared by all, no gradients."""
    from certify_throughput import _images

    x, y, source = _images(data, batch)
    lower, upper = sr.DigitalLinf(eps).bounds(x, tprime, torch.Generator().manual_seed(0))
    for path in weights:
        net = _network("fc", path)
        with torch.no_grad():
            clean = F.cross_entropy(net(sr.bernoulli_encode(x, 10, torch.Generator().manual_seed(0))), y)
            row = {"model": path, "inputs": source, "eps": eps, "tprime": tprime, "clean_ce_rates": round(float(clean), 4)}
            for method in ("ibp", "crown-ibp", "crown-ibp-adaptive"):
                margins = sr.compute_bounds(net, lower, upper, y, method=method)
                row[f"{method}_margins"] = round(float(F.cross_entropy(bound_logits(margins, y), y)), 4)
            for method in FUSED_METHODS[1:]:
                row[f"{method}_fused"] = round(float(fused_ce_bound(net, lower, upper, y, method=method).mean()), 4)
        print(json.dumps(row), flush=True)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--memory-child":
        arch, weights, kind, which, batch, eps = sys.argv[2:8]
        _memory_child(arch, weights or None, kind, which, int(batch), float(eps))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--methods", nargs="+", default=list(STEP_KINDS), choices=STEP_KINDS)
    parser.add_argument("--eps", type=float, default=0.12)
    parser.add_argument("--models", nargs="*", default=["fc", "conv"], choices=["fc", "conv"])
    parser.add_argument("--threads", type=int, nargs="+", default=[1], help="torch intra-op threads, one run each")
    parser.add_argument("--weights", nargs="*", default=[], help="trained FC model files to time too")
    parser.add_argument("--memory", action="store_true", help="peak memory per step (fresh subprocesses) instead of time")
    parser.add_argument("--losses", action="store_true", help="bound loss values of --weights on MNIST test images")
    parser.add_argument("--data", default="data")
    args = parser.parse_args()
    if args.losses:
        losses(args.weights, args.data, args.batch, args.eps)
        return
    print(f"torch {torch.__version__}, load average {os.getloadavg()}")
    cases = [(arch, None) for arch in args.models] + [("fc", w) for w in args.weights]
    for arch, weights in cases:
        for kind in args.methods:
            row = {"model": weights or f"{arch} (random)", "bound": kind, "batch": args.batch}
            if args.memory:
                print(json.dumps({**row, **memory(arch, weights, kind, args.batch, args.eps)}), flush=True)
                continue
            for threads in args.threads:
                torch.set_num_threads(threads)
                net = _network(arch, weights)
                timing = side_by_side(*steps(net, kind, args.batch, args.eps), args.repeats)
                print(json.dumps({**row, "threads": threads, **timing, "load": os.getloadavg()[0]}), flush=True)


if __name__ == "__main__":
    main()
