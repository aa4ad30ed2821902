"""Our bounds against the paper authors' bound code, on the same weights and input bounds.

The authors' public code is ``liangling76/certify_snn`` on GitHub. Its bound computation
(files ``snn_bound_layers.py``: ``BoundLinear`` / ``BoundConv2d.snn_bound`` and
``snn_bound_back``, ``BoundMemUpdate.snn_bound``, ``_fire_bound_backward``,
``_temporal_bound_backward3``, ``snn_bound_back``, ``BoundLast``; and ``snn_model.py``:
``MNIST_FC`` / ``MNIST_CONV``, ``snn_bound``, ``snn_crown_ibp``, ``_get_bound``) is
**ported** below (:func:`authors_bounds`): rewritten here, step for step the same
arithmetic, on plain tensors instead of their module classes (method.md: read their code,
never copy it). Their models are the paper's MNIST FC (784-512-256-10) and CONV
(C64K3S2P1-C128K3S2P1-FC256-FC10) with biases, LIF ``alpha = th = 0.25``, hard reset,
``>`` firing; both are rebuilt here in snnTorch (``snn.Leaky(beta=0.25, threshold=0.25,
reset_mechanism="zero")``) and converted with ``snn_robust.from_snntorch`` for our bounds.

Their trained weights are not available as text (the repository's ``ckpt/*.pth.tar`` are
binary and out of reach here), so the weights are ours, briefly trained: a model file of
ours (``--weights``, the paper architecture) or a natural training of ``--train-steps``
Adam steps run here (cached under ``runs/authors-compare/``).

Both sides see the same sampled input bounds (``DigitalLinf(eps).bounds``, seed 0:
``x^u_t = (x + eps) > rand_t``, ``x^l_t = (x - eps) > rand_t``, their rule) on the first
``--n`` MNIST test images with their true labels. A sample is verified when every margin
lower bound is ``> 0``; their own test counts ``>= 0`` (``(crown_l < 0).any``), reported as
``verified_ge0`` for their methods. "Their best" is the elementwise maximum of their two
bounds (``crown_l``, ``ibp_l``). At eps 0 the largest distance to the true margins of
the snnTorch forward on the same spike input is reported for every method.

    python benchmarks/authors_compare.py --arch fc --weights runs/h4/mnist-fc-quick-2/natural/model.pt --eps 0 0.002 --n 64
    python benchmarks/authors_compare.py --arch conv --train-steps 300 --eps 0 0.0005 --n 64
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import snn_robust as sr
from snn_robust.bounds.api import margin_spec

ALPHA = TH = 0.25  # their snn_fire.py: alpha, m_th


# ---------------------------------------------------------------------------- the models
def snntorch_model(arch: str) -> nn.Sequential:
    """Their ``MNIST_FC`` / ``MNIST_CONV`` written as an snnTorch ``nn.Sequential``; the
    layer indices match ``snn_robust.models.paper_model`` (so our model files load)."""
    import snntorch as snn

    def lif(output: bool = False) -> nn.Module:
        return snn.Leaky(beta=ALPHA, threshold=TH, reset_mechanism="zero", init_hidden=True, output=output)

    if arch == "fc":
        layers = [nn.Flatten(), nn.Linear(784, 512), lif(), nn.Linear(512, 256), lif(), nn.Linear(256, 10), lif(True)]
    elif arch == "conv":
        layers = [
            nn.Conv2d(1, 64, 3, 2, 1), lif(), nn.Conv2d(64, 128, 3, 2, 1), lif(), nn.Flatten(),
            nn.Linear(7 * 7 * 128, 256), lif(), nn.Linear(256, 10), lif(True),
        ]
    else:
        raise ValueError(f"arch must be 'fc' or 'conv', got {arch!r}")
    return nn.Sequential(*layers)


def _load_ours(model: nn.Sequential, path: str) -> None:
    """Weights from a model file of ours (``layers.<i>.weight``/``bias`` of the paper model)."""
    from snn_robust.fileio import read_checked

    content, _ = read_checked(path)
    state = content["state_dict"]
    weights = {k[len("layers."):]: v for k, v in state.items() if k.endswith((".weight", ".bias"))}
    model.load_state_dict(weights, strict=False)
    missing = [k for k, _ in model.named_parameters() if k not in weights]
    if missing:
        raise ValueError(f"{path} has no weights for {missing}: not a paper {('fc', 'conv')} model file")


def _train(net: sr.SpikingNetwork, images: Tensor, labels: Tensor, steps: int, seed: int = 0) -> None:
    """Brief natural training (Adam 1e-3, batch 64, T = 10 Bernoulli coding, cross-entropy
    on the output rates scaled by 5, as our recipes' clean loss)."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    for i in range(steps):
        idx = torch.randint(0, images.shape[0], (64,), generator=gen)
        rates = net(sr.bernoulli_encode(images[idx], 10, gen))
        loss = F.cross_entropy(5 * rates, labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if (i + 1) % 50 == 0:
            print(json.dumps({"train_step": i + 1, "loss": round(loss.item(), 4)}), flush=True)


# --------------------------------------------------------- port of the authors' bounds
def _stages(model: nn.Sequential) -> list[nn.Module]:
    """The spatial layers, one per LIF layer (their ``opts_lst``); Flatten is a reshape."""
    return [m for m in model if isinstance(m, (nn.Linear, nn.Conv2d))]


def _spatial_ibp(op: nn.Module, s_U: Tensor, s_L: Tensor) -> tuple[Tensor, Tensor]:
    """``BoundLinear`` / ``BoundConv2d.snn_bound``: the centre from the lower spikes, the
    unstable inputs (``(s_U + s_L) % 2``) through the positive / negative weights."""
    pos_w, neg_w = op.weight.clamp(min=0), op.weight.clamp(max=0)
    s_xor = (s_U + s_L) % 2
    if isinstance(op, nn.Linear):
        m_fix = torch.addmm(op.bias, s_L, op.weight.t())
        return m_fix + torch.mm(s_xor, pos_w.t()), m_fix + torch.mm(s_xor, neg_w.t())
    conv = lambda x, w, b: F.conv2d(x, w, b, op.stride, op.padding, op.dilation, op.groups)  # noqa: E731
    m_fix = conv(s_L, op.weight, op.bias)
    return m_fix + conv(s_xor, pos_w, None), m_fix + conv(s_xor, neg_w, None)


def _spatial_back(op: nn.Module, A: Tensor, in_shape: tuple[int, ...]) -> tuple[Tensor, Tensor]:
    """``snn_bound_back`` of a spatial layer: ``A`` ``[B, S, out...]`` -> on the input, and
    ``A . b``; a convolution by ``conv_transpose2d`` with their output padding."""
    if isinstance(op, nn.Linear):
        return A.matmul(op.weight), A.matmul(op.bias)
    B, S = A.shape[:2]
    out_h, out_w = A.shape[-2:]
    k_h, k_w = op.weight.shape[2:]
    pad0 = in_shape[1] - (out_h - 1) * op.stride[0] + 2 * op.padding[0] - k_h
    pad1 = in_shape[2] - (out_w - 1) * op.stride[1] + 2 * op.padding[1] - k_w
    back = F.conv_transpose2d(
        A.reshape(B * S, *A.shape[2:]), op.weight, None, stride=op.stride, padding=op.padding,
        dilation=op.dilation, groups=op.groups, output_padding=(pad0, pad1),
    )
    return back.reshape(B, S, *back.shape[1:]), (A.sum((3, 4)) * op.bias).sum(2)


def _fire(m: Tensor) -> Tensor:
    return (m > TH).to(m.dtype)  # their fire_func: input.gt(m_th).float()


def _fire_back(A: Tensor, m_U: Tensor, m_L: Tensor, s_U: Tensor, s_L: Tensor) -> tuple[Tensor, Tensor]:
    """``_fire_bound_backward``: constants for stable neurons; for unstable ones the lower
    line ``(m - th)/(m_U - th)`` with ``s <= 1`` if ``m_U - th >= th - m_L``, else ``s >= 0``
    with the upper line ``(m - m_L)/(th - m_L)``."""
    upper_d, upper_b = torch.zeros_like(m_U), torch.ones_like(m_U)
    lower_d, lower_b = torch.zeros_like(m_U), torch.zeros_like(m_U)
    lower_b[s_L == 1] = 1
    upper_b[s_U == 0] = 0
    unstable = (s_U == 1) & (s_L == 0)
    use_lower = unstable & ((m_U - TH) >= (TH - m_L))
    use_upper = unstable & ((m_U - TH) < (TH - m_L))
    lower_d[use_lower] = 1 / (m_U[use_lower] - TH)
    lower_b[use_lower] = (lower_d * -TH)[use_lower]
    upper_d[use_upper] = 1 / (TH - m_L[use_upper])
    upper_b[use_upper] = (upper_d * -m_L)[use_upper]
    B, S = A.shape[:2]
    pos, neg = A.clamp(min=0), A.clamp(max=0)
    A_m = upper_d.unsqueeze(1) * neg + lower_d.unsqueeze(1) * pos
    bias = (neg.reshape(B, S, -1) @ upper_b.reshape(B, -1, 1) + pos.reshape(B, S, -1) @ lower_b.reshape(B, -1, 1))
    return A_m, bias.squeeze(-1)


def authors_bounds(model: nn.Sequential, s_U: Tensor, s_L: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """``snn_crown_ibp``: ``(crown_L, ibp_L)``, each ``[B, 9]``, for spike-input bounds
    ``[T', B, 1, 28, 28]`` (their ``snn_bound`` after the sampling)."""
    T = s_U.shape[0]
    ops = _stages(model)
    # forward: BoundMemUpdate.snn_bound, per layer and step
    saved = []  # per layer: (m_U, m_L, s_U, s_L) lists over t, and the op's input shape
    x_U, x_L = list(s_U), list(s_L)
    for op in ops:
        if isinstance(op, nn.Linear):  # their BoundFlatten before the first / an FC layer
            x_U, x_L = [x.reshape(x.shape[0], -1) for x in x_U], [x.reshape(x.shape[0], -1) for x in x_L]
        in_shape = tuple(x_U[0].shape[1:])
        m_U, m_L, o_U, o_L = [], [], [], []
        for t in range(T):
            u, l = _spatial_ibp(op, x_U[t], x_L[t])
            if t > 0:
                tmp_U, tmp_L = torch.zeros_like(u), torch.zeros_like(l)
                silent = o_U[t - 1] == 0
                tmp_U[silent], tmp_L[silent] = m_U[t - 1][silent], m_L[t - 1][silent]
                unstable = (o_U[t - 1] == 1) & (o_L[t - 1] == 0)
                tmp_U[unstable] = TH
                neg = unstable & (m_L[t - 1] < 0)
                tmp_L[neg] = m_L[t - 1][neg]
                u, l = u + tmp_U * ALPHA, l + tmp_L * ALPHA
            m_U.append(u)
            m_L.append(l)
            o_U.append(_fire(u))
            o_L.append(_fire(l))
        saved.append((m_U, m_L, o_U, o_L, in_shape))
        x_U, x_L = o_U, o_L
    # BoundLast.bound: the margin specification on the mean output spikes
    r_U, r_L = torch.stack(x_U).mean(0), torch.stack(x_L).mean(0)
    B, C = r_U.shape
    eye = torch.eye(C, dtype=r_U.dtype)
    spec = eye[labels].unsqueeze(1) - eye.unsqueeze(0)
    keep = labels.unsqueeze(1) != torch.arange(C).unsqueeze(0)
    spec = spec[keep].reshape(B, C - 1, C)
    mid, diff = (r_U + r_L) / 2, (r_U - r_L) / 2
    ibp_L = (spec @ mid.unsqueeze(-1)).squeeze(-1) - (spec.abs() @ diff.unsqueeze(-1)).squeeze(-1)

    # backward: BoundLast.bound_back, then snn_bound_back per layer
    A = [spec / T for _ in range(T)]
    bias = r_U.new_zeros(B, C - 1)
    for op, (m_U, m_L, o_U, o_L, in_shape) in zip(reversed(ops), reversed(saved)):
        A = [a.reshape(B, C - 1, *m_U[0].shape[1:]) for a in A]
        A_m: list = [0] * T
        A_in: list = [None] * T
        for t in reversed(range(T)):
            fp_m, fp_b = _fire_back(A[t], m_U[t], m_L[t], o_U[t], o_L[t])
            A_m[t] = A_m[t] + fp_m
            bias = bias + fp_b
            if t > 0:
                tmp = ALPHA * A_m[t]  # alpha * m * (1 - s): backward onto m and (1 - s) of t - 1
                x_U_, x_L_ = 1 - o_L[t - 1], 1 - o_U[t - 1]  # bounds of 1 - s
                A_m[t - 1] = A_m[t - 1] + x_L_.unsqueeze(1) * tmp
                unstable = ((x_U_ == 1) & (x_L_ == 0)).unsqueeze(1)
                coef_x = torch.where(unstable, m_L[t - 1].unsqueeze(1) * tmp.clamp(min=0) + TH * tmp.clamp(max=0), 0.0)
                bias = bias + coef_x.reshape(B, C - 1, -1).sum(-1)  # the 1 of (1 - s)
                A[t - 1] = A[t - 1] - coef_x  # the -s of (1 - s)
            A_in[t], b = _spatial_back(op, A_m[t], in_shape)
            bias = bias + b
        A = A_in
    # _get_bound at the input spikes, summed over the steps
    crown_L = bias
    for t in range(T):
        a = A[t].reshape(B, C - 1, -1)
        u, l = s_U[t].reshape(B, -1, 1), s_L[t].reshape(B, -1, 1)
        crown_L = crown_L + (a @ ((u + l) / 2) - a.abs() @ ((u - l) / 2)).squeeze(-1)
    return crown_L, ibp_L


# ------------------------------------------------------------------------------- main
def _true_margins(model: nn.Sequential, spikes: Tensor, labels: Tensor) -> Tensor:
    """Margins ``rate[y] - rate[j]`` of the snnTorch forward (step by step) on ``spikes``."""
    import snntorch.utils

    snntorch.utils.reset(model)
    out = []
    for t in range(spikes.shape[0]):
        spk, _ = model(spikes[t])
        out.append(spk)
    rates = torch.stack(out).mean(0)
    return (margin_spec(labels, rates.shape[1]) * rates.unsqueeze(1)).sum(-1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", choices=("fc", "conv"), required=True)
    parser.add_argument("--weights", default=None, help="a model file of ours with the paper architecture")
    parser.add_argument("--train-steps", type=int, default=0, help="else: brief natural training here")
    parser.add_argument("--eps", type=float, nargs="+", default=[0.0, 0.0005, 0.002])
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--steps", type=int, default=3, help="T' of the bounds")
    parser.add_argument("--methods", nargs="+", default=["ibp", "crown-ibp", "crown-ibp-paper", "best"], choices=sr.METHODS)
    parser.add_argument("--data-root", default="data")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from snn_robust.data import mnist

    torch.manual_seed(0)
    model = snntorch_model(args.arch)
    net = sr.from_snntorch(model)
    if args.weights:
        _load_ours(model, args.weights)
        source = args.weights
    elif args.train_steps:
        cache = Path("runs/authors-compare") / f"{args.arch}-natural-{args.train_steps}.pt"
        if cache.is_file():
            model.load_state_dict(torch.load(cache, weights_only=True))
        else:
            images, labels = mnist(args.data_root, train=True).tensors()
            t0 = time.perf_counter()
            _train(net, images, labels, args.train_steps)
            print(json.dumps({"trained_seconds": round(time.perf_counter() - t0, 1)}), flush=True)
            cache.parent.mkdir(parents=True, exist_ok=True)
            torch.save(model.state_dict(), cache)
        source = str(cache)
    else:
        source = "random (seed 0)"
    test_x, test_y = mnist(args.data_root, train=False).tensors()
    x, y = test_x[: args.n], test_y[: args.n]
    with torch.no_grad():
        clean = net(sr.bernoulli_encode(x, 10, torch.Generator().manual_seed(1))).argmax(1)
    print(json.dumps({"arch": args.arch, "weights": source, "n": args.n, "steps": args.steps,
                      "clean_accuracy_T10": round((clean == y).float().mean().item(), 4)}), flush=True)
    for eps in args.eps:
        lower, upper = sr.DigitalLinf(eps).bounds(x, args.steps, torch.Generator().manual_seed(0))
        with torch.no_grad():
            true = _true_margins(model, lower, y) if eps == 0 else None
            found = {}
            t0 = time.perf_counter()
            crown_L, ibp_L = authors_bounds(model, upper, lower, y)
            seconds = time.perf_counter() - t0
            found["theirs: S-IBP"] = (ibp_L, seconds)
            found["theirs: S-CROWN"] = (crown_L, seconds)
            found["theirs: best"] = (torch.maximum(crown_L, ibp_L), seconds)
            for method in args.methods:
                t0 = time.perf_counter()
                lb = sr.compute_bounds(net, lower, upper, y, method=method)
                found[method] = (lb, time.perf_counter() - t0)
        for name, (lb, seconds) in found.items():
            row = {"arch": args.arch, "eps": eps, "method": name, "n": args.n,
                   "verified": int((lb > 0).all(1).sum()), "mean_margin_lb": round(lb.mean().item(), 4),
                   "seconds": round(seconds, 2)}
            if name.startswith("theirs"):
                row["verified_ge0"] = int((lb >= 0).all(1).sum())
            if true is not None:
                row["max_gap_to_forward"] = float((lb - true).abs().max())
                row["above_true"] = int((lb > true + 1e-6).sum())
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
