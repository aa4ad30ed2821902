"""How the cost of the certified loss grows: time of one bound step (``certified_loss``
forward and backward, no clean part) against T', hidden width, batch and input size, one
at a time around the paper's MNIST FC (784-512-256-10, batch 64, T' = 3), with the fitted
exponent ``p`` of ``time ~ x^p`` (least squares on log-log; the values of one sweep are
timed round-robin, the median of the repeats each); and the peak memory of one
bound step against T' (each in a fresh subprocess, as ``robust_step.py --memory``).

FC with width ``w``: input-w-(w/2)-10, paper LIF (alpha = th = 0.25, hard reset), random
weights, random images, DigitalLinf(0.12). Input size ``s``: ``s x s`` images.

    python benchmarks/cost_growth.py [--bounds crown-ibp fused ibp] [--repeats 3] [--threads 1]
    python benchmarks/cost_growth.py --memory [--bounds crown-ibp fused]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time

import torch
from torch import nn

import snn_robust as sr
from robust_step import _median, _peak_mb, _rss_mb  # this script's folder is on sys.path

BASE = {"tprime": 3, "width": 512, "batch": 64, "side": 28}
SWEEPS = {"tprime": [1, 3, 5, 10], "width": [256, 512, 1024, 2048], "batch": [16, 32, 64, 128, 256], "side": [14, 28, 56]}


def _net(width: int, side: int) -> sr.SpikingNetwork:
    torch.manual_seed(0)
    sizes = [side * side, width, width // 2, 10]
    layers: list[nn.Module] = [nn.Flatten()]
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), sr.LIF(0.25, 0.25)]
    return sr.SpikingNetwork(layers)


def bound_step(tprime: int, width: int, batch: int, side: int, bound: str):
    """A closure running ``certified_loss`` and its backward once."""
    net = _net(width, side)
    images = torch.rand(batch, 1, side, side, generator=torch.Generator().manual_seed(0))
    labels = torch.randint(0, 10, (batch,), generator=torch.Generator().manual_seed(1))
    pert = sr.DigitalLinf(0.12)
    gen = torch.Generator().manual_seed(0)
    method = "ibp" if bound == "ibp" else "crown-ibp"

    def run() -> None:
        net.zero_grad()
        sr.certified_loss(net, images, labels, pert, steps=tprime, method=method, generator=gen,
                          fusion=bound == "fused", unstable_weight=0.0).backward()

    return run


def exponent(xs: list[float], ts: list[float]) -> float:
    lx, lt = [math.log(x) for x in xs], [math.log(t) for t in ts]
    mx, mt = sum(lx) / len(lx), sum(lt) / len(lt)
    return sum((a - mx) * (b - mt) for a, b in zip(lx, lt)) / sum((a - mx) ** 2 for a in lx)


def timings(bound: str, repeats: int) -> list[dict]:
    rows = []
    for name, values in SWEEPS.items():
        runs = [bound_step(**{**BASE, name: v}, bound=bound) for v in values]
        for run in runs:
            run()  # warm-up
        # round-robin over the values, so that a change of load hits all of them alike
        times: list[list[float]] = [[] for _ in values]
        for _ in range(repeats):
            for i, run in enumerate(runs):
                t0 = time.perf_counter()
                run()
                times[i].append(time.perf_counter() - t0)
        ts = [_median(t) for t in times]
        # input size: the cost follows the pixel count s^2, so fit against it
        xs = [v * v for v in values] if name == "side" else values
        rows.append({"bound": bound, "vary": name, "values": values, "seconds": [round(t, 4) for t in ts],
                     "exponent": round(exponent(xs, ts), 2), "of": "pixels" if name == "side" else name,
                     "load": os.getloadavg()[0]})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def memory(bound: str) -> dict:
    mb = []
    for tp in SWEEPS["tprime"]:
        cmd = [sys.executable, __file__, "--memory-child", bound, str(tp)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
        mb.append(json.loads(out)["step_mb"])
    row = {"bound": bound, "tprime": SWEEPS["tprime"], "step_mb": mb,
           "exponent": round(exponent(SWEEPS["tprime"], mb), 2)}
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--memory-child":
        torch.set_num_threads(1)
        run = bound_step(**{**BASE, "tprime": int(sys.argv[3])}, bound=sys.argv[2])
        before = _rss_mb()
        run()
        print(json.dumps({"step_mb": round(_peak_mb() - before, 1)}))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bounds", nargs="+", default=["crown-ibp", "fused", "ibp"], choices=["crown-ibp", "fused", "ibp"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--memory", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, load average {os.getloadavg()}")
    rows = [memory(b) if args.memory else timings(b, args.repeats) for b in args.bounds]
    if not args.memory:
        print("\n| bound | vary | values | seconds | exponent |\n|---|---|---|---|---:|")
        for r in (r for rs in rows for r in rs):
            print(f"| {r['bound']} | {r['vary']} | {r['values']} | {r['seconds']} | {r['exponent']} (of {r['of']}) |")


if __name__ == "__main__":
    main()
