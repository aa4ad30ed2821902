"""Issue 11 item 4, measured as a new user would try it: a plain snnTorch model and training
loop, the certified loss dropped in with its default arguments.

The paper's FC model (784-512-256-10, ``snn.Leaky(beta=0.25, threshold=0.25,
reset_mechanism="zero")``) is built in snnTorch and trained naturally with snnTorch's own
step loop and ``SF.ce_rate_loss`` (Adam 1e-3, Bernoulli rate coding, T = 10). From it, each
variant robust-trains a copy with Adam 1e-3 and ``w_clean * clean + w_cert * certified``, eps
ramped linearly from 0 to ``--eps`` over ``--ramp`` of the steps, then held:

- ``default``: ``sr.certified_loss(net, images, labels, sr.DigitalLinf(eps))`` with its
  default arguments (since session 4: S-IBP, T' = 5, regulariser 1/6), half clean and half
  certified loss, no clipping, eps ramped over all steps (the issue's new user);
  ``default-old``: the same with the defaults before (T' = 3, no regulariser);
- ``recommended``: docs/user-guide.md's "Recommended settings" (T' = 5, the regulariser at
  ``unstable_weight=1/6``, 0.4 / 0.6, gradient clip 0.25, ramp over 30 %);
- ``recommended-loop``: the same loop with T' = 3 and no regulariser, to separate the loop
  from the loss's arguments; ``recommended-loop-T5`` / ``-reg``: one of the two only.
- ``recommended-decay`` / ``default-decay``: those loops with the lr cut to a tenth for the
  last quarter of the steps (session 7).

Yardsticks on ``--n-test`` MNIST test images (seed 0): clean accuracy, the share verified by
S-IBP at ``--eps`` with T' = 3, and the EOT-PGD attack error at ``--attack-eps`` (10
iterations, 2 codings per step), all on the converted network (``sr.from_snntorch``, which
reproduces the snnTorch model's spikes bit for bit).

    OMP_NUM_THREADS=1 python benchmarks/user_loop.py --n-train 60000 --n-test 1000
"""
from __future__ import annotations

import argparse
import json
import time

import torch
from torch import nn

import snn_robust as sr
from snn_robust.datasets import load_test_set, load_train_set

OLD_DEFAULTS = {"steps": 3, "unstable_weight": 0.0}  # certified_loss's defaults before session 4
VARIANTS = {
    "default": dict(kwargs={}, w_clean=0.5, w_cert=0.5, clip=None, ramp=None),
    "default-old": dict(kwargs=OLD_DEFAULTS, w_clean=0.5, w_cert=0.5, clip=None, ramp=None),
    "recommended": dict(kwargs={"steps": 5, "unstable_weight": 1 / 6}, w_clean=0.4, w_cert=0.6, clip=0.25, ramp=0.3),
    # the recommended loop around the old default arguments: what the arguments alone add
    "recommended-loop": dict(kwargs=OLD_DEFAULTS, w_clean=0.4, w_cert=0.6, clip=0.25, ramp=0.3),
    "recommended-loop-T5": dict(kwargs={**OLD_DEFAULTS, "steps": 5}, w_clean=0.4, w_cert=0.6, clip=0.25, ramp=0.3),
    "recommended-loop-reg": dict(kwargs={**OLD_DEFAULTS, "unstable_weight": 1 / 6}, w_clean=0.4, w_cert=0.6, clip=0.25,
                                 ramp=0.3),
    # session 6: the bound logits scaled (certified_loss's bound_scale; margins are rates in [-1, 1])
    "default-bs1": dict(kwargs={"bound_scale": 1.0}, w_clean=0.5, w_cert=0.5, clip=None, ramp=None),
    "default-bs2": dict(kwargs={"bound_scale": 2.0}, w_clean=0.5, w_cert=0.5, clip=None, ramp=None),
    "default-bs3": dict(kwargs={"bound_scale": 3.0}, w_clean=0.5, w_cert=0.5, clip=None, ramp=None),
    # session 7: the lr x 0.1 over the last quarter of the steps (quick_robust's since then)
    "recommended-decay": dict(kwargs={"steps": 5, "unstable_weight": 1 / 6}, w_clean=0.4, w_cert=0.6, clip=0.25, ramp=0.3,
                              decay=0.75),
    "default-decay": dict(kwargs={}, w_clean=0.5, w_cert=0.5, clip=None, ramp=None, decay=0.75),
}


def snntorch_fc() -> nn.Sequential:
    import snntorch as snn

    leaky = dict(beta=0.25, threshold=0.25, reset_mechanism="zero", init_hidden=True)
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 512), snn.Leaky(**leaky), nn.Linear(512, 256), snn.Leaky(**leaky),
                         nn.Linear(256, 10), snn.Leaky(**leaky, output=True))


def run(model: nn.Sequential, images: torch.Tensor, steps: int = 10) -> torch.Tensor:
    """snnTorch's own step loop on rate-coded images: output spikes ``[T, B, 10]``."""
    from snntorch import utils

    utils.reset(model)
    return torch.stack([model(x_t)[0] for x_t in sr.bernoulli_encode(images, steps)])


def batches(train, batch_size: int, epoch: int):
    loader = torch.utils.data.DataLoader(train, batch_size=batch_size, shuffle=True,
                                         generator=torch.Generator().manual_seed(epoch))
    yield from loader


def natural_training(model: nn.Sequential, train, epochs: int, batch_size: int) -> None:
    from snntorch import functional as SF

    loss_fn = SF.ce_rate_loss()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for epoch in range(epochs):
        for images, labels in batches(train, batch_size, epoch):
            optimizer.zero_grad()
            loss_fn(run(model, images), labels).backward()
            optimizer.step()


def certified_training(model: nn.Sequential, train, eps: float, epochs: int, batch_size: int, variant: dict,
                       ramp: float) -> None:
    from snntorch import functional as SF

    net = sr.from_snntorch(model)  # shares model's parameters
    loss_fn = SF.ce_rate_loss()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    total = epochs * len(range(0, len(train), batch_size))
    schedule = sr.EpsSchedule(eps, ramp_steps=max(1, int((variant["ramp"] or ramp) * total)))
    decay_at = int(variant["decay"] * total) if variant.get("decay") else None
    step = 0
    for epoch in range(epochs):
        for images, labels in batches(train, batch_size, 100 + epoch):
            if step == decay_at:
                for group in optimizer.param_groups:
                    group["lr"] *= 0.1
            optimizer.zero_grad()
            clean = loss_fn(run(model, images), labels)
            bound = sr.certified_loss(net, images, labels, sr.DigitalLinf(schedule(step)), **variant["kwargs"])
            (variant["w_clean"] * clean + variant["w_cert"] * bound).backward()
            if variant["clip"] is not None:
                nn.utils.clip_grad_norm_(model.parameters(), variant["clip"])
            optimizer.step()
            step += 1


def evaluate(model: nn.Sequential, test, eps: float, attack_eps: float) -> dict:
    net = sr.from_snntorch(model)
    clean = sr.clean_error(net, test, seeds=(0,), progress=False)
    cert = sr.certified_error(net, test, sr.DigitalLinf(eps), steps=3, method="ibp", seeds=(0,), progress=False)
    att = sr.attack_error(net, test, sr.EOTPGD(eps=attack_eps, n_iter=10, samples=2), [attack_eps], seeds=(0,),
                          progress=False)
    return {"clean_acc": round(100 * (1 - clean.error), 2), f"verified@{eps}(ibp,T'3)": round(100 * (1 - cert.error), 2),
            f"eotpgd_error@{attack_eps}": round(100 * att.errors[0].error, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-train", type=int, default=60000)
    parser.add_argument("--n-test", type=int, default=1000)
    parser.add_argument("--natural-epochs", type=int, default=1)
    parser.add_argument("--robust-epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--eps", type=float, default=0.12)
    parser.add_argument("--ramp", type=float, default=1.0, help="share of the robust steps the eps ramp takes (default variant)")
    parser.add_argument("--attack-eps", type=float, default=0.1)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    train = load_train_set("mnist", args.n_train)
    test = load_test_set("mnist", args.n_test)

    torch.manual_seed(args.seed)
    model = snntorch_fc()
    t0 = time.perf_counter()
    natural_training(model, train, args.natural_epochs, args.batch_size)
    print(json.dumps({"variant": "natural", "seed": args.seed, "train_s": round(time.perf_counter() - t0, 1),
                      **evaluate(model, test, args.eps, args.attack_eps)}), flush=True)
    for name in args.variants:
        robust = snntorch_fc()  # a copy (snnTorch's hidden state holds a graph: no deepcopy)
        robust.load_state_dict(model.state_dict())
        torch.manual_seed(args.seed)
        t0 = time.perf_counter()
        certified_training(robust, train, args.eps, args.robust_epochs, args.batch_size, VARIANTS[name], args.ramp)
        print(json.dumps({"variant": name, "seed": args.seed, "train_s": round(time.perf_counter() - t0, 1),
                          **evaluate(robust, test, args.eps, args.attack_eps)}), flush=True)


if __name__ == "__main__":
    main()
