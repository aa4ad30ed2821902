"""``snn-robust attack`` and ``certify``: attack error and certified error of a model file."""
from __future__ import annotations

import argparse
from typing import Any

from ..names import METHODS
from .common import (UsageError, add_run_options, confidence, data_root, eps_type, load_model_arg, methods_listing,
                     positive_int, print_json, resolve_device, seed_everything, writable_file)

def _cmd_attack(args: argparse.Namespace) -> int:
    from ..datasets import attack_errors, attack_names, load_test_set

    json_out = writable_file(args.json, "--json", "results.json") if args.json is not None else None
    device = resolve_device(args.device)
    seed_everything(args.seed)
    net, info = load_model_arg(args.model, device)
    names = list(attack_names(info["dataset"]))
    attack = {"paper": names[0], "reference": names[1]}.get(args.attack, args.attack)
    if attack not in names:
        raise UsageError(f"--attack {args.attack} does not apply to {info['dataset']}; use one of paper, reference, {', '.join(names)}")
    test = load_test_set(info["dataset"], args.samples, data_root(args), args.verify_data)
    res = attack_errors(net, test, attack, list(args.eps), dataset=info["dataset"], arch=info["arch"], iters=args.iters,
                        eot_samples=args.eot_samples, seeds=tuple(args.seed + i for i in range(args.seeds)),
                        batch_size=100, progress=not args.quiet)
    print(f"{attack} on {args.model} ({info['arch']}, {info['dataset']}), {len(test[1])} test samples: "
          f"clean error {100 * res['clean']['error']:.1f}%")
    for e, r in zip(res["eps"], res["errors"]):
        print(f"  eps {e:<8g} attack error {100 * r['error']:.1f}% (std {100 * r['std']:.1f} over {len(r['per_seed'])} seeds)")
    print_json(res, json_out)
    return 0


def _cmd_certify(args: argparse.Namespace) -> int:
    from ..evaluate import certified_error, clean_error
    from ..datasets import dataset_spec, load_test_set, perturbation_for

    json_out = writable_file(args.json, "--json", "results.json") if args.json is not None else None
    device = resolve_device(args.device)
    seed_everything(args.seed)
    net, info = load_model_arg(args.model, device)
    _check_beyond_sampling(args, info)
    test = load_test_set(info["dataset"], args.samples, data_root(args), args.verify_data)
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
    print_json(out, json_out)
    return 0


# certificates beyond the sampled maps / picks (snn_robust.certificates): --codings, --flips
def _check_beyond_sampling(args: argparse.Namespace, info: dict[str, Any]) -> None:
    events = info["dataset"] == "nmnist"
    if args.codings and events:
        raise UsageError("--codings applies to rate-coded images; for N-MNIST use --flips K")
    if args.flips and not events:
        raise UsageError("--flips applies to event data (N-MNIST); for images use --codings N")


def _certify_beyond_sampling(args: argparse.Namespace, net: Any, info: dict[str, Any], test: Any, out: dict[str, Any]) -> None:
    from ..certificates import coding_certificate_summary, event_certified_error
    from ..datasets import perturbation_for

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


def add_attack(subparsers: Any) -> None:
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
    p.add_argument("--eps", required=True, type=eps_type, nargs="+",
                   help="attack budgets in [0, 1]: l_inf radius on images, share of changed spike elements on N-MNIST")
    p.add_argument("--attack", default="paper",
                   help="paper (default), reference, or a name: spike-compatible, eot-pgd, greedy-flip")
    p.add_argument("--samples", type=positive_int, default=300, help="test samples (default: 300, as the paper)")
    p.add_argument("--iters", type=positive_int, default=20, help="attack iterations (default: 20)")
    p.add_argument("--eot-samples", type=positive_int, default=4, help="EOT-PGD codings per step (default: 4)")
    p.add_argument("--seeds", type=positive_int, default=3, help="number of seeds to average over (default: 3)")
    p.add_argument("--json", metavar="FILE", default=None, help="also write the full results as JSON")
    add_run_options(p)
    p.set_defaults(handler=_cmd_attack)


def add_certify(subparsers: Any) -> None:
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
            + methods_listing()))
    p.add_argument("--model", required=True, metavar="FILE", help="model file from 'train' or 'robust-train'")
    p.add_argument("--eps", required=True, type=eps_type, nargs="+", help="perturbation budgets in [0, 1]")
    p.add_argument("--method", nargs="+", choices=METHODS, default=["best"], metavar="METHOD",
                   help="bound methods: %(choices)s (default: best = the tightest of all)")
    p.add_argument("--tprime", type=positive_int, nargs="+", default=[10], metavar="T'",
                   help="time steps of the bounds (default: 10)")
    p.add_argument("--samples", type=positive_int, default=300, help="test samples (default: 300)")
    p.add_argument("--seeds", type=positive_int, default=3, help="number of seeds to average over (default: 3)")
    p.add_argument("--json", metavar="FILE", default=None, help="also write the full results as JSON")
    p.add_argument("--codings", type=positive_int, default=None, metavar="N",
                   help="images: also bound, per sample, the probability over coding maps that the whole eps-ball is "
                        "certified (N maps per sample, Clopper-Pearson)")
    p.add_argument("--confidence", type=confidence, default=0.99, help="confidence of --codings (default: 0.99)")
    p.add_argument("--flips", type=positive_int, nargs="+", default=None, metavar="K",
                   help="N-MNIST: also certify every recording within K added/removed events (no sampling)")
    p.add_argument("--per-step", action="store_true", help="with --flips: K flips in each frame, not in the recording")
    add_run_options(p)
    p.set_defaults(handler=_cmd_certify)

