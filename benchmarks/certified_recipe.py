"""Which certified-training recipe works on a short CPU budget (issue 11, MNIST FC first).

Every variant robust-trains a copy of the same naturally trained model (a model file from
``benchmarks/natural_settings.py`` or a recipe's ``natural/model.pt``) with
``TrainConfig.quick_robust(eps, **overrides)`` through :func:`snn_robust.fit` (the recipes'
code path), for each training seed, then reports on the first ``--n-test`` test images:
clean accuracy (one coding, seed 0), the verified share at ``eps`` (``--certify-method``,
T' = 3, seed 0) and the EOT-PGD attack error (10 iterations, 2 codings per step, seed 0) at
``--attack-eps`` (default: the paper's largest MNIST-FC eps, 0.154). One JSON line per run.

    python benchmarks/certified_recipe.py runs/natural/mnist-fc-adam-cos3-s0/model.pt \\
        --variants base tfac1.5 --seeds 0 1 --n-test 1000
"""
from __future__ import annotations

import argparse
import copy
import json
import time
from typing import Any

import torch

import snn_robust as sr
from snn_robust.recipes.pipeline import load_model, load_test_set, load_train_set

#: Variant name -> TrainConfig.quick_robust overrides (on top of "epochs" / ramp / hold given
#: on the command line).
VARIANTS: dict[str, dict[str, Any]] = {
    "base": dict(),  # TrainConfig.quick_robust as it is (since this commit: with the cosine lr)
    "cos": dict(lr_schedule="cosine"),
    "cos-crown": dict(lr_schedule="cosine", method="crown-ibp"),
    "crown": dict(method="crown-ibp"),
    "cos-smooth": dict(lr_schedule="cosine", eps_shape="smooth"),
    "const-lr": dict(lr_schedule="step"),
    "tfac1.5": dict(train_eps_factor=1.5),
    "tfac2": dict(train_eps_factor=2.0),
    "cos-tfac1.5": dict(lr_schedule="cosine", train_eps_factor=1.5),
    "cos-tfac1.5-smooth": dict(lr_schedule="cosine", train_eps_factor=1.5, eps_shape="smooth"),
    "cos-tfac1.5-kappa": dict(lr_schedule="cosine", train_eps_factor=1.5, clean_weight_start=1.0),
    "cos-tfac1.5-noclip": dict(lr_schedule="cosine", train_eps_factor=1.5, clip_norm=None),
    "cos-tfac1.5-w.2": dict(lr_schedule="cosine", train_eps_factor=1.5, clean_weight=0.2, bound_weight=0.8),
    "cos-tfac1.5-w.6": dict(lr_schedule="cosine", train_eps_factor=1.5, clean_weight=0.6, bound_weight=0.4),
    "cos-tfac1.5-lr5e-4": dict(lr_schedule="cosine", train_eps_factor=1.5, lr=5e-4),
    "cos-tfac1.5-bs5": dict(lr_schedule="cosine", train_eps_factor=1.5, bound_scale=5.0),
    "cos-tfac2-bs5": dict(lr_schedule="cosine", train_eps_factor=2.0, bound_scale=5.0),
    "cos-tfac1.5-bs5-w.2": dict(lr_schedule="cosine", train_eps_factor=1.5, bound_scale=5.0, clean_weight=0.2, bound_weight=0.8),
    "cos-tfac1.5-bs5-kappa": dict(lr_schedule="cosine", train_eps_factor=1.5, bound_scale=5.0, clean_weight_start=1.0),
    "cos-tfac1.5-bs5-lr2e-3": dict(lr_schedule="cosine", train_eps_factor=1.5, bound_scale=5.0, lr=2e-3),
    "cos-tfac1.5-crown": dict(lr_schedule="cosine", train_eps_factor=1.5, method="crown-ibp"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("natural_model")
    parser.add_argument("--variants", nargs="+", default=["base"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--eps", type=float, default=0.12)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--ramp-epochs", type=float, default=0.9)
    parser.add_argument("--n-train", type=int, default=None)
    parser.add_argument("--n-test", type=int, default=1000)
    parser.add_argument("--attack-eps", type=float, nargs="+", default=[0.154])
    parser.add_argument("--certify-method", default="ibp")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    natural, info = load_model(args.natural_model)
    train = load_train_set(info["dataset"], args.n_train)
    test = load_test_set(info["dataset"], args.n_test)
    attack = sr.EOTPGD(eps=args.attack_eps[0], n_iter=10, samples=2)

    def report(name: str, seed: int, net: sr.SpikingNetwork, seconds: float, config: dict[str, Any]) -> None:
        t0 = time.perf_counter()
        clean = sr.clean_error(net, test, seeds=(0,), progress=False)
        cert = sr.certified_error(net, test, sr.DigitalLinf(args.eps), steps=3, method=args.certify_method,
                                  seeds=(0,), progress=False)
        att = sr.attack_error(net, test, attack, args.attack_eps, seeds=(0,), progress=False)
        print(json.dumps({
            "variant": name, "seed": seed, "train_s": round(seconds, 1), "eval_s": round(time.perf_counter() - t0, 1),
            "n_test": len(test[1]), "clean_acc": round(100 * (1 - clean.error), 2),
            f"verified@{args.eps}({args.certify_method},T'3)": round(100 * (1 - cert.error), 2),
            "eotpgd_error": {str(e): round(100 * r.error, 2) for e, r in zip(att.eps, att.errors)},
            "config": config,
        }), flush=True)

    for name in ("natural", "as-is"):  # evaluate the loaded model itself (as-is: e.g. a recipe's robust model)
        if name in args.variants:
            report(name, -1, natural, 0.0, {"model": args.natural_model})
    for name in args.variants:
        if name in ("natural", "as-is"):
            continue
        for seed in args.seeds:
            net = copy.deepcopy(natural)
            over = {"epochs": args.epochs, "ramp_epochs": args.ramp_epochs,
                    "hold_epochs": args.epochs - args.ramp_epochs, "seed": seed, **VARIANTS[name]}
            config = sr.TrainConfig.quick_robust(args.eps, **over)
            t0 = time.perf_counter()
            sr.fit(net, train, sr.DigitalLinf(args.eps), config, device="cpu", progress=False)
            report(name, seed, net, time.perf_counter() - t0, over)


if __name__ == "__main__":
    main()
