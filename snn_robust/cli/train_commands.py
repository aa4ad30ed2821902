"""``snn-robust train`` and ``robust-train``: natural and certified training of a paper
model into a model file, through the library's training stage
(:func:`snn_robust.stages.train_and_save`, as the recipes)."""
from __future__ import annotations

import argparse
from typing import Any

from ..names import DATASETS, METHODS
from .common import (UsageError, add_run_options, data_root, eps_type, join_processes, load_model_arg,
                     methods_listing, nonnegative_float, out_file, positive_float, positive_int, resolve_device,
                     say, seed_everything)

DATASET_HELP = "mnist, fmnist (images, Bernoulli rate coded) or nmnist (event frames, T = 10)"


def _cmd_train(args: argparse.Namespace) -> int:
    from ..datasets import load_train_set
    from ..models import paper_model
    from ..stages import train_and_save
    from ..training import TrainConfig

    device = join_processes(resolve_device(args.device))
    seed_everything(args.seed)
    out = out_file(args.out)
    train = load_train_set(args.dataset, args.train_samples, data_root(args), args.verify_data)
    cfg = TrainConfig.natural(epochs=args.epochs, batch_size=args.batch_size, optimizer=args.optimizer,
                              lr=args.lr, lr_milestones=tuple(args.lr_milestones), seed=args.seed)
    net = paper_model(args.arch, args.dataset)
    run_dir = out.with_name(out.stem + "_run")
    train_and_save(out, net, arch=args.arch, dataset=args.dataset, train_set=train, config=cfg, run_dir=run_dir,
                   device=device, progress=not args.quiet)
    say(f"saved {out} (metrics and checkpoint in {run_dir})")
    return 0


def _cmd_robust_train(args: argparse.Namespace) -> int:
    from ..datasets import load_train_set
    from ..stages import train_and_save
    from ..training import TrainConfig

    device = join_processes(resolve_device(args.device))
    seed_everything(args.seed)
    net, info = load_model_arg(args.model, device)
    out = out_file(args.out)
    train = load_train_set(info["dataset"], args.train_samples, data_root(args), args.verify_data)
    over: dict[str, Any] = {"seed": args.seed}
    if args.tprime is not None:  # else the settings' own T' (paper 3, quick 5)
        over["bound_steps"] = args.tprime
    for name in ("epochs", "lr", "method", "batch_size", "ramp_epochs", "hold_epochs"):
        value = getattr(args, name)
        if value is not None:
            over[name] = value
    base = TrainConfig.quick_robust if args.settings == "quick" else TrainConfig.robust
    try:
        cfg = base(args.eps, **over)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    run_dir = out.with_name(out.stem + "_run")
    net.train()
    train_and_save(out, net, arch=info["arch"], dataset=info["dataset"], train_set=train, config=cfg, run_dir=run_dir,
                   device=device, progress=not args.quiet, initialised_from=str(args.model))
    say(f"saved {out} (metrics, incl. bound loss and verified share, and checkpoint in {run_dir})")
    return 0


def add_train(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "train", help="natural (BPTT) training of a paper model", formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Train the paper's FC or CONV spiking network (LIF, alpha = th = 0.25, T = 10) with BPTT and\n"
            "save it as a model file for 'robust-train', 'attack' and 'certify'. Defaults are the paper's\n"
            "(SGD lr 0.01 -> 0.001 at epoch 55, momentum 0.9, batch 128, 80 epochs). Re-running the same\n"
            "command resumes from the checkpoint in <out>_run/."),
        epilog=(
            "examples:\n"
            "  snn-robust train --dataset mnist --arch fc --out runs/fc.pt\n"
            "  snn-robust train --dataset mnist --arch fc --epochs 2 --train-samples 10000 \\\n"
            "      --optimizer adam --lr 1e-3 --out runs/fc-quick.pt      # a few minutes on a CPU\n"
            "  snn-robust --device cuda train --dataset nmnist --arch conv --out runs/nmnist-conv.pt"))
    p.add_argument("--dataset", required=True, choices=DATASETS, help=DATASET_HELP)
    p.add_argument("--arch", required=True, choices=("fc", "conv"),
                   help="fc: X-FC512-FC256-FC10; conv: X-C64K3S2-C128K3S2-FC256-FC10 (Table 1)")
    p.add_argument("--out", required=True, metavar="FILE", help="model file to write, e.g. runs/fc.pt")
    p.add_argument("--epochs", type=positive_int, default=80, help="epochs (default: 80)")
    p.add_argument("--batch-size", type=positive_int, default=128, help="batch size (default: 128)")
    p.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd", help="optimizer (default: sgd, momentum 0.9)")
    p.add_argument("--lr", type=positive_float, default=0.01, help="learning rate (default: 0.01)")
    p.add_argument("--lr-milestones", type=nonnegative_float, nargs="*", default=[55], metavar="EPOCH",
                   help="epochs at which lr is divided by 10, fractional ones allowed (default: 55)")
    p.add_argument("--train-samples", type=positive_int, default=None, metavar="N",
                   help="train on a stratified subset of N samples (default: all)")
    add_run_options(p)
    p.set_defaults(handler=_cmd_train)


def add_robust_train(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "robust-train", help="certified (S-IBP / S-CROWN) robust training from a trained model",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Continue training a model file with the paper's robust loss 0.4 * CE(clean) + 0.6 * CE(-[0, lb]),\n"
            "lb the certified margin lower bounds at an eps ramped linearly from 0 (l_inf on images,\n"
            "l_0 share of spike elements on N-MNIST). --settings paper: SGD lr 5e-4, clip 0.25, CROWN-IBP,\n"
            "ramp 250 + hold 50 epochs. --settings quick: IBP bound, Adam lr 1e-3 (a tenth of it for the last\n"
            "quarter), ramp 0.5 + hold 2.5 epochs (measured to show the effect within minutes on a CPU).\n"
            "Re-running resumes."),
        epilog=(
            "examples:\n"
            "  snn-robust robust-train --model runs/fc.pt --eps 0.12 --out runs/fc-robust.pt\n"
            "  snn-robust robust-train --model runs/fc-quick.pt --eps 0.12 --settings quick \\\n"
            "      --train-samples 10000 --epochs 2 --out runs/fc-quick-robust.pt\n"
            "  snn-robust robust-train --model runs/nmnist-fc.pt --eps 0.005 --tprime 3 --out runs/nmnist-fc-robust.pt\n\n"
            + methods_listing()))
    p.add_argument("--model", required=True, metavar="FILE", help="model file from 'snn-robust train'")
    p.add_argument("--eps", required=True, type=eps_type, help="final training eps in [0, 1] (paper MNIST: 0.12)")
    p.add_argument("--out", required=True, metavar="FILE", help="model file to write")
    p.add_argument("--settings", choices=("paper", "quick"), default="paper", help="training settings (default: paper)")
    p.add_argument("--tprime", type=positive_int, default=None, metavar="T'",
                   help="time steps of the training bounds (default: 3 for paper, 5 for quick)")
    p.add_argument("--method", choices=METHODS, default=None, metavar="METHOD",
                   help="training bound: %(choices)s (default: crown-ibp for paper, ibp for quick)")
    p.add_argument("--epochs", type=positive_int, default=None, help="epochs (default: ramp + hold)")
    p.add_argument("--ramp-epochs", type=nonnegative_float, default=None, help="epochs over which eps ramps up from 0")
    p.add_argument("--hold-epochs", type=nonnegative_float, default=None, help="epochs at the final eps")
    p.add_argument("--lr", type=positive_float, default=None, help="learning rate (default: per --settings)")
    p.add_argument("--batch-size", type=positive_int, default=None, help="batch size (default: 128)")
    p.add_argument("--train-samples", type=positive_int, default=None, metavar="N",
                   help="train on a stratified subset of N samples (default: all)")
    add_run_options(p)
    p.set_defaults(handler=_cmd_robust_train)

