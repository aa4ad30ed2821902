"""results.json, results.md and the plots of a recipe run (matplotlib, Agg backend).

Plots (PNG, in the run folder):

* ``training_curves.png`` (Figure 5): clean accuracy, bound loss, robust (unverified) error and
  eps during robust training, from ``fit``'s ``steps.jsonl`` (training batches).
* ``attack_vs_eps.png``: attack error against eps, natural vs robust model, one panel per
  attack; the paper's Table 2 numbers as open markers.
* ``tprime_sweep.png`` (Figure 4, ``tprime-sweep`` only): clean accuracy and bound loss during
  robust training per T', and time per epoch.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from snn_robust.fileio import atomic_write_text, read_jsonl, write_json

__all__ = ["PLOTS", "write_report"]

#: Plot files per recipe kind.
PLOTS = {"table": ("training_curves.png", "attack_vs_eps.png"), "tprime": ("tprime_sweep.png",)}


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def _pm(r: dict[str, Any]) -> str:
    s = _pct(r["error"])
    if len(r.get("per_seed", [])) > 1:
        s += f" ± {100 * r['std']:.1f}"
    return s


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# -- markdown ------------------------------------------------------------------------------
def _header(results: dict[str, Any]) -> list[str]:
    cfg, hw = results["config"], results["hardware"]
    env = results["environment"]
    lines = [
        f"# Recipe `{results['recipe']}`, profile `{results['profile']}`",
        "",
        f"- Model: paper `{cfg['arch'].upper()}` on {cfg['recipe']['dataset']}, coding "
        f"{cfg['recipe']['coding']}, training perturbation `{cfg['perturbation']}`, seed {cfg['seed']}",
        f"- Hardware: {hw['cpu']} ({hw['cpu_count']} CPUs, {hw['torch_threads']} torch threads), "
        f"device {hw['device']}" + (f", GPU {hw['gpu']}" if hw.get("gpu") else ""),
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in env.items()),
        f"- Wall time of all stages: {results['wall_s']['all_stages']:.0f} s "
        f"(this invocation: {results['wall_s']['this_invocation']:.0f} s)",
        "",
        "Reductions against the paper's settings:",
        "",
    ]
    lines += [f"- {r}" for r in cfg["profile"]["reductions"]]
    lines += ["", "| stage | wall time (s) | training time over all resumptions (s) | this invocation |",
              "| --- | ---: | ---: | --- |"]
    for name, s in results["stages"].items():
        wall = "–" if s["wall_s"] is None else f"{s['wall_s']:.1f}"
        train = "" if s.get("training_s") is None else f"{s['training_s']:.1f}"
        lines.append(f"| {name} | {wall} | {train} | {s['status']} |")
    return lines + [""]


def _table_md(results: dict[str, Any]) -> list[str]:
    cfg = results["config"]
    recipe = cfg["recipe"]
    paper = results["paper"]
    models = results["models"]
    nat_clean, rob_clean = models["natural"]["clean_error"], models["robust"]["clean_error"]
    n_test = nat_clean["num_samples"]
    lines = [
        "## Table 1: clean accuracy of the natural model",
        "",
        f"| dataset | arch | T | ours (natural, {n_test} test samples) | ours (robust) | paper (Table 1, full test set) |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
        f"| {recipe['dataset']} | {cfg['arch'].upper()} | {cfg['natural_training']['steps']} | "
        f"{100 * (1 - nat_clean['error']):.2f}% ± {100 * nat_clean['std']:.2f} | "
        f"{100 * (1 - rob_clean['error']):.2f}% ± {100 * rob_clean['std']:.2f} | "
        f"{paper['clean_acc_percent']:.2f}% |",
        "",
        f"Mean ± std over seeds {nat_clean['seeds'] or '(deterministic)'} (fresh Bernoulli codings per seed "
        "for images; N-MNIST frames are deterministic).",
        "",
        f"## Table 2: attack error, natural vs robust model (robust training eps {recipe['train_eps']})",
        "",
        "org err: clean error on the same codings; attack err: clean or adversarial input misclassified. "
        "Columns marked *paper* are the paper's Table 2 values (its attack; 300 samples), not ours.",
        "",
    ]
    paper_rows = {row[0]: row for row in paper["table2"]}
    for attack, nat in models["natural"]["attack"].items():
        rob = models["robust"]["attack"][attack]
        role = nat["role"]
        lines += [
            f"### {attack} ({'the paper' + chr(39) + 's attack' if role == 'paper' else 'stronger reference attack'}; "
            f"{nat['attack']['name']}, {nat['attack'].get('n_iter')} iterations)",
            "",
            "| attack eps | eps from | natural org err | natural attack err | robust org err | robust attack err (change) "
            "| paper: natural org / attack err | paper: robust org / attack err (change) |",
            "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for i, e in enumerate(nat["eps"]):
            ne, re = nat["errors"][i], rob["errors"][i]
            delta = 100 * (re["error"] - ne["error"])
            src = nat["sources"][i]
            pr = paper_rows.get(e) if src == "paper" else None
            paper_cols = (f"{pr[1]:.1f}% / {pr[2]:.1f}% | {pr[3]:.1f}% / {pr[4]:.1f}% ({pr[4] - pr[2]:+.1f}%)"
                          if pr else "– | –")
            lines.append(
                f"| {e:.4g} | {src} | {_pm(nat['clean'])} | {_pm(ne)} | {_pm(rob['clean'])} | "
                f"{_pm(re)} ({delta:+.1f}%) | {paper_cols} |")
        lines.append("")
    search = results.get("eps_search", {})
    if search:
        lines += ["eps search on the natural model (bisection; targets 20/30/40/50 %):", ""]
        for attack, s in search.items():
            pairs = ", ".join(f"{e:.4g} → {_pct(v)}" for e, v in zip(s["eps"], s["errors"]))
            lines.append(f"- {attack} ({s['samples']} samples): {pairs}")
        lines.append("")
    lines += [
        f"## Certified (verified) error at eps {recipe['train_eps']} (`{cfg['perturbation']}`)",
        "",
        "Share of test samples NOT verified for the sampled input bounds (Section 3.2: a certificate for "
        "the sampled Bernoulli maps / l_0 picks). `best` = elementwise max of every bound method (IBP, CROWN-IBP, "
        "adaptive and optimised CROWN-IBP; see `snn_robust.METHODS`).",
        "",
    ]
    cert_n, cert_r = models["natural"]["certified"]["methods"], models["robust"]["certified"]["methods"]
    steps = list(next(iter(cert_n.values())).keys())
    lines.append("| method | " + " | ".join(f"natural T'={t} | robust T'={t}" for t in steps) + " |")
    lines.append("| --- | " + " | ".join("---: | ---:" for _ in steps) + " |")
    for method in cert_n:
        lines.append(f"| {method} | " + " | ".join(f"{_pm(cert_n[method][t])} | {_pm(cert_r[method][t])}"
                                                   for t in steps) + " |")
    lines += ["", *_ball_md(models, recipe), "## Plots", "", "![training curves](training_curves.png)", "", "![attack error vs eps](attack_vs_eps.png)", ""]
    return lines


def _ball_md(models: dict[str, Any], recipe: dict[str, Any]) -> list[str]:
    """The stronger certificates (docs/certificates.md) beside the sampled certified error
    of the same method and T'."""
    nat, rob = models["natural"]["ball_certificate"], models["robust"]["ball_certificate"]
    method, steps, n = nat["method"], nat["steps"], nat["samples"]

    def sampled(tag: str, verified: bool = False) -> str:
        r = models[tag]["certified"]["methods"].get(method, {}).get(str(steps))
        if r is None:
            return "–"
        return _pct(1 - r["error"]) if verified else _pm(r)

    if "event_l0" in nat:
        ks = list(nat["event_l0"])
        lines = [
            f"## Certified error over the whole l_0 ball ({method}, T' = {steps}, first {n} test samples)",
            "",
            "Share of samples NOT certified for **every** recording within k added or removed events of the "
            "whole recording (`snn_robust.event_certified_error`): nothing sampled, unlike the sampled picks "
            f"of `SpikeL0({recipe['train_eps']})` above.",
            "",
            "| model | sampled picks | " + " | ".join(f"k = {k}" for k in ks) + " |",
            "| --- | ---: | " + " | ".join("---:" for _ in ks) + " |",
        ]
        for tag, r in (("natural", nat), ("robust", rob)):
            lines.append(f"| {tag} | {sampled(tag)} | " + " | ".join(_pct(r["event_l0"][k]["error"]) for k in ks) + " |")
        return lines + [""]
    lines = [
        f"## Certificate over the coding randomness at eps {recipe['train_eps']} ({method}, T' = {steps}, "
        f"first {n} test samples)",
        "",
        f"Each sample certified under {nat['over_codings']['n_maps']} independent coding maps "
        "(`snn_robust.certify_over_codings`); `p_L`: its one-sided Clopper-Pearson lower bound, at confidence "
        f"{nat['over_codings']['confidence']}, on the probability over the maps that the whole ball is certified.",
        "",
        "Shares certified (not errors): the sampled certificate's (one map per sample), the maps', the mean of `p_L` "
        "and the samples certified under most maps at the confidence.",
        "",
        "| model | sampled: verified (one map) | maps certified | mean `p_L` | samples with `p_L > 1/2` |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for tag, r in (("natural", nat), ("robust", rob)):
        oc = r["over_codings"]
        lines.append(f"| {tag} | {sampled(tag, verified=True)} | {_pct(oc['certified_share'])} | {_pct(oc['mean_lower'])} | "
                     f"{_pct(oc['share_above_half'])} |")
    return lines + [""]


def _tprime_md(results: dict[str, Any]) -> list[str]:
    models = results["models"]
    lines = [
        "## Figure 4: robust training T'",
        "",
        "Every robust model starts from the same natural model. Clean error over seeds; S-CROWN loss "
        "`CE(-[0, lb])` with CROWN-IBP margins at T' = 3 on the test samples; time per epoch of robust training.",
        "",
        "| model | T' | clean error | S-CROWN loss (test, T'=3) | verified by CROWN-IBP (T'=3) | time per epoch (s) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for tag, m in models.items():
        t = m.get("tprime", "–")
        tpe = m.get("time_per_epoch_s")
        lines.append(f"| {tag} | {t} | {_pm(m['clean_error'])} | {m['bound_loss']['loss']:.3f} | "
                     f"{_pct(m['bound_loss']['verified'])} | {'–' if tpe is None else f'{tpe:.1f}'} |")
    return lines + ["", "![T' sweep](tprime_sweep.png)", ""]


# -- plots ---------------------------------------------------------------------------------
def _plot_training(out: Path, path: Path) -> None:
    plt = _plt()
    rows = read_jsonl(out / "robust" / "steps.jsonl") or read_jsonl(out / "robust" / "metrics.jsonl")
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    x = [r["step"] for r in rows]
    panels = [("clean_acc", "clean accuracy (training batches)", 1.0, "accuracy (share of the batch)"),
              ("bound_loss", "bound loss CE(-[0, lb])", None, "loss (nats)"),
              ("verified", "robust (unverified) error", "1-", "error (share of the batch)")]
    for ax, (key, title, kind, ylabel) in zip(axes, panels):
        ys = [r.get(key) for r in rows]
        if kind == "1-":
            ys = [None if v is None else 1 - v for v in ys]
        ax.plot(x, ys, marker=".", color="tab:blue")
        ax.set_title(title)
        ax.set_xlabel("robust training step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    ax2 = axes[2].twinx()
    ax2.plot(x, [r.get("eps") for r in rows], color="tab:gray", linestyle="--", label="eps")
    ax2.set_ylabel("eps (dashed)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_attacks(results: dict[str, Any], path: Path) -> None:
    plt = _plt()
    models = results["models"]
    attacks = list(models["natural"]["attack"])
    fig, axes = plt.subplots(1, len(attacks), figsize=(5.5 * len(attacks), 3.8), squeeze=False)
    for ax, attack in zip(axes[0], attacks):
        for tag, color in (("natural", "tab:red"), ("robust", "tab:blue")):
            r = models[tag]["attack"][attack]
            pts = sorted(zip(r["eps"], [e["error"] for e in r["errors"]], [e["std"] for e in r["errors"]]))
            ax.errorbar([p[0] for p in pts], [100 * p[1] for p in pts], yerr=[100 * p[2] for p in pts],
                        marker="o", color=color, label=f"{tag} (ours)", capsize=2)
        if models["natural"]["attack"][attack]["role"] == "paper" and results.get("paper"):
            rows = results["paper"]["table2"]
            ax.plot([r[0] for r in rows], [r[2] for r in rows], "s", mfc="none", color="tab:red", label="natural (paper)")
            ax.plot([r[0] for r in rows], [r[4] for r in rows], "s", mfc="none", color="tab:blue", label="robust (paper)")
        ax.set_title(attack)
        ax.set_xlabel("attack eps")
        ax.set_ylabel("attack error (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_tprime(results: dict[str, Any], out: Path, path: Path) -> None:
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    tags, times = [], []
    for tag, m in results["models"].items():
        if "tprime" not in m:
            continue
        rows = read_jsonl(out / tag / "steps.jsonl")
        x = [r["step"] for r in rows]
        axes[0].plot(x, [r.get("clean_acc") for r in rows], marker=".", label=f"T'={m['tprime']}")
        axes[1].plot(x, [r.get("bound_loss") for r in rows], marker=".", label=f"T'={m['tprime']}")
        tags.append(f"T'={m['tprime']}")
        times.append(m.get("time_per_epoch_s") or 0.0)
    axes[0].set_title("(a) clean accuracy (training batches)")
    axes[0].set_ylabel("accuracy (share of the batch)")
    axes[1].set_title("(b) bound loss during robust training")
    axes[1].set_ylabel("bound loss (nats)")
    for ax in axes[:2]:
        ax.set_xlabel("robust training step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[2].bar(tags, times, color="tab:green")
    axes[2].set_title("time per robust epoch")
    axes[2].set_ylabel("seconds")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(results: dict[str, Any], out: str | os.PathLike[str]) -> dict[str, Path]:
    """Write ``results.json``, ``results.md`` and the plots of ``results`` into ``out``."""
    out = Path(out)
    kind = results["config"]["recipe"]["kind"]
    files = {"results.json": out / "results.json", "results.md": out / "results.md"}
    write_json(files["results.json"], results)
    if kind == "table":
        _plot_training(out, out / "training_curves.png")
        _plot_attacks(results, out / "attack_vs_eps.png")
        body = _table_md(results)
    else:
        _plot_tprime(results, out, out / "tprime_sweep.png")
        body = _tprime_md(results)
    for name in PLOTS[kind]:
        files[name] = out / name
    atomic_write_text(files["results.md"], "\n".join(_header(results) + body) + "\n")
    return files
