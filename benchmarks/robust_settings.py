"""Which robust-training settings make the gain appear on a CPU budget (MNIST, FC).

Starts every variant from the same naturally trained model (a recipe's
``natural/model.pt``), robust-trains it for the same number of steps at eps 0.12 with the
same eps ramp, and reports clean error, EOT-PGD attack error and certified error on the
same test images. Variants differ only in the optimizer and the training bound:

* ``paper``: SGD lr 5e-4, momentum 0.9, clip 0.25, CROWN-IBP bound (method.md section 5)
* ``paper-ibp``: the same with the S-IBP bound
* ``adam-crown``: Adam lr 1e-3 with the CROWN-IBP bound
* ``adam-ibp``: Adam lr 1e-3 with the S-IBP bound (``TrainConfig.quick_robust``)

    python benchmarks/robust_settings.py runs/mnist-fc-quick/natural/model.pt --steps 400 --n-test 300
"""
from __future__ import annotations

import argparse
import copy
import json
import time

import torch
from torch.utils.data import Subset

import snn_robust as sr
from snn_robust.data import mnist
from snn_robust.recipes.pipeline import load_model

VARIANTS = {
    "paper": dict(),
    "paper-ibp": dict(method="ibp"),
    "adam-crown": dict(optimizer="adam", lr=1e-3, method="crown-ibp"),
    "adam-ibp": dict(optimizer="adam", lr=1e-3, method="ibp"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("natural_model")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--eps", type=float, default=0.12)
    parser.add_argument("--attack-eps", type=float, nargs="+", default=[0.05, 0.1])
    parser.add_argument("--n-test", type=int, default=300)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    parser.add_argument("--data-root", default="data")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    natural, _ = load_model(args.natural_model)
    train = Subset(mnist(args.data_root, train=True), range(30000))
    test = mnist(args.data_root, train=False)
    x = torch.stack([test[i][0] for i in range(args.n_test)])
    y = torch.tensor([int(test[i][1]) for i in range(args.n_test)])
    attack = sr.EOTPGD(eps=args.attack_eps[0], n_iter=10, samples=2)

    def report(name: str, net: sr.SpikingNetwork, seconds: float) -> None:
        clean = sr.clean_error(net, (x, y), seeds=(0, 1), progress=False)
        att = sr.attack_error(net, (x, y), attack, args.attack_eps, seeds=(0, 1), progress=False)
        cert = sr.certified_error(net, (x, y), sr.DigitalLinf(args.eps), steps=3, method="ibp", seeds=(0,), progress=False)
        print(json.dumps({
            "variant": name, "train_steps": 0 if name == "natural" else args.steps, "train_s": round(seconds, 1),
            "clean_error": round(clean.error, 4),
            "eotpgd_error": {str(e): round(r.error, 4) for e, r in zip(att.eps, att.errors)},
            f"certified_error@{args.eps}": round(cert.error, 4),
        }), flush=True)

    report("natural", natural, 0.0)
    steps_per_epoch = len(train) // 128 + 1
    for name in args.variants:
        net = copy.deepcopy(natural)
        half = args.steps / 2 / steps_per_epoch  # ramp eps over the first half of the steps, then hold
        schedule = dict(ramp_epochs=half, hold_epochs=half, epochs=int(2 * half) + 1)
        config = sr.TrainConfig.robust(args.eps, **{**schedule, **VARIANTS[name]})
        t0 = time.perf_counter()
        sr.fit(net, train, sr.DigitalLinf(args.eps), config, max_steps=args.steps, device="cpu", progress=False)
        report(name, net, time.perf_counter() - t0)


if __name__ == "__main__":
    main()
