"""Natural (BPTT) training settings for the paper's models on a CPU budget.

Trains the paper's model on the full training set with each variant's TrainConfig (through
:func:`snn_robust.fit`, the recipes' code path), then reports clean accuracy on the first
``--n-test`` test images (one Bernoulli coding, seed 0) and the wall time; the trained model is
written to ``OUT/<variant>/model.pt`` (the recipes' model format) for robust-training runs.

    python benchmarks/natural_settings.py --dataset mnist --arch fc --variants adam-cos3 --out runs/natural
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import snn_robust as sr
from snn_robust.models import paper_model
from snn_robust.recipes.pipeline import load_test_set, load_train_set, save_model

#: Variant name -> TrainConfig.natural overrides.
VARIANTS: dict[str, dict] = {
    "sgd-2": dict(epochs=2, lr_milestones=()),
    "adam-cos2": dict(epochs=2, optimizer="adam", lr=1e-3, lr_schedule="cosine", warmup_epochs=0.1),
    "adam-cos3": dict(epochs=3, optimizer="adam", lr=1e-3, lr_schedule="cosine", warmup_epochs=0.1),
    "adam2e-3-cos2": dict(epochs=2, optimizer="adam", lr=2e-3, lr_schedule="cosine", warmup_epochs=0.1),
    "adam2e-3-cos3": dict(epochs=3, optimizer="adam", lr=2e-3, lr_schedule="cosine", warmup_epochs=0.1),
    "adam5e-4-cos3": dict(epochs=3, optimizer="adam", lr=5e-4, lr_schedule="cosine", warmup_epochs=0.1),
    "adam-cos5": dict(epochs=5, optimizer="adam", lr=1e-3, lr_schedule="cosine", warmup_epochs=0.1),
    "adam-cos1": dict(epochs=1, optimizer="adam", lr=1e-3, lr_schedule="cosine", warmup_epochs=0.1),
    "adam2e-3-cos1": dict(epochs=1, optimizer="adam", lr=2e-3, lr_schedule="cosine", warmup_epochs=0.1),
    "adam2e-3-cos5": dict(epochs=5, optimizer="adam", lr=2e-3, lr_schedule="cosine", warmup_epochs=0.1),
    "adam2e-3-cos8": dict(epochs=8, optimizer="adam", lr=2e-3, lr_schedule="cosine", warmup_epochs=0.1),
    "adam2e-3-cos3-s10": dict(epochs=3, optimizer="adam", lr=2e-3, lr_schedule="cosine", warmup_epochs=0.1, clean_scale=10.0),
    "adam-cos3-s10": dict(epochs=3, optimizer="adam", lr=1e-3, lr_schedule="cosine", warmup_epochs=0.1, clean_scale=10.0),
    "adam2e-3-cos1-bs64": dict(epochs=1, optimizer="adam", lr=2e-3, lr_schedule="cosine", warmup_epochs=0.1, batch_size=64),
    "adam1e-3-cos1-bs32": dict(epochs=1, optimizer="adam", lr=1e-3, lr_schedule="cosine", warmup_epochs=0.1, batch_size=32),
    "adam2e-3-cos1-bs32": dict(epochs=1, optimizer="adam", lr=2e-3, lr_schedule="cosine", warmup_epochs=0.1, batch_size=32),
    "adam2e-3-cos5-bs64": dict(epochs=5, optimizer="adam", lr=2e-3, lr_schedule="cosine", warmup_epochs=0.1, batch_size=64),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="mnist", choices=("mnist", "fmnist"))
    parser.add_argument("--arch", default="fc", choices=("fc", "conv"))
    parser.add_argument("--variants", nargs="+", default=["adam-cos3"])
    parser.add_argument("--n-train", type=int, default=None, help="stratified training subset (default: all)")
    parser.add_argument("--n-test", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/natural-settings")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    train = load_train_set(args.dataset, args.n_train)
    test = load_test_set(args.dataset, args.n_test)
    for name in args.variants:
        torch.manual_seed(args.seed)
        net = paper_model(args.arch, args.dataset)
        config = sr.TrainConfig.natural(**{**VARIANTS[name], "seed": args.seed})
        t0 = time.perf_counter()
        sr.fit(net, train, sr.DigitalLinf(0.0), config, device="cpu", progress=False)
        seconds = time.perf_counter() - t0
        clean = sr.clean_error(net, test, seeds=(0,), progress=False)
        folder = Path(args.out) / f"{args.dataset}-{args.arch}-{name}-s{args.seed}"
        save_model(folder / "model.pt", net, arch=args.arch, dataset=args.dataset, config=config.to_dict())
        print(json.dumps({"dataset": args.dataset, "arch": args.arch, "variant": name, "seed": args.seed,
                          "n_train": len(train), "n_test": len(test[1]), "train_s": round(seconds, 1),
                          "clean_acc": round(100 * (1 - clean.error), 2), "model": str(folder / "model.pt")}), flush=True)


if __name__ == "__main__":
    main()
