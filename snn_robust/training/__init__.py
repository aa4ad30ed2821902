"""Natural (BPTT) and robust (certified) training of spiking networks (Section 4.1).

Shape glossary: ``T`` clean coding steps, ``T'`` bound steps, ``B`` batch, ``C`` classes,
``X...`` one sample's shape.

Two ways to use it.

*Pieces for your own snnTorch / SpikingJelly loop*: an :class:`~snn_robust.EpsSchedule`, a
:class:`RobustTrainingStep` (clean loss on the coded input plus the certified loss at the
scheduled eps, backward, gradient clipping, optimizer step; returns a metrics dict), and
:func:`atomic_save` / :func:`capture_rng_state` / :func:`restore_rng_state` for checkpoints::

    step = RobustTrainingStep(DigitalLinf(0.12), EpsSchedule(0.12, ramp_steps=10_000, hold_steps=2_000),
                              generator=torch.Generator().manual_seed(0))
    for images, labels in loader:                   # images [B, 1, 28, 28] in [0, 1]
        metrics = step(net, optimizer, images, labels)  # {'loss', 'clean_loss', 'bound_loss', 'verified', 'eps', ...}

*A ready loop*: :func:`fit` with a :class:`TrainConfig` (paper defaults from
:meth:`TrainConfig.natural` and :meth:`TrainConfig.robust`), atomic checkpoints, exact resume,
CSV / JSON-lines metrics and a progress bar::

    fit(net, train_set, DigitalLinf(0.0), TrainConfig.natural(), run_dir="runs/fc-natural")
    fit(net, train_set, DigitalLinf(0.12), TrainConfig.robust(), run_dir="runs/fc-robust", resume=True)

The clean loss (:class:`CleanLoss`). The network's output is a spike *rate* in ``[0, 1]``.
The authors' code applies cross-entropy to the raw rates; then the logits differ by at most 1,
the softmax stays close to uniform and the gradient is weak. ``CleanLoss("ce", scale=s)``
applies cross-entropy to ``s * rates`` (``s = 1`` is the authors' form); ``"mse"`` is the
squared error against the one-hot label used by many SNN codes. The default (``"ce"``,
``scale=DEFAULT_CE_SCALE`` = 5) was chosen by a measurement on MNIST (see
:data:`DEFAULT_CE_SCALE`): 95.2 % test accuracy after 2 epochs against 90.6 % for the
authors' scale 1 and 85.9 % for MSE; pass ``clean_scale=1.0`` to reproduce the authors' code.
The certified term keeps the paper's form ``CE(-[0, lb])`` on rate margins; ``bound_scale``
multiplies the bound logits (``TrainConfig``'s default 1 is the paper's; ``quick_robust``,
``RobustTrainingStep`` and ``certified_loss`` use the measured 2).

The package, one job per module: :mod:`.steps` (the clean loss and the single training
steps), :mod:`.config` (:class:`TrainConfig`, its presets, optimizer and lr schedules),
:mod:`.sampler` (the resumable batch order), :mod:`.state` (RNG states, checkpoint files
and :class:`~snn_robust.training.state.FitState`, the one definition of a checkpoint's
content), :mod:`.logs` (running means, metric rows and files) and :mod:`.fit` (the ready loop).
Every name below is importable from ``snn_robust.training``.
"""
from __future__ import annotations

from .config import LR_SCHEDULES, OPTIMIZERS, RESUMABLE_CHANGES, TrainConfig, lr_factor
from .fit import FitResult, fit, resolve_device
from .sampler import EpochBatchSampler
from .state import (CHECKPOINT_FORMAT, CHECKPOINT_NAME, PREVIOUS_CHECKPOINT_NAME, CheckpointError, atomic_save,
                    capture_rng_state, load_checkpoint, restore_rng_state)
from .steps import (CLEAN_LOSSES, DEFAULT_CE_SCALE, CleanLoss, NonFiniteError, RobustTrainingStep, TrainingStep,
                    non_finite_parameters)

__all__ = [
    "CLEAN_LOSSES",
    "DEFAULT_CE_SCALE",
    "CheckpointError",
    "CleanLoss",
    "EpochBatchSampler",
    "FitResult",
    "NonFiniteError",
    "RobustTrainingStep",
    "TrainConfig",
    "TrainingStep",
    "atomic_save",
    "capture_rng_state",
    "fit",
    "load_checkpoint",
    "non_finite_parameters",
    "resolve_device",
    "restore_rng_state",
]
