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
from snn_robust.bounds.api import _ibp_spec_lower, margin_spec
from snn_robust.bounds.ibp import s_ibp
from snn_robust.bounds.rounding import round_to_grid
from snn_robust.loss import bound_logits
from snn_robust.neuron import Rectangular
from snn_robust.training import EpochBatchSampler
from snn_robust.training.config import milestone_steps, step_factor
from snn_robust.recipes.pipeline import load_model, load_test_set, load_train_set, save_model

#: Variant keys that are not TrainConfig fields: prototypes of new training options, run by
#: :func:`custom_fit` (the same batches, coding stream and constant Adam lr as ``fit``) with
#: :class:`PrototypeStep` instead of ``RobustTrainingStep``.
#:
#: - ``reg_unstable``: weight of the unstable-neuron regulariser, the LIF analogue of Shi et
#:   al. 2021's tightness term: the mean over every stage, bound step, sample and neuron of
#:   ``relu(min(m^u - th, th - m^l)) / th``, the (relative) distance by which a membrane
#:   interval straddling the threshold must shrink to become stable (0 for stable neurons).
#:   Its gradient reaches the membrane bounds directly, also where the surrogate window of
#:   the S-IBP spike bound is empty.
#: - ``reg_decay``: the regulariser's weight falls linearly to 0 along the eps ramp (Shi et
#:   al. use theirs during the warm-up only).
#: - ``beta_start``: CROWN-IBP's mix, margins ``beta * crown-ibp + (1 - beta) * ibp`` with
#:   beta falling linearly from ``beta_start`` to 0 along the eps ramp (Zhang et al. 2020).
#: - ``hinge``: the bound loss is ``mean_j relu(hinge - lb_j)`` summed over classes instead of the
#:   cross-entropy on ``-[0, lb]`` (only unverified margins push).
#: - ``lr_decay_frac``: lr x 0.1 over the last fraction of the steps.
#: - ``reg_hidden``: the unstable-neuron regulariser on the hidden stages only (on the output
#:   stage it pushes a straddling label neuron towards silence as readily as towards firing).
#: - ``out_margin``: weight of a hinge on the output stage's membrane bounds, per bound step:
#:   ``(relu(th - m^l_y) + mean_{j != y} relu(m^u_j - th)) / th``: the label neuron surely
#:   firing and every other surely silent is a certificate with margin 1; unlike the S-IBP
#:   spike bound, the hinge has a gradient however far the membranes lie from the threshold.
#: - ``bound_surrogate``: ``(half_width, height)`` of the rectangular surrogate used in the
#:   bound pass only (the neuron's own, half-width 0.5, gives no gradient to a membrane bound
#:   more than 0.5 from the threshold).
#: - ``adv_weight``: weight of an adversarial loss, the clean loss on an EOT-PGD example found
#:   at ``adv_eps_factor`` times this step's eps (``adv_iter`` iterations, ``adv_samples``
#:   codings per iteration, its own random stream): the convex combination of an adversarial
#:   and a bound loss of De Palma et al. 2023 (MTL-IBP), beside the clean loss.
#: - ``ema_decay``: the model returned is an exponential moving average of the weights
#:   (Polyak averaging, as in adversarial training: Gowal et al. 2020), taken from the end of
#:   the eps ramp on, ``avg <- d * avg + (1 - d) * w`` after every step (warm-up
#:   ``d_k = min(d, (1 + k) / (10 + k))``, k counted from the start of the average).
CUSTOM_KEYS = ("reg_unstable", "reg_decay", "beta_start", "hinge", "lr_decay_frac", "reg_hidden", "out_margin",
               "bound_surrogate", "adv_weight", "adv_iter", "adv_eps_factor", "adv_samples", "ema_decay")
#: keys custom_fit handles itself (not PrototypeStep options)
LOOP_KEYS = ("lr_decay_frac", "ema_decay")

#: Variant name -> TrainConfig.quick_robust overrides (on top of "epochs" / ramp / hold given
#: on the command line).
VARIANTS: dict[str, dict[str, Any]] = {
    "base": dict(),  # TrainConfig.quick_robust as it is (since session 3: T' = 5 and unstable_weight 0.1)
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
    # prototypes (CUSTOM_KEYS), on top of quick_robust's constant Adam lr and S-IBP bound
    "proto-base": dict(reg_unstable=0.0),  # custom_fit's control: must match "base"
    "reg0.03": dict(reg_unstable=0.03),
    "reg0.1": dict(reg_unstable=0.1),
    "reg0.3": dict(reg_unstable=0.3),
    "reg1": dict(reg_unstable=1.0),
    "reg1-decay": dict(reg_unstable=1.0, reg_decay=True),
    "beta1": dict(beta_start=1.0),
    "hinge": dict(hinge=1 / 3),
    "lrdecay": dict(lr_decay_frac=0.25),
    "bs64": dict(batch_size=64),
    "noclip": dict(clip_norm=None),
    "w.6": dict(clean_weight=0.6, bound_weight=0.4),
    "lr2e-3": dict(lr=2e-3),
    "reg-h1": dict(reg_unstable=1.0, reg_hidden=True),
    "outm0.3": dict(out_margin=0.3),
    "outm1": dict(out_margin=1.0),
    "outm0.1": dict(out_margin=0.1),
    "sw2": dict(bound_surrogate=(2.0, 0.25)),
    "sw2-h1": dict(bound_surrogate=(2.0, 1.0)),
    # T' of the training bound pass (certificates still measured at T' = 3, and at the training T')
    "tp1": dict(bound_steps=1),
    "tp5": dict(bound_steps=5),
    "tp8": dict(bound_steps=8),
    # from scratch (SCRATCH_KEYS): re-initialise, natural warm-up, then the same robust phase
    "scratch-ibp": dict(init="ibp", warmup_natural_epochs=1),
    "scratch-default": dict(init="default", warmup_natural_epochs=1),
    "scratch-ibp-tp5": dict(init="ibp", warmup_natural_epochs=1, bound_steps=5),
}

#: quick_robust's defaults before session 3 (T' = 3, no regulariser): every variant above
#: was measured on top of them (docs/results.md sections 4-7b) and keeps them.
SESSION2_DEFAULTS: dict[str, Any] = dict(bound_steps=3, unstable_weight=0.0)
VARIANTS = {name: ({**SESSION2_DEFAULTS, **over} if name != "base" else over) for name, over in VARIANTS.items()}
VARIANTS.update({
    "s2-default": dict(SESSION2_DEFAULTS),  # the quick profile's robust phase of sessions 1-2 (section 5's)
    # session 3: the levers combined (T' = 5 in training + the prototype regulariser at 0.1; the library's
    # TrainConfig.unstable_weight 0.1 trains to the same bits), and ideas on top
    "tp5-reg0.1": dict(bound_steps=5, reg_unstable=0.1, unstable_weight=0.0),
    "tp5-reg0.1-w.6": dict(bound_steps=5, reg_unstable=0.1, unstable_weight=0.0, clean_weight=0.6, bound_weight=0.4),
    "tp5-reg0.1-lr2e-3": dict(bound_steps=5, reg_unstable=0.1, unstable_weight=0.0, lr=2e-3),
    # on top of the session-3 default (library regulariser): the certified weight ramps from 0.6 to 1.0
    # along the eps ramp (the clean weight from 0.4 to 0; RobustTrainingStep's kappa schedule)
    "cw-ramp1": dict(clean_weight=0.0, bound_weight=1.0, clean_weight_start=0.4),
    # session 5: the differences between the quick profile's loop and the simpler loop of the user
    # guide's half/half example (docs/results.md section 12), one at a time and together; the
    # ramp variants assume --epochs 2 (ramp over the whole robust budget, no hold)
    "base-half": dict(clean_weight=0.5, bound_weight=0.5),
    "base-noclip": dict(clip_norm=None),
    "base-fullramp": dict(ramp_epochs=2.0, hold_epochs=0.0),
    "base-tfac1.33": dict(train_eps_factor=4 / 3),  # train at 0.16, certify at 0.12 (ANN practice)
    "base-reg0.3": dict(unstable_weight=0.3),
    "base-half-noclip-fullramp": dict(clean_weight=0.5, bound_weight=0.5, clip_norm=None, ramp_epochs=2.0, hold_epochs=0.0),
})
#: session 6: an adversarial loss beside the bound loss (MTL-IBP, De Palma et al. 2023), on top of
#: the session-3 default written as its prototype (T' = 5, regulariser 0.1: ``tp5-reg0.1``)
_S3 = dict(bound_steps=5, reg_unstable=0.1, unstable_weight=0.0)
VARIANTS.update({
    "adv.4": dict(_S3, clean_weight=0.0, adv_weight=0.4),  # the clean loss replaced by the adversarial one
    "adv.2": dict(_S3, clean_weight=0.2, adv_weight=0.2),  # half of it
    # weight averaging from the end of the ramp on
    "ema.99": dict(_S3, ema_decay=0.99),
    "ema.998": dict(_S3, ema_decay=0.998),
    "tp5-reg0.1-ctl": dict(_S3),  # the control of the session-6 prototypes (= "tp5-reg0.1")
    # the library's quick_robust with a larger factor on the bound logits (margins are rates in [-1, 1])
    "base-bs1": dict(bound_scale=1.0),  # the scale of the paper and of quick_robust before session 6
    "base-bs1.5": dict(bound_scale=1.5),
    "base-bs2": dict(bound_scale=2.0),
    "base-bs2.5": dict(bound_scale=2.5),
    "base-bs3": dict(bound_scale=3.0),
    "base-bs4": dict(bound_scale=4.0),
    # a shorter eps ramp (the ramp over the whole budget verified less: 13b); assume --epochs 2
    "base-ramp0.3": dict(ramp_epochs=0.3, hold_epochs=1.7),
    "base-ramp0.15": dict(ramp_epochs=0.15, hold_epochs=1.85),
})
#: session 7, on the session-6 default (scale 2; run with --epochs 4 --ramp-epochs 1.2): the end of
#: the hold phase at a lower lr, as every certified-training recipe for ANNs ends (Gowal et al. 2018).
#: The ``s7-lrdecay*`` prototypes were run before quick_robust took the decay over (``lr_milestones``
#: ``(0.75 * epochs,)``), so they keep a constant config lr and decay in custom_fit; ``s6-default`` is
#: quick_robust without the decay. Every row measured before session 7 ran without it: ``--constant-lr``
#: gives every variant ``lr_milestones=()`` to reproduce them.
_NODECAY = dict(lr_milestones=())
VARIANTS.update({
    "s6-default": dict(_NODECAY),
    "s7-lrdecay": {**_S3, **_NODECAY, "lr_decay_frac": 0.25},  # lr x 0.1 over the last quarter of the steps
    "s7-lrdecay-tfac1.2": {**_S3, **_NODECAY, "lr_decay_frac": 0.25, "train_eps_factor": 1.2},  # train at 0.144
    "s7-lrdecay-tp8": {**_S3, **_NODECAY, "lr_decay_frac": 0.25, "bound_steps": 8},  # and T' = 8 in the training bound
    # on the session-7 default (the library's decay; run with --epochs 6 --ramp-epochs 1.8)
    "s7-decay@3": dict(lr_milestones=(3,)),  # the decay from epoch 3 of 6: the last half at a tenth
})
#: session 8, the CONV robust phase (run with --epochs 1 --ramp-epochs 0.4; the CONV recipes' scale 1):
#: batch 64 instead of 128, twice the steps for the same epoch (a CONV step at 64 costs 0.39x the one at
#: 128 on this CPU: benchmarks/robust_step.py --models conv --batch 64 / 128)
VARIANTS.update({
    "conv-b64": dict(bound_scale=1.0, batch_size=64),
    # and on the FC recipe's phase (run with --epochs 6 --ramp-epochs 1.8)
    "fc-b64": dict(batch_size=64),
})

#: Variant keys for training from scratch, handled by :func:`from_scratch` before the robust
#: phase (which then runs as usual, with the same number of robust steps as fine-tuning):
#:
#: - ``init``: ``"ibp"``, Shi et al. 2021's IBP initialization, every Linear weight
#:   ``~ N(0, sigma^2)`` with ``sigma = sqrt(2 pi) / n_in`` and zero bias (``E sum_i |W_ji|
#:   = 2``: the interval width of a layer's input is passed on at about the same size);
#:   ``"default"``, PyTorch's own ``reset_parameters`` (the control).
#: - ``warmup_natural_epochs``: natural training before the robust phase, the natural
#:   recipe of the fine-tuned model (Adam lr 2e-3, one-cycle cosine with 0.1-epoch warm-up,
#:   T = 10) shortened to this many epochs.
SCRATCH_KEYS = ("init", "warmup_natural_epochs")


def from_scratch(net: sr.SpikingNetwork, train: Any, init: str, warmup_natural_epochs: float, seed: int) -> None:
    """Re-initialise ``net`` in place (see :data:`SCRATCH_KEYS`) and train it naturally."""
    torch.manual_seed(seed)
    for module in net.modules():
        if isinstance(module, torch.nn.Linear):
            if init == "ibp":
                torch.nn.init.normal_(module.weight, 0.0, (2 * torch.pi) ** 0.5 / module.in_features)
                torch.nn.init.zeros_(module.bias)
            else:
                module.reset_parameters()
    epochs = max(1, round(warmup_natural_epochs))
    config = sr.TrainConfig.natural(epochs=epochs, optimizer="adam", lr=2e-3, lr_schedule="cosine",
                                    warmup_epochs=0.1, lr_milestones=(), seed=seed)
    sr.fit(net, train, sr.DigitalLinf(0.0), config, device="cpu", progress=False)


class PrototypeStep(sr.RobustTrainingStep):
    """``RobustTrainingStep`` with the prototype options of :data:`CUSTOM_KEYS`."""

    def __init__(self, *args: Any, reg_unstable: float = 0.0, reg_decay: bool = False, beta_start: float = 0.0,
                 hinge: float | None = None, reg_hidden: bool = False, out_margin: float = 0.0,
                 bound_surrogate: tuple[float, float] | None = None, adv_weight: float = 0.0, adv_iter: int = 3,
                 adv_eps_factor: float = 1.0, adv_samples: int = 1, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.adv_weight, self.adv_iter, self.adv_eps_factor, self.adv_samples = adv_weight, adv_iter, adv_eps_factor, adv_samples
        # its own stream, so the coding and bound draws are those of the control
        self.adv_generator = torch.Generator().manual_seed(0xAD7 + (self.generator.initial_seed() if self.generator else 0))
        self.reg_unstable, self.reg_decay, self.beta_start, self.hinge = reg_unstable, reg_decay, beta_start, hinge
        self.reg_hidden, self.out_margin, self.bound_surrogate = reg_hidden, out_margin, bound_surrogate

    def compute_loss(self, net: sr.SpikingNetwork, x: torch.Tensor, labels: torch.Tensor):
        clean, metrics = sr.TrainingStep.compute_loss(self, net, x, labels)
        eps = self.eps
        final = self.eps_schedule.final_eps
        u = min(1.0, eps / final) if final > 0 else 1.0  # progress along the ramp
        lower, upper = self.perturbation.with_eps(eps).bounds(x, self.bound_steps, self.generator)
        own = [stage.lif.surrogate for stage in net.stages]
        if self.bound_surrogate is not None:
            for stage in net.stages:
                stage.lif.surrogate = Rectangular(*self.bound_surrogate)
        try:
            loss, metrics = self._bound_loss(net, clean, metrics, eps, u, lower, upper, labels)
        finally:
            for stage, surrogate in zip(net.stages, own):
                stage.lif.surrogate = surrogate
        if self.adv_weight > 0:
            x_adv = x
            if eps > 0:
                attack = sr.EOTPGD(eps=eps * self.adv_eps_factor, n_iter=self.adv_iter, samples=self.adv_samples,
                                   time_steps=self.steps)
                x_adv = attack.attack(net, x, labels, self.adv_generator)
            adv = self.clean_loss(net(self.perturbation.encode(x_adv, self.steps, self.adv_generator)), labels)
            metrics["adv_loss"] = adv.detach()
            loss = loss + self.adv_weight * adv
        return loss, metrics

    def _bound_loss(self, net, clean, metrics, eps, u, lower, upper, labels):
        ibp = s_ibp(net, lower, upper)
        rl, _ = ibp.rates()
        lb = _ibp_spec_lower(ibp, margin_spec(labels, rl.shape[1], rl.dtype))
        beta = self.beta_start * (1 - u)
        if beta > 0:
            crown = sr.compute_bounds(net, lower, upper, labels=labels, method="crown-ibp")
            lb = beta * crown + (1 - beta) * lb
        margins = round_to_grid(lb, lower.shape[0])
        if self.hinge is None:
            bound = torch.nn.functional.cross_entropy(bound_logits(margins, labels) * self.bound_scale, labels)
        else:
            bound = torch.relu(self.hinge - margins).sum(1).mean()
        loss = self.clean_weight * clean + self.bound_weight * bound
        reg_w = self.reg_unstable * ((1 - u) if self.reg_decay else 1.0)
        if self.reg_unstable > 0:
            parts = []
            stages = list(zip(ibp.membrane, net.stages))
            for (ml, mu), stage in stages[:-1] if self.reg_hidden else stages:
                th = stage.lif.threshold
                parts.append((torch.relu(torch.minimum(mu - th, th - ml)) / th).mean())
            reg = torch.stack(parts).mean()
            metrics["reg"] = reg.detach()
            metrics["unstable"] = torch.stack([st.unstable.float().mean() for st in ibp.stability]).mean()
            loss = loss + reg_w * reg
        if self.out_margin > 0:
            (ml, mu), th = ibp.membrane[-1], net.stages[-1].lif.threshold
            ml, mu = ml.flatten(2), mu.flatten(2)  # [T', B, C]
            is_label = torch.nn.functional.one_hot(labels, ml.shape[-1]).bool().unsqueeze(0)
            label_term = torch.relu(th - ml).masked_fill(~is_label, 0).sum(-1)
            other_term = torch.relu(mu - th).masked_fill(is_label, 0).sum(-1) / (ml.shape[-1] - 1)
            out = ((label_term + other_term) / th).mean()
            metrics["out_margin"] = out.detach()
            loss = loss + self.out_margin * out
        metrics["bound_loss"] = bound.detach()
        metrics["verified"] = (margins.detach() > 0).all(dim=1).float().mean()
        metrics["eps"] = eps
        return loss, metrics


def custom_fit(net: sr.SpikingNetwork, train: Any, perturbation: sr.DigitalLinf, config: sr.TrainConfig,
               custom: dict[str, Any], log_every: int = 50) -> list[dict[str, float]]:
    """``fit``'s robust loop (same batch order, coding generator, optimizer) for constant-lr
    configs, with :class:`PrototypeStep`; returns the mean metrics of every ``log_every`` steps."""
    from torch.utils.data import DataLoader

    if config.optimizer != "adam" or config.lr_schedule != "step":
        raise ValueError("custom_fit runs the step-schedule Adam configs only")
    if config.unstable_weight:
        raise ValueError("custom_fit: PrototypeStep computes its own regulariser (reg_unstable); set unstable_weight=0")
    sampler = EpochBatchSampler(len(train), config.batch_size, shuffle=config.shuffle, seed=config.seed)
    per_epoch = sampler.batches_per_epoch
    generator = torch.Generator().manual_seed(config.seed)
    step = PrototypeStep(
        perturbation, config.eps_schedule(per_epoch), steps=config.steps, bound_steps=config.bound_steps,
        method=config.method, clean_weight=config.clean_weight, bound_weight=config.bound_weight,
        bound_scale=config.bound_scale, clean_loss=sr.CleanLoss(config.clean_loss, config.clean_scale),
        clip_norm=config.clip_norm, generator=generator,
        **{k: v for k, v in custom.items() if k not in LOOP_KEYS})
    opt = torch.optim.Adam(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    total = config.epochs * per_epoch
    decay_from = total - int(custom.get("lr_decay_frac", 0.0) * total)
    milestones = milestone_steps(config, per_epoch)  # the iterations at which fit cuts the lr
    ema_decay = custom.get("ema_decay")
    ema_from = round(config.ramp_epochs * per_epoch)
    average: dict[str, torch.Tensor] | None = None
    log, span = [], []
    for epoch in range(config.epochs):
        sampler.set_epoch(epoch)
        loader = DataLoader(train, batch_sampler=sampler,
                            generator=torch.Generator().manual_seed(sampler.epoch_seed(epoch) ^ 0x5EED))
        for x, y in loader:
            factor = step_factor(step.step, milestones, config.lr_gamma) * (0.1 if step.step >= decay_from else 1.0)
            for group in opt.param_groups:
                group["lr"] = config.lr * factor
            span.append(step(net, opt, x, y))
            if ema_decay is not None and step.step >= ema_from:
                with torch.no_grad():
                    weights = {k: v.detach() for k, v in net.state_dict().items()}
                    if average is None:
                        average, k_avg = {k: v.clone() for k, v in weights.items()}, 0
                    else:
                        k_avg += 1
                        d = min(ema_decay, (1 + k_avg) / (10 + k_avg))
                        for k, v in weights.items():
                            if v.is_floating_point():
                                average[k].mul_(d).add_(v, alpha=1 - d)
                            else:
                                average[k].copy_(v)
            if len(span) == log_every:
                log.append({k: round(sum(m[k] for m in span) / len(span), 4) for k in span[0]} | {"step": step.step})
                print(json.dumps(log[-1]), flush=True)
                span = []
    if average is not None:
        net.load_state_dict(average)
    return log


def stability_report(net: sr.SpikingNetwork, test: tuple[torch.Tensor, torch.Tensor], eps: float) -> None:
    """Where S-IBP loses the certificate: per stage, the share of surely-firing, surely-silent
    and unstable neurons (over bound steps and neurons) of the verified and the unverified
    test images at ``eps`` (T' = 3, seed 0), and the output spike counts that decide."""
    x, y = test
    lower, upper = sr.DigitalLinf(eps).bounds(x, 3, torch.Generator().manual_seed(0))
    with torch.no_grad():
        ibp = s_ibp(net, lower, upper)
        rl, ru = ibp.rates()
        verified = (round_to_grid(_ibp_spec_lower(ibp, margin_spec(y, rl.shape[1], rl.dtype)), 3) > 0).all(1)
        rows = []
        for k, ((ml, mu), st) in enumerate(zip(ibp.membrane, ibp.stability)):
            for name, sel in (("verified", verified), ("unverified", ~verified)):
                rows.append({"stage": k, "images": name, "n": int(sel.sum()),
                             **{key: round(100 * float(getattr(st, key)[:, sel].float().mean()), 1)
                                for key in ("fires", "silent", "unstable")},
                             "membrane_width": round(float((mu - ml)[:, sel].mean()), 2)})
        is_label = torch.nn.functional.one_hot(y, rl.shape[1]).bool()
        label_low = (rl[is_label] * 3).round().int()
        other_up = (ru.masked_fill(is_label, -1).max(1).values * 3).round().int()
    for row in rows:
        print(json.dumps(row))
    pairs: dict[str, int] = {}
    for a, b in zip(label_low[~verified].tolist(), other_up[~verified].tolist()):
        pairs[f"{a}/{b}"] = pairs.get(f"{a}/{b}", 0) + 1
    print(json.dumps({"unverified: label spikes surely / most spikes of another class possibly (of 3)": pairs}))


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
    parser.add_argument("--stability", action="store_true", help="only print stability_report for the given model")
    parser.add_argument("--constant-lr", action="store_true",
                        help="lr_milestones=() for every variant: quick_robust before session 7 (no lr decay)")
    parser.add_argument("--save", default=None, help="folder: write each trained model to SAVE/<variant>-s<seed>.pt")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    natural, info = load_model(args.natural_model)
    test = load_test_set(info["dataset"], args.n_test)
    if args.stability:
        stability_report(natural, test, args.eps)
        return
    train = load_train_set(info["dataset"], args.n_train)
    attack = sr.EOTPGD(eps=args.attack_eps[0], n_iter=10, samples=2)

    def report(name: str, seed: int, net: sr.SpikingNetwork, seconds: float, config: dict[str, Any]) -> None:
        t0 = time.perf_counter()
        clean = sr.clean_error(net, test, seeds=(0,), progress=False)
        cert = sr.certified_error(net, test, sr.DigitalLinf(args.eps), steps=3, method=args.certify_method,
                                  seeds=(0,), progress=False)
        att = sr.attack_error(net, test, attack, args.attack_eps, seeds=(0,), progress=False)
        extra = {}
        if config.get("bound_steps", 3) != 3:  # also at the T' it was trained with
            tp = config["bound_steps"]
            cert_tp = sr.certified_error(net, test, sr.DigitalLinf(args.eps), steps=tp, method=args.certify_method,
                                         seeds=(0,), progress=False)
            extra[f"verified@{args.eps}({args.certify_method},T'{tp})"] = round(100 * (1 - cert_tp.error), 2)
        print(json.dumps({
            "variant": name, "seed": seed, "train_s": round(seconds, 1), "eval_s": round(time.perf_counter() - t0, 1),
            "n_test": len(test[1]), "clean_acc": round(100 * (1 - clean.error), 2),
            f"verified@{args.eps}({args.certify_method},T'3)": round(100 * (1 - cert.error), 2),
            **extra,
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
                    "hold_epochs": args.epochs - args.ramp_epochs, "seed": seed, **VARIANTS[name],
                    **(_NODECAY if args.constant_lr else {})}
            custom = {k: over.pop(k) for k in CUSTOM_KEYS if k in over}
            scratch = {k: over.pop(k) for k in SCRATCH_KEYS if k in over}
            config = sr.TrainConfig.quick_robust(args.eps, **over)
            t0 = time.perf_counter()
            if scratch:
                from_scratch(net, train, seed=seed, **scratch)
                print(json.dumps({"variant": name, "seed": seed, "warmup_s": round(time.perf_counter() - t0, 1)}),
                      flush=True)
                over.update(scratch)
            if custom:
                custom_fit(net, train, sr.DigitalLinf(args.eps), config, custom)
                over.update(custom)
            else:
                sr.fit(net, train, sr.DigitalLinf(args.eps), config, device="cpu", progress=False)
            seconds = time.perf_counter() - t0
            if args.save:
                save_model(f"{args.save}/{name}-s{seed}.pt", net, arch=info["arch"], dataset=info["dataset"],
                           config={**config.to_dict(), **custom})
            report(name, seed, net, seconds, over)


if __name__ == "__main__":
    main()
