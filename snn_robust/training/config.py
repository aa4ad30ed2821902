"""The training configuration: :class:`TrainConfig` with the paper presets, the optimizer
and the learning-rate schedules it describes."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal, Mapping, Sequence

import torch

from ..bounds.api import Method
from ..names import check_method
from ..perturbations import Perturbation
from ..schedules import EPS_SHAPES, EpsSchedule
from ..validation import check_number, check_positive_int
from .steps import DEFAULT_CE_SCALE, CleanLoss, _check_clip

OPTIMIZERS = ("sgd", "adam")


LR_SCHEDULES = ("step", "cosine")
"""``TrainConfig.lr_schedule`` values: ``"step"`` (the paper's milestones, see :func:`step_factor`) and
``"cosine"`` (per-iteration warm-up + cosine decay to 0; see :func:`lr_factor`)."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run's numbers (and nothing about where files go).

    Use :meth:`natural` and :meth:`robust` for the paper's settings (method.md §5) and
    override any field. Epoch-valued eps fields are converted to iterations with the number
    of batches per epoch (fractional epochs allowed), so the ramp is smooth.

    Fields:
        epochs, batch_size: run length and batch size (paper: 80 natural / 300 robust, 128).
        steps: T of the clean forward pass (paper: 10).
        optimizer, lr, momentum, weight_decay: ``"sgd"`` (with momentum) or ``"adam"``.
        lr_milestones, lr_gamma: multiply lr by ``lr_gamma`` at these epochs (paper
            natural: lr 0.01 -> 0.001 at epoch 55); used by ``lr_schedule="step"``. A
            fractional milestone (e.g. ``0.75`` of a one-epoch run) takes effect at the
            iteration ``round(m * batches_per_epoch)`` (:func:`step_factor`).
        lr_schedule: ``"step"`` (the milestones above, stepped per epoch, or per iteration
            when one is fractional) or ``"cosine"``
            (per iteration: linear warm-up from 0 over ``warmup_epochs``, then
            ``lr * (1 + cos(pi * k / K)) / 2`` down to 0 at the run's last iteration; a
            one-cycle schedule, which short budgets favour, see :data:`LR_SCHEDULES`).
        clip_norm: gradient-norm clip, ``None`` for none (paper robust: 0.25).
        clean_loss, clean_scale: see :class:`CleanLoss`.
        robust: train with the certified loss (else natural BPTT).
        eps: the eps to certify, the run's one radius (:meth:`training_set`); training ramps
            to ``eps * train_eps_factor`` (ANN practice trains at 1.33-2x the certified eps); ramp_epochs / hold_epochs /
            eps_start_epoch / eps_shape: the :class:`EpsSchedule`.
        bound_steps: T' of the bounds (paper: 3); method: the training bound.
        clean_weight, bound_weight, clean_weight_start, bound_scale, unstable_weight: see
            :class:`RobustTrainingStep`.
        seed: seeds the data order (per epoch) and the coding / bound-sampling generator.
        shuffle, drop_last: data order options.
    """

    epochs: int = 80
    batch_size: int = 128
    steps: int = 10
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.0
    lr_milestones: tuple[float, ...] = (55,)
    lr_gamma: float = 0.1
    lr_schedule: Literal["step", "cosine"] = "step"
    warmup_epochs: float = 0.0
    clip_norm: float | None = None
    clean_loss: Literal["ce", "mse"] = "ce"
    clean_scale: float = DEFAULT_CE_SCALE
    robust: bool = False
    eps: float = 0.0
    ramp_epochs: float = 250.0
    hold_epochs: float = 50.0
    eps_start_epoch: float = 0.0
    train_eps_factor: float = 1.0
    eps_shape: Literal["linear", "smooth"] = "linear"
    bound_steps: int = 3
    method: Method = "crown-ibp"
    clean_weight: float = 0.4
    bound_weight: float = 0.6
    clean_weight_start: float | None = None
    bound_scale: float = 1.0
    unstable_weight: float = 0.0
    seed: int = 0
    shuffle: bool = True
    drop_last: bool = False

    def __post_init__(self) -> None:
        # whole epochs stay ints: they are MultiStepLR's per-epoch milestones, as in checkpoints
        # written before fractional ones existed
        milestones = tuple(check_number("lr_milestones", m, 0.0) for m in self.lr_milestones)
        object.__setattr__(self, "lr_milestones", tuple(int(m) if m.is_integer() else m for m in milestones))
        check_positive_int("epochs", self.epochs)
        check_positive_int("batch_size", self.batch_size)
        check_positive_int("steps", self.steps)
        check_positive_int("bound_steps", self.bound_steps)
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if self.eps_shape not in EPS_SHAPES:
            raise ValueError(f"eps_shape must be one of {EPS_SHAPES}, got {self.eps_shape!r}")
        if self.clean_weight_start is not None:
            check_number("clean_weight_start", self.clean_weight_start, 0.0)
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        check_method(self.method)
        check_number("lr", self.lr, 0.0, low_open=True)
        for name in ("ramp_epochs", "hold_epochs", "eps_start_epoch", "warmup_epochs", "train_eps_factor", "eps",
                     "clean_weight", "bound_weight", "unstable_weight", "weight_decay", "momentum", "lr_gamma"):
            check_number(name, getattr(self, name), 0.0)
        _check_clip(self.clip_norm)
        CleanLoss(self.clean_loss, self.clean_scale)

    @classmethod
    def natural(cls, **overrides: Any) -> "TrainConfig":
        """Paper natural training: SGD momentum 0.9, lr 0.01 -> 0.001 at epoch 55, 80 epochs,
        batch 128, T = 10, no clipping."""
        base = dict(epochs=80, lr=0.01, momentum=0.9, lr_milestones=(55,), clip_norm=None, robust=False)
        return cls(**{**base, **overrides})

    @classmethod
    def robust(cls, eps: float = 0.12, **overrides: Any) -> "TrainConfig":
        """Paper robust training: SGD lr 5e-4 momentum 0.9 (constant), clip 0.25, T' = 3,
        CROWN-IBP bound, loss 0.4 clean + 0.6 certified, eps ramped from 0 over 250 epochs
        then held 50; ``epochs`` defaults to ramp + hold."""
        base: dict[str, Any] = dict(
            lr=5e-4, momentum=0.9, lr_milestones=(), clip_norm=0.25, robust=True, eps=eps,
            ramp_epochs=250.0, hold_epochs=50.0, bound_steps=3, method="crown-ibp",
            clean_weight=0.4, bound_weight=0.6,
        )
        base.update(overrides)
        start = base.get("eps_start_epoch", 0.0)
        base.setdefault("epochs", max(1, math.ceil(start + base["ramp_epochs"] + base["hold_epochs"])))
        return cls(**base)

    @classmethod
    def quick_robust(cls, eps: float = 0.12, **overrides: Any) -> "TrainConfig":
        """A short robust profile for a CPU budget, found by measurement (not the paper's):
        the paper's loss weights, clip and clean coding, but the **S-IBP** bound as the
        training bound at **T' = 5** (certify at any T'; the paper trains at 3), the
        **unstable-neuron regulariser** at 0.1 (:func:`~snn_robust.loss.unstable_penalty`),
        the bound logits scaled by **2** (``bound_scale``), **Adam lr 1e-3**, a tenth of it
        over the last quarter of the run (``lr_milestones=(0.75 * epochs,)``), eps ramped
        linearly to the certified eps over 0.5 epoch and held 2.5 epochs (3 epochs). Start
        from a naturally trained model.

        The lr decay, measured on MNIST-FC at eps 0.12 (docs/results.md section 15; the quick
        profile's 4 robust epochs, first 1000 test images, 2 training seeds): 93.55 % clean,
        60.75 % verified (S-IBP, T' = 3), EOT-PGD error 32.6 % at eps 0.154, against 93.15 /
        58.3 / 33.0 % at a constant lr (both seeds verify more).

        The bound scale 2, measured on MNIST-FC at eps 0.12 (docs/results.md section 14; the
        quick profile's 2 robust epochs, first 1000 test images, 3 training seeds): 92.5 %
        clean, 52.9 % verified (S-IBP, T' = 3), EOT-PGD error 37.9 % at eps 0.154, against
        92.5 / 46.9 / 41.0 % at scale 1 (every seed better on both); 1.5, 2.5, 3 and 4 did
        less (2-3 seeds each).

        T' = 5 and the regulariser, measured on MNIST-FC at eps 0.12 (docs/results.md section
        8; the quick profile's 2 robust epochs, first 1000 test images, 3 training seeds):
        92.67 % clean, 47.0 % verified (S-IBP, T' = 3), EOT-PGD error 41.6 % at eps 0.154,
        against 92.6 / 45.3 / 43.0 % at T' = 3 without it (2 of 3 seeds better; within the
        seed spread); T' = 5 costs 1.35x the step time
        (section 7b), the regulariser about 7 % more (it reuses the bound's S-IBP pass).

        The rest (then at T' = 3 without the regulariser) was measured on MNIST
        (benchmarks/certified_recipe.py, paper FC model, natural model at
        97.7 %, eps 0.12, one robust epoch on all 60000 images with a 0.4-epoch ramp, first
        500 test images, 2 seeds; docs/results.md section 4): 91.6 % clean, 42.4 % verified
        (S-IBP, T' = 3), EOT-PGD error 48.2 % at eps 0.154 (natural model: 93.8 %). A cosine
        lr schedule (91.7 / 37.0 / 51.9 %), training at 1.5x the certified eps (88.4 / 24.6 /
        73.0 %, one seed), a bound-logit scale of 5 (63.8 / 14.0 / 79.0 %) and a clean-weight
        ramp from 1 (98.0 / 0.0 / 83.2 %) were worse. Earlier measurements: the paper's
        settings (SGD lr 5e-4, CROWN-IBP) verified 0 % at 0.12 after 400 steps, and so did
        Adam with CROWN-IBP.
        """
        base: dict[str, Any] = dict(optimizer="adam", lr=1e-3, method="ibp", ramp_epochs=0.5, hold_epochs=2.5, epochs=3,
                                    bound_steps=5, unstable_weight=0.1, bound_scale=2.0)
        merged = {**base, **overrides}
        # the last quarter of the run at a tenth of the lr (fractional for runs of 1-3 epochs)
        merged.setdefault("lr_milestones", (0.75 * merged["epochs"],))
        return cls.robust(eps, **merged)

    def training_set(self, perturbation: Perturbation) -> Perturbation:
        """The perturbation set a run trains against: the kind of ``perturbation`` (its class,
        coding and value range) with the radius :attr:`eps`, which the eps schedule ramps up
        to (times :attr:`train_eps_factor`). eps is carried once, here: ``perturbation``
        gives no second radius, its eps must be 0 (the kind only) or :attr:`eps`.

        Its repr is, with :meth:`to_dict`, the identity of a :func:`~snn_robust.training.fit`
        checkpoint."""
        if not isinstance(perturbation, Perturbation):
            raise TypeError("perturbation must be a Perturbation (DigitalLinf, SpikeL0, DirectLinf), "
                            f"got {type(perturbation).__name__}")
        if self.robust and perturbation.eps not in (0.0, self.eps):
            raise ValueError(f"the perturbation's eps {perturbation.eps} differs from TrainConfig.eps {self.eps}: the run "
                             f"trains at config.eps (ramped by the schedule); pass {type(perturbation).__name__} with eps "
                             f"0 (its kind only) or {self.eps}, or set the config's eps")
        return perturbation.with_eps(self.eps)

    def eps_schedule(self, steps_per_epoch: int) -> EpsSchedule:
        return EpsSchedule.from_epochs(self.eps * self.train_eps_factor, self.ramp_epochs, self.hold_epochs, steps_per_epoch,
                                       start_epoch=self.eps_start_epoch, shape=self.eps_shape)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["lr_milestones"] = list(self.lr_milestones)
        return d


#: Config fields that may change between a checkpoint and its resumption.
RESUMABLE_CHANGES = ("epochs",)


def _make_optimizer(net: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(net.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    return torch.optim.Adam(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)


def lr_factor(step: int, total_steps: int, warmup_steps: int = 0) -> float:
    r"""The ``"cosine"`` learning-rate factor at (0-based) iteration ``step``:
    ``(step + 1) / W`` during the warm-up (``step < W``), then
    :math:`\tfrac12 (1 + \cos(\pi (k - W) / (K - W)))` with ``K = total_steps``; 0 from
    ``k = K`` on."""
    if step >= total_steps:
        return 0.0
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup_steps) / span)))


def step_factor(step: int, milestone_steps: Sequence[int], gamma: float) -> float:
    """The ``"step"`` learning-rate factor at (0-based) iteration ``step``: ``gamma`` to the
    number of milestones (in iterations) already reached."""
    return gamma ** sum(step >= m for m in milestone_steps)


def milestone_steps(config: "TrainConfig", per_epoch: int) -> list[int]:
    """``config.lr_milestones`` as (0-based) iterations: ``round(m * per_epoch)``."""
    return [int(round(m * per_epoch)) for m in config.lr_milestones]


def per_iteration_lr(config: "TrainConfig") -> bool:
    """Whether :func:`_make_lr_scheduler`'s scheduler steps after every iteration (``"cosine"``,
    or a fractional milestone) instead of after every epoch."""
    return config.lr_schedule == "cosine" or any(isinstance(m, float) for m in config.lr_milestones)


def _make_lr_scheduler(opt: torch.optim.Optimizer, config: "TrainConfig", per_epoch: int) -> torch.optim.lr_scheduler.LRScheduler:
    if config.lr_schedule == "cosine":
        total, warm = config.epochs * per_epoch, int(round(config.warmup_epochs * per_epoch))
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda k: lr_factor(k, total, warm))
    if per_iteration_lr(config):
        at = milestone_steps(config, per_epoch)
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda k: step_factor(k, at, config.lr_gamma))
    return torch.optim.lr_scheduler.MultiStepLR(opt, milestones=list(config.lr_milestones), gamma=config.lr_gamma)


def _config_mismatch(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    # a field added after the checkpoint was written counts as its default (e.g. unstable_weight 0)
    defaults = {f.name: f.default for f in fields(TrainConfig)}
    keys = sorted(set(saved) | set(current))
    return [f"{k}: checkpoint {saved.get(k, defaults.get(k))!r}, now {current.get(k, defaults.get(k))!r}" for k in keys
            if k not in RESUMABLE_CHANGES and saved.get(k, defaults.get(k)) != current.get(k, defaults.get(k))]
