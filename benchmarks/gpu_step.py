"""GPU timings: natural and robust training steps, and certification, with the LIF bound
recurrences in torch against the CuPy kernels (snn_robust/kernels/).

For each model (the paper's MNIST FC 784-512-256-10 and CONV C64K3S2-C128K3S2-FC256-FC10,
random weights) and each bound (``--methods``, default ``ibp`` and ``crown-ibp``):

* the natural step and the robust step of benchmarks/robust_step.py (clean T = 10 forward
  and backward, plus the certified loss at T' = 3 and its backward; SGD at lr 0), timed
  side by side (median of the repeats, per-pair ratio), once with ``use_kernels("torch")``
  and once with ``use_kernels("cupy")``;
* certification: ``compute_bounds`` on the batch without gradient (the S-CROWN kernel runs
  only here; training gradients through S-CROWN stay in torch), torch against CuPy.

Every figure synchronises the GPU before reading the clock. TF32 is switched off (the
bounds' soundness argument assumes IEEE float32, bounds/rounding.py). The card's name is
printed with the results.

    python benchmarks/gpu_step.py [--models fc conv] [--methods ibp crown-ibp] [--batch 64]
        [--repeats 10] [--eps 0.12]

Without a CUDA device it exits with status 2 and says so; without CuPy it times the torch
columns only and says so. ``--device cpu`` runs the same torch columns on the CPU (to check
the script itself; no kernel runs there).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Callable

import torch

import snn_robust as sr
from snn_robust import kernels
from snn_robust.models import paper_model

sys.path.insert(0, str(Path(__file__).resolve().parent))
from robust_step import side_by_side, steps  # noqa: E402  (the same step closures as the CPU benchmark)


def _synced(fn: Callable[[], None], device: torch.device) -> Callable[[], None]:
    """``fn`` followed by a device synchronisation, so wall time covers the GPU work."""

    def run() -> None:
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    return run


def _median_time(fn: Callable[[], None], repeats: int) -> float:
    fn()  # warm-up (also compiles the kernels on first use)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def measure(arch: str, method: str, backend: str, batch: int, eps: float, repeats: int, device: torch.device) -> dict:
    """One row: natural / robust step and certification for one model, bound and backend."""
    torch.manual_seed(0)
    net = paper_model(arch, "mnist").to(device)
    with kernels.use_kernels(backend):
        natural, robust = steps(net, method, batch, eps, device=str(device))
        row = side_by_side(_synced(natural, device), _synced(robust, device), repeats)
        images = torch.rand(batch, 1, 28, 28, generator=torch.Generator().manual_seed(0)).to(device)
        labels = torch.randint(0, 10, (batch,), generator=torch.Generator().manual_seed(1)).to(device)
        gen = torch.Generator(device=device).manual_seed(0)
        lower, upper = sr.DigitalLinf(eps).bounds(images, steps=3, generator=gen)

        def certify() -> None:
            with torch.no_grad():
                sr.compute_bounds(net, lower, upper, labels, method=method)

        row["certify_s"] = round(_median_time(_synced(certify, device), repeats), 4)
    return {"model": arch, "method": method, "kernels": backend, "batch": batch, **row}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["fc", "conv"], choices=["fc", "conv"])
    p.add_argument("--methods", nargs="+", default=["ibp", "crown-ibp"], choices=["ibp", "crown-ibp"])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--eps", type=float, default=0.12)
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    args = p.parse_args(argv)

    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_step: no CUDA device is available (torch.cuda.is_available() is False); this benchmark times "
              "the GPU path. Run it on a machine with an NVIDIA GPU (pip install 'snn-robust[cupy]' for the kernels), "
              "or use --device cpu to check the script on the CPU (torch columns only).", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    backends = ["torch"]
    if device.type == "cuda":
        sr.use_ieee_float32()
        name = torch.cuda.get_device_name(device)
        if kernels.cupy_available():
            backends.append("cupy")
        else:
            print("gpu_step: cupy is not installed or sees no GPU: timing the torch columns only "
                  "(pip install 'snn-robust[cupy]')", file=sys.stderr)
    else:
        name = "CPU (script check; the kernels need CUDA)"
    print(f"device: {name}; torch {torch.__version__}; batch {args.batch}; eps {args.eps}; T = 10, T' = 3",
          flush=True)
    rows = []
    for arch in args.models:
        for method in args.methods:
            for backend in backends:
                row = measure(arch, method, backend, args.batch, args.eps, args.repeats, device)
                rows.append(row)
                print(json.dumps(row), flush=True)
    print(f"\n| model | bound | kernels | natural step | robust step | ratio | certify (no grad) |  ({name})")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model'].upper()} | {r['method']} | {r['kernels']} | {r['natural_s']:.4f} s | "
              f"{r['robust_s']:.4f} s | {r['ratio']:.2f}x | {r['certify_s']:.4f} s |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
