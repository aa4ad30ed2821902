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
The certified term keeps the paper's form ``CE(-[0, lb])`` on rate margins (``bound_scale``
multiplies the bound logits, default 1 as in the paper).
"""
from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import os
import platform
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from . import distributed
from .bounds.api import METHODS, Method, compute_bounds
from .fileio import DamagedFileError, atomic_write_text, load_checked, remove_stale_temporaries, save_checked
from .loss import bound_logits
from .network import SpikingNetwork
from .perturbations import Perturbation
from .schedules import EPS_SHAPES, EpsSchedule
from .validation import check_positive_int, non_finite_names

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

log = logging.getLogger(__name__)

CLEAN_LOSSES = ("ce", "mse")
DEFAULT_CE_SCALE = 5.0
"""Default factor on the rates in the clean cross-entropy. Measured (MNIST, 784-128-10 FC SNN,
T = 10, paper SGD lr 0.01 momentum 0.9, batch 128, 2 epochs, first 2000 test images;
init seeds 0 / 1): scale 1 (authors' code) 90.6 / 89.9 % test accuracy, 5: 95.2 / 94.8 %,
10: 94.8 / 94.5 %, 20: 82.8 % (too sharp, unstable; seed 0 only), ``"mse"`` against
one-hot: 85.9 % (seed 0 only)."""
OPTIMIZERS = ("sgd", "adam")
LR_SCHEDULES = ("step", "cosine")
"""``TrainConfig.lr_schedule`` values: ``"step"`` (the paper's per-epoch milestones) and
``"cosine"`` (per-iteration warm-up + cosine decay to 0; see :func:`lr_factor`)."""
CHECKPOINT_NAME = "last.pt"
#: The checkpoint before ``last.pt``, kept so that a damaged newest one costs one interval.
PREVIOUS_CHECKPOINT_NAME = "previous.pt"
CHECKPOINT_FORMAT = 1


# --------------------------------------------------------------------------------------------
# Losses and single training steps


@dataclass(frozen=True)
class CleanLoss:
    """Loss of the clean output rates ``[B, C]`` against integer labels ``[B]``.

    - ``"ce"``: ``cross_entropy(scale * rates, labels)``; ``scale=1`` is the authors' code.
    - ``"mse"``: ``mean((rates - onehot(labels))**2)`` over batch and classes (``scale``
      is not used).

    Example: ``CleanLoss("ce", scale=10.0)(net(spikes), labels)``
    """

    kind: Literal["ce", "mse"] = "ce"
    scale: float = DEFAULT_CE_SCALE

    def __post_init__(self) -> None:
        if self.kind not in CLEAN_LOSSES:
            raise ValueError(f"CleanLoss kind must be one of {CLEAN_LOSSES}, got {self.kind!r}")
        if not (float(self.scale) > 0 and math.isfinite(self.scale)):
            raise ValueError(f"CleanLoss scale must be a positive number, got {self.scale!r}")

    def __call__(self, rates: Tensor, labels: Tensor) -> Tensor:
        if self.kind == "ce":
            return F.cross_entropy(rates * self.scale, labels)
        target = F.one_hot(labels, rates.shape[-1]).to(rates.dtype)
        return F.mse_loss(rates, target)


class NonFiniteError(ValueError):
    """Training produced a NaN or infinite loss, gradient or weight; the message names the
    training step (counted from 1) and, for weights, the parameters."""


class CheckpointError(ValueError):
    """A run cannot resume from its checkpoint folder: the checkpoints are damaged with no
    good one left, or were written with a different configuration."""


def non_finite_parameters(net: torch.nn.Module) -> list[str]:
    """Names of the parameters and buffers of ``net`` holding a NaN or an infinity (one
    device sync for the whole network; :func:`~snn_robust.validation.non_finite_names`)."""
    return non_finite_names([*net.named_parameters(), *net.named_buffers()])


def _check_weight(name: str, value: float) -> float:
    value = float(value)
    if not (value >= 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return value


_check_positive_int = check_positive_int


def _check_clip(value: float | None) -> float | None:
    if value is None:
        return None
    value = float(value)
    if not value > 0:
        raise ValueError(f"clip_norm must be > 0 or None (no clipping), got {value!r}")
    return value


class TrainingStep:
    """One natural BPTT step: code the input with ``coding.encode`` over ``steps`` (T)
    steps, clean loss on the output rates, backward, optional gradient-norm clipping,
    optimizer step.

    Args:
        coding: the input coding, given as a perturbation set (its ``encode`` is used:
            Bernoulli for ``DigitalLinf``, the first frames for ``SpikeL0``, repetition for
            ``DirectLinf``); its eps does not matter here.
        steps: T, the number of coding steps of the clean forward pass (paper: 10).
        clean_loss: see :class:`CleanLoss`.
        clip_norm: clip the gradient's global 2-norm to this value (``None``: no clipping).
        generator: random source of the coding (``None``: torch's global RNG). Its state
            is part of :meth:`state_dict`.

    Inside a ``torch.distributed`` run, the gradients are replaced after ``backward`` by the
    gradient of the mean over all processes' batches (:func:`snn_robust.distributed.average_gradients`,
    weighted by each process's batch size), so no DDP wrapper is needed; the metrics stay
    this process's.

    Calling it with ``(net, optimizer, x, labels)`` returns floats: ``loss``, ``clean_loss``,
    ``clean_acc`` (share of the batch whose highest rate is the label; ties go to the
    lowest class index), ``grad_norm`` (before clipping) and ``lr`` (of the first param
    group). :attr:`step` counts the calls.
    """

    def __init__(
        self,
        coding: Perturbation,
        *,
        steps: int = 10,
        clean_loss: CleanLoss = CleanLoss(),
        clip_norm: float | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        if not isinstance(coding, Perturbation):
            raise TypeError(f"coding must be a Perturbation (DigitalLinf, SpikeL0, DirectLinf), got {type(coding).__name__}")
        if not isinstance(clean_loss, CleanLoss):
            raise TypeError(f"clean_loss must be a CleanLoss, got {type(clean_loss).__name__}")
        self.coding = coding
        self.steps = _check_positive_int("steps", steps)
        self.clean_loss = clean_loss
        self.clip_norm = _check_clip(clip_norm)
        self.generator = generator
        self.step = 0

    def compute_loss(self, net: SpikingNetwork, x: Tensor, labels: Tensor) -> tuple[Tensor, dict[str, Tensor | float]]:
        """The loss to minimise and detached metric tensors (no backward, no step)."""
        rates = net(self.coding.encode(x, self.steps, self.generator))
        clean = self.clean_loss(rates, labels)
        acc = (rates.argmax(1) == labels).float().mean()
        return clean, {"clean_loss": clean.detach(), "clean_acc": acc}

    def __call__(self, net: SpikingNetwork, optimizer: torch.optim.Optimizer, x: Tensor, labels: Tensor) -> dict[str, float]:
        net.train()
        optimizer.zero_grad(set_to_none=True)
        loss, metrics = self.compute_loss(net, x, labels)
        number = self.step + 1  # this step, counted from 1 as in the logs
        loss_value = float(loss.detach())
        # every rank stops together, or the others would wait forever in the all-reduce
        if distributed.any_rank(not math.isfinite(loss_value), loss.device):
            parts = ", ".join(f"{k} {float(v):.4g}" for k, v in metrics.items() if k.endswith("loss"))
            raise NonFiniteError(f"training step {number}: the loss is {loss_value} ({parts}); stopped before the "
                                 "optimizer step (check the data and the learning rate)")
        loss.backward()
        # several processes: the gradient of the global batch mean (snn_robust.distributed)
        distributed.average_gradients([p for group in optimizer.param_groups for p in group["params"]], len(labels))
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if self.clip_norm is not None:
            grad_norm = torch.nn.utils.clip_grad_norm_(params, self.clip_norm)
        elif params:
            grad_norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad.detach()) for p in params]))
        else:
            grad_norm = torch.zeros(())
        if not math.isfinite(float(grad_norm)):
            raise NonFiniteError(f"training step {number}: the gradient norm is {float(grad_norm)}; stopped before "
                                 "the optimizer step (check the data and the learning rate)")
        lr = float(optimizer.param_groups[0]["lr"])
        optimizer.step()
        bad = non_finite_parameters(net)
        if bad:
            raise NonFiniteError(f"training step {number}: non-finite weights after the optimizer step in "
                                 f"{', '.join(bad)} (lr {lr:g}); lower the learning rate. This model must not be saved")
        self.step += 1
        out = {"loss": loss_value}
        out.update({k: float(v) for k, v in metrics.items()})
        out["grad_norm"] = float(grad_norm)
        out["lr"] = lr
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "generator": None if self.generator is None else self.generator.get_state()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.step = int(state["step"])
        if state.get("generator") is not None:
            if self.generator is None:
                raise ValueError("the saved state holds a generator state but this step has no generator; pass generator=")
            self.generator.set_state(state["generator"])


class RobustTrainingStep(TrainingStep):
    """One robust training step (Section 3.3, 4.1): at iteration ``k = self.step``

    ``loss = clean_weight * clean_loss(net(encode(x, T)), y)
    + bound_weight * CE(bound_scale * -[0, lb], y)``

    where ``lb`` are the margin lower bounds (``method``, default CROWN-IBP) over the input
    bounds ``perturbation.with_eps(eps_schedule(k)).bounds(x, T')``; then backward, clip the
    gradient norm to ``clip_norm``, optimizer step. The coding is drawn from ``generator``
    before the input bounds are.

    Args:
        perturbation: the perturbation set; its own eps is replaced by the schedule's.
        eps_schedule: an :class:`EpsSchedule`, or a number for a constant eps.
        steps: T of the clean forward pass (paper: 10).
        bound_steps: T' of the bounds (paper: 3), independent of T.
        method: the training bound, one of :data:`snn_robust.METHODS`.
        clean_weight, bound_weight: the loss weights (paper: 0.4, 0.6).
        clean_weight_start: the kappa schedule of CROWN-IBP (Zhang et al. 2020): the clean
            weight moves linearly from this value to ``clean_weight`` along the eps ramp
            (fraction ``u = eps(k) / final_eps``) and the bound weight is
            ``clean_weight + bound_weight - clean weight``, so the sum stays fixed; ``None``:
            constant weights (the paper).
        bound_scale: factor on the bound logits (paper: 1).
        clean_loss: see :class:`CleanLoss`.
        clip_norm: gradient-norm clip (paper: 0.25; ``None``: none).
        generator: random source of the coding and of the sampled input bounds.

    Returns, besides :class:`TrainingStep`'s metrics: ``bound_loss``, ``verified`` (share of
    the batch with every margin lower bound ``> 0``) and ``eps`` (the eps of this step).
    ``x`` is what the perturbation takes: images ``[B, X...]`` for ``DigitalLinf`` /
    ``DirectLinf``, spikes ``[T, B, X...]`` for ``SpikeL0``.
    """

    def __init__(
        self,
        perturbation: Perturbation,
        eps_schedule: EpsSchedule | float,
        *,
        steps: int = 10,
        bound_steps: int = 3,
        method: Method = "crown-ibp",
        clean_weight: float = 0.4,
        bound_weight: float = 0.6,
        bound_scale: float = 1.0,
        clean_loss: CleanLoss = CleanLoss(),
        clip_norm: float | None = 0.25,
        clean_weight_start: float | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(perturbation, steps=steps, clean_loss=clean_loss, clip_norm=clip_norm, generator=generator)
        if not isinstance(eps_schedule, EpsSchedule):
            eps_schedule = EpsSchedule(float(eps_schedule), ramp_steps=0)
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        self.perturbation = perturbation
        self.eps_schedule = eps_schedule
        self.bound_steps = _check_positive_int("bound_steps", bound_steps)
        self.method = method
        self.clean_weight = _check_weight("clean_weight", clean_weight)
        self.bound_weight = _check_weight("bound_weight", bound_weight)
        if clean_weight_start is not None:
            clean_weight_start = _check_weight("clean_weight_start", clean_weight_start)
            if clean_weight_start > self.clean_weight + self.bound_weight:
                raise ValueError(f"clean_weight_start ({clean_weight_start}) must be <= clean_weight + bound_weight "
                                 f"({self.clean_weight + self.bound_weight}), the fixed sum of the two weights")
        self.clean_weight_start = clean_weight_start
        bound_scale = float(bound_scale)
        if not (bound_scale > 0 and math.isfinite(bound_scale)):
            raise ValueError(f"bound_scale must be a positive number, got {bound_scale!r}")
        self.bound_scale = bound_scale

    @property
    def eps(self) -> float:
        """The eps the next call will use."""
        return self.eps_schedule(self.step)

    def compute_loss(self, net: SpikingNetwork, x: Tensor, labels: Tensor) -> tuple[Tensor, dict[str, Tensor | float]]:
        clean, metrics = super().compute_loss(net, x, labels)
        eps = self.eps
        lower, upper = self.perturbation.with_eps(eps).bounds(x, self.bound_steps, self.generator)
        margins = compute_bounds(net, lower, upper, labels=labels, method=self.method)
        bound = F.cross_entropy(bound_logits(margins, labels) * self.bound_scale, labels)
        metrics["bound_loss"] = bound.detach()
        metrics["verified"] = (margins.detach() > 0).all(dim=1).float().mean()
        metrics["eps"] = eps
        return self._weights(eps)[0] * clean + self._weights(eps)[1] * bound, metrics

    def _weights(self, eps: float) -> tuple[float, float]:
        """(clean, bound) loss weights at this eps (the kappa schedule, see the class doc)."""
        if self.clean_weight_start is None:
            return self.clean_weight, self.bound_weight
        final = self.eps_schedule.final_eps
        u = min(1.0, eps / final) if final > 0 else 1.0
        clean = self.clean_weight_start + (self.clean_weight - self.clean_weight_start) * u
        return clean, self.clean_weight + self.bound_weight - clean

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "eps_schedule": self.eps_schedule.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        if "eps_schedule" in state:
            self.eps_schedule = EpsSchedule.from_state_dict(state["eps_schedule"])


# --------------------------------------------------------------------------------------------
# Randomness, devices and checkpoint files


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` / ``"cuda:N"`` or a ``torch.device``."""
    if isinstance(device, torch.device):
        dev = device
    elif device == "auto":
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    elif isinstance(device, str) and (device == "cpu" or device.split(":")[0] == "cuda"):
        dev = torch.device(device)
    else:
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' (or 'cuda:N') or a torch.device, got {device!r}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was requested but CUDA is not available; use device='cpu' or 'auto'")
    return dev


def capture_rng_state(*generators: torch.Generator | None) -> dict[str, Any]:
    """The global RNG states (torch CPU, every CUDA device if CUDA is initialised, Python
    ``random``, NumPy) and the states of the given generators, in a form
    ``torch.load(weights_only=True)`` reads back."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "generators": [None if g is None else g.get_state() for g in generators],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Mapping[str, Any], *generators: torch.Generator | None) -> None:
    """Inverse of :func:`capture_rng_state` (generators in the same order)."""
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    saved = state.get("generators", [])
    if len(saved) != len(generators):
        raise ValueError(f"the saved RNG state holds {len(saved)} generator states, {len(generators)} generators were given")
    for g, s in zip(generators, saved):
        if g is not None and s is not None:
            g.set_state(s)


def atomic_save(obj: Any, path: str | os.PathLike[str], *, keep_previous: str | os.PathLike[str] | None = None) -> Path:
    """``torch.save`` that never leaves a half-written file at ``path`` and records a SHA-256
    of the content (:func:`snn_robust.fileio.save_checked`; written through the one atomic
    writer :func:`snn_robust.fileio.atomic_write`: temporary file, fsync, ``os.replace``).
    With ``keep_previous``, the file being replaced is kept under that name. ``obj`` must be
    plain data (tensors, numbers, strings, containers) so that :func:`load_checkpoint` reads
    it back without unpickling code."""
    return save_checked(obj, path, keep_previous=keep_previous)


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device | None = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`fit` (or :func:`atomic_save`): its checksum is
    verified and only plain data is rebuilt (``weights_only=True``: no code from the file is
    run). Raises :class:`~snn_robust.fileio.DamagedFileError` for a damaged or hostile file."""
    return load_checked(path, map_location=map_location)


# --------------------------------------------------------------------------------------------
# The ready loop


class EpochBatchSampler(Sampler[list[int]]):
    """Batches of indices in an order that is a pure function of ``(seed, epoch)``, so a run
    resumed mid-epoch sees exactly the batches it had not seen yet.

    ``set_epoch(epoch, start_batch)`` selects the epoch and skips its first ``start_batch``
    batches. The permutation is ``torch.randperm(n)`` from a generator seeded with a hash
    of ``(seed, epoch)`` (identity order with ``shuffle=False``).

    With ``world_size`` > 1 (several processes, :mod:`snn_robust.distributed`) the batches
    are the same global batches of ``batch_size`` and process ``rank`` gets its contiguous
    share of each (:func:`~snn_robust.distributed.shard_range`), so every sample is used
    once per epoch and the order does not depend on the number of processes (a run resumes
    with any number). Each share must be non-empty: every batch, the last one included,
    needs at least ``world_size`` samples.
    """

    def __init__(self, n: int, batch_size: int, *, shuffle: bool = True, seed: int = 0, drop_last: bool = False,
                 rank: int = 0, world_size: int = 1) -> None:
        self.n = _check_positive_int("dataset size", n)
        self.batch_size = _check_positive_int("batch_size", batch_size)
        if drop_last and n < batch_size:
            raise ValueError(f"drop_last=True with {n} samples and batch_size {batch_size} leaves no batch")
        self.world_size = _check_positive_int("world_size", world_size)
        if not isinstance(rank, int) or not 0 <= rank < world_size:
            raise ValueError(f"rank must be an int in 0..{world_size - 1}, got {rank!r}")
        self.rank = rank
        self.shuffle, self.seed, self.drop_last = shuffle, int(seed), drop_last
        self.epoch, self.start_batch = 0, 0
        smallest = min(batch_size, n) if drop_last or n % batch_size == 0 else n % batch_size
        if smallest < world_size:
            raise ValueError(f"a batch of {smallest} samples (dataset size {n}, batch_size {batch_size}, "
                             f"drop_last={drop_last}) cannot be shared by {world_size} processes: use a batch_size "
                             f"that divides {n} or leaves at least {world_size} in the last batch, or drop_last=True")

    @property
    def batches_per_epoch(self) -> int:
        return self.n // self.batch_size if self.drop_last else -(-self.n // self.batch_size)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        if not 0 <= start_batch <= self.batches_per_epoch:
            raise ValueError(f"start_batch must be in 0..{self.batches_per_epoch}, got {start_batch}")
        self.epoch, self.start_batch = int(epoch), int(start_batch)

    def epoch_seed(self, epoch: int) -> int:
        """A 63-bit seed that depends only on ``(seed, epoch)``."""
        digest = hashlib.sha256(f"snn-robust:{self.seed}:{epoch}".encode()).digest()
        return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)

    def order(self, epoch: int) -> Tensor:
        """The permutation of the dataset indices used in ``epoch``."""
        if not self.shuffle:
            return torch.arange(self.n)
        return torch.randperm(self.n, generator=torch.Generator().manual_seed(self.epoch_seed(epoch)))

    def __iter__(self) -> Iterator[list[int]]:
        order = self.order(self.epoch).tolist()
        for b in range(self.start_batch, self.batches_per_epoch):
            batch = order[b * self.batch_size : (b + 1) * self.batch_size]
            if self.world_size > 1:
                start, stop = distributed.shard_range(len(batch), self.rank, self.world_size)
                batch = batch[start:stop]
            yield batch

    def __len__(self) -> int:
        return self.batches_per_epoch - self.start_batch


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
            natural: lr 0.01 -> 0.001 at epoch 55); used by ``lr_schedule="step"``.
        lr_schedule: ``"step"`` (the milestones above, stepped per epoch) or ``"cosine"``
            (per iteration: linear warm-up from 0 over ``warmup_epochs``, then
            ``lr * (1 + cos(pi * k / K)) / 2`` down to 0 at the run's last iteration; a
            one-cycle schedule, which short budgets favour, see :data:`LR_SCHEDULES`).
        clip_norm: gradient-norm clip, ``None`` for none (paper robust: 0.25).
        clean_loss, clean_scale: see :class:`CleanLoss`.
        robust: train with the certified loss (else natural BPTT).
        eps: the eps to certify; training ramps to ``eps * train_eps_factor`` (ANN practice
            trains at 1.33-2x the certified eps); ramp_epochs / hold_epochs /
            eps_start_epoch / eps_shape: the :class:`EpsSchedule`.
        bound_steps: T' of the bounds (paper: 3); method: the training bound.
        clean_weight, bound_weight, clean_weight_start, bound_scale: see
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
    lr_milestones: tuple[int, ...] = (55,)
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
    seed: int = 0
    shuffle: bool = True
    drop_last: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "lr_milestones", tuple(int(m) for m in self.lr_milestones))
        _check_positive_int("epochs", self.epochs)
        _check_positive_int("batch_size", self.batch_size)
        _check_positive_int("steps", self.steps)
        _check_positive_int("bound_steps", self.bound_steps)
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if self.eps_shape not in EPS_SHAPES:
            raise ValueError(f"eps_shape must be one of {EPS_SHAPES}, got {self.eps_shape!r}")
        if self.clean_weight_start is not None:
            _check_weight("clean_weight_start", self.clean_weight_start)
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a finite number > 0, got {self.lr!r}")
        for name in ("ramp_epochs", "hold_epochs", "eps_start_epoch", "warmup_epochs", "train_eps_factor", "eps", "clean_weight", "bound_weight", "weight_decay", "momentum", "lr_gamma"):
            _check_weight(name, getattr(self, name))
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
        the paper's loss weights, clip, T' and clean coding, but the **S-IBP** bound as the
        training bound, **Adam lr 1e-3** (constant), eps ramped linearly to the certified eps
        over 0.5 epoch and held 2.5 epochs (3 epochs). Start from a naturally trained model.

        Measured on MNIST (benchmarks/certified_recipe.py, paper FC model, natural model at
        97.7 %, eps 0.12, one robust epoch on all 60000 images with a 0.4-epoch ramp, first
        500 test images, 2 seeds; docs/results.md section 4): 91.6 % clean, 42.4 % verified
        (S-IBP, T' = 3), EOT-PGD error 48.2 % at eps 0.154 (natural model: 93.8 %). A cosine
        lr schedule (91.7 / 37.0 / 51.9 %), training at 1.5x the certified eps (88.4 / 24.6 /
        73.0 %, one seed), a bound-logit scale of 5 (63.8 / 14.0 / 79.0 %) and a clean-weight
        ramp from 1 (98.0 / 0.0 / 83.2 %) were worse. Earlier measurements: the paper's
        settings (SGD lr 5e-4, CROWN-IBP) verified 0 % at 0.12 after 400 steps, and so did
        Adam with CROWN-IBP.
        """
        base: dict[str, Any] = dict(optimizer="adam", lr=1e-3, method="ibp", ramp_epochs=0.5, hold_epochs=2.5, epochs=3)
        return cls.robust(eps, **{**base, **overrides})

    def eps_schedule(self, steps_per_epoch: int) -> EpsSchedule:
        return EpsSchedule.from_epochs(self.eps * self.train_eps_factor, self.ramp_epochs, self.hold_epochs, steps_per_epoch,
                                       start_epoch=self.eps_start_epoch, shape=self.eps_shape)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["lr_milestones"] = list(self.lr_milestones)
        return d


#: Config fields that may change between a checkpoint and its resumption.
RESUMABLE_CHANGES = ("epochs",)


@dataclass
class FitResult:
    """What :func:`fit` returns; the network is trained in place.

    ``history`` holds ``"epochs"`` (one row per finished epoch) and ``"steps"`` (one row per
    ``log_every`` steps) as lists of dicts; ``completed`` is False when ``max_steps`` stopped
    the run early (resume it with ``resume=True``)."""

    history: dict[str, list[dict[str, Any]]]
    step: int
    epoch: int
    completed: bool
    checkpoint: Path | None


class _Mean:
    """Batch-size-weighted running means of metric floats (checkpointable)."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.weight = 0.0
        self.last: dict[str, float] = {}

    def add(self, metrics: Mapping[str, float], weight: float) -> None:
        for k, v in metrics.items():
            self.sums[k] = self.sums.get(k, 0.0) + v * weight
        self.weight += weight
        self.last = dict(metrics)

    def means(self) -> dict[str, float]:
        return {k: s / self.weight for k, s in self.sums.items()} if self.weight else {}

    def state_dict(self) -> dict[str, Any]:
        return {"sums": dict(self.sums), "weight": self.weight, "last": dict(self.last)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.sums, self.weight, self.last = dict(state["sums"]), float(state["weight"]), dict(state["last"])


_ROW_ORDER = ("epoch", "step", "clean_acc", "clean_loss", "bound_loss", "loss", "verified", "eps", "lr", "grad_norm", "time")


def _row(mean: _Mean, epoch: int, step: int, elapsed: float, extra: Mapping[str, float] | None = None) -> dict[str, Any]:
    values = mean.means()
    # eps and lr are reported as in the last step of the span, not averaged.
    for k in ("eps", "lr"):
        if k in mean.last:
            values[k] = mean.last[k]
    row: dict[str, Any] = {"epoch": epoch, "step": step}
    row.update({k: values[k] for k in _ROW_ORDER if k in values})
    row["time"] = elapsed
    if extra:
        row.update({k: float(v) for k, v in extra.items()})
    return row


class _MetricsLog:
    """One CSV and one JSON-lines file with the same rows. The CSV columns are the first
    row's keys (later extra keys only go to the JSON lines)."""

    def __init__(self, folder: Path, stem: str) -> None:
        self.csv_path = folder / f"{stem}.csv"
        self.jsonl_path = folder / f"{stem}.jsonl"
        self.columns: list[str] | None = None

    def reset(self, rows: list[dict[str, Any]]) -> None:
        self.columns = None
        self.csv_path.write_text("")
        self.jsonl_path.write_text("")
        for row in rows:
            self.append(row)

    def append(self, row: dict[str, Any]) -> None:
        with open(self.jsonl_path, "a") as f:
            f.write(json.dumps(row) + "\n")
        with open(self.csv_path, "a", newline="") as f:
            if self.columns is None:
                self.columns = list(row)
                csv.DictWriter(f, self.columns).writeheader()
            csv.DictWriter(f, self.columns, extrasaction="ignore").writerow(row)


def _environment() -> dict[str, str]:
    from . import __version__

    return {"snn_robust": __version__, "torch": str(torch.__version__), "numpy": str(np.__version__), "python": platform.python_version()}


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


def _make_lr_scheduler(opt: torch.optim.Optimizer, config: "TrainConfig", per_epoch: int) -> torch.optim.lr_scheduler.LRScheduler:
    if config.lr_schedule == "cosine":
        total, warm = config.epochs * per_epoch, int(round(config.warmup_epochs * per_epoch))
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda k: lr_factor(k, total, warm))
    return torch.optim.lr_scheduler.MultiStepLR(opt, milestones=list(config.lr_milestones), gamma=config.lr_gamma)


def _config_mismatch(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    keys = sorted(set(saved) | set(current))
    return [f"{k}: checkpoint {saved.get(k)!r}, now {current.get(k)!r}" for k in keys
            if k not in RESUMABLE_CHANGES and saved.get(k) != current.get(k)]


def _checkpoint_to_resume(path: Path) -> dict[str, Any] | None:
    """The newest usable checkpoint: ``last.pt``, else ``previous.pt`` with a warning (a
    damaged ``last.pt`` is renamed ``last.pt.damaged`` so that the next save does not rotate
    it over the good previous one); ``None`` when neither exists.

    A checkpoint is usable when its checksum holds, it has this format and its weights are
    finite. Raises :class:`CheckpointError` when files exist but none is usable."""
    previous = path.with_name(PREVIOUS_CHECKPOINT_NAME)
    problems: list[str] = []
    for candidate in (path, previous):
        if not candidate.exists():
            continue
        try:
            ck = load_checkpoint(candidate, map_location="cpu")
        except DamagedFileError as exc:
            problems.append(str(exc))
            continue
        if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT or not isinstance(ck.get("model"), dict):
            found = ck.get("format") if isinstance(ck, dict) else type(ck).__name__
            problems.append(f"{candidate} is not a fit checkpoint (format {found!r}, expected {CHECKPOINT_FORMAT})")
            continue
        bad = non_finite_names((k, v) for k, v in ck["model"].items() if torch.is_tensor(v))
        if bad:
            problems.append(f"{candidate} holds non-finite weights in {', '.join(bad)}")
            continue
        if candidate == previous:
            reason = "; ".join(problems) if problems else f"{path} is missing (interrupted while saving)"
            log.warning("resuming from the previous checkpoint %s, one checkpoint interval back: %s", previous, reason)
            if path.exists():
                os.replace(path, path.with_name(path.name + ".damaged"))
        return ck
    if problems:
        raise CheckpointError(f"cannot resume: {'; '.join(problems)}; no good checkpoint is left in {path.parent} "
                              f"(delete {path.name} and {previous.name} there to start over)")
    return None


def _rank_state(ck: Mapping[str, Any], rank: int, world: int, seed: int) -> dict[str, Any]:
    """This rank's training-step and RNG states from a checkpoint: its own when the
    checkpoint was written by as many processes, rank 0's (the main fields) on rank 0; a
    rank the checkpoint did not have starts its coding stream from
    :func:`~snn_robust.distributed.rank_seed` at the saved step (the same data order and
    weights, other random coding draws than an uninterrupted run)."""
    saved = ck.get("ranks")
    if saved is not None and len(saved) == world:
        return saved[rank]
    if rank == 0:
        return {"training_step": ck["training_step"], "rng": ck["rng"]}
    # a generator state fits one device type only, so the new stream is given as a seed
    state = {**ck["training_step"], "generator": None}
    return {"training_step": state, "rng": ck["rng"], "reseed": distributed.rank_seed(seed, rank) ^ int(ck["step"])}


def fit(
    net: SpikingNetwork,
    dataset: Dataset,
    perturbation: Perturbation,
    config: TrainConfig,
    *,
    run_dir: str | os.PathLike[str] | None = None,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    resume: bool = False,
    checkpoint_every: int | None = None,
    log_every: int | None = None,
    max_steps: int | None = None,
    device: str | torch.device = "auto",
    progress: bool = True,
    evaluate: Callable[[SpikingNetwork], Mapping[str, float]] | None = None,
    batch_transform: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]] | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    num_workers: int = 0,
) -> FitResult:
    """Train ``net`` in place on ``dataset`` (items ``(x, label)``), natural or robust per
    ``config``.

    Args:
        net: the network (moved to ``device``).
        dataset: a map-style dataset; batches are drawn by :class:`EpochBatchSampler`, whose
            order depends only on ``(config.seed, epoch)``. Random transforms inside the
            dataset are outside the resumable state.
        perturbation: the input coding and (robust) perturbation set; its eps is replaced by
            the schedule's.
        config: see :class:`TrainConfig`.
        run_dir: writes ``config.json`` (config and versions), ``metrics.csv`` /
            ``metrics.jsonl`` (one row per epoch) and, with ``log_every``, ``steps.csv`` /
            ``steps.jsonl`` (means over each ``log_every`` steps). Columns: ``epoch``,
            ``step``, ``clean_acc`` and ``clean_loss`` (on the training batches), ``loss``,
            robust only: ``bound_loss``, ``verified`` (share of batch samples with all
            margins > 0), ``eps``; then ``lr``, ``grad_norm``, ``time`` (training seconds so
            far, across resumptions) and ``evaluate``'s keys.
        checkpoint_dir: where ``last.pt`` is written atomically (default: ``run_dir``; no
            checkpoints when both are ``None``): at every epoch end, every
            ``checkpoint_every`` steps, and when ``max_steps`` stops the run. It holds the
            model, optimizer, LR scheduler, training step (step counter, eps schedule,
            coding generator), all RNG states, epoch / batch / step counters, the running
            epoch means and the history, as plain data with a SHA-256 (see
            :mod:`snn_robust.fileio`). The checkpoint it replaces is kept as
            ``previous.pt``; temporary files left by a killed save are deleted on start.
        resume: continue from ``checkpoint_dir/last.pt`` if it exists (same weights, eps,
            data order and random streams as a run that never stopped); the config must
            match except for :data:`RESUMABLE_CHANGES`. A damaged, truncated or missing
            ``last.pt`` falls back to ``previous.pt`` with a warning.
        max_steps: stop after this many steps in total (checkpointed; resumable).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``.
        progress: show progress over the steps (a tqdm bar on a terminal, a plain line per
            tenth of the steps otherwise; :func:`snn_robust.progress.progress_bar`).
        evaluate: called with the network (in eval mode) at each epoch end; its floats join
            the epoch row.
        batch_transform: applied to each ``(x, labels)`` batch before it goes to the device,
            e.g. ``lambda x, y: (x.transpose(0, 1), y)`` for spike data stored ``[B, T, ...]``.
        optimizer: use this optimizer instead of the one ``config`` describes.
        num_workers: DataLoader workers.

    Several processes (``torchrun``, or after ``torch.distributed.init_process_group`` in
    your program; :mod:`snn_robust.distributed`): call ``fit`` on every process with the
    same arguments. ``config.batch_size`` is the global batch: each process trains on its
    share of every batch, the gradients are averaged into the global batch's, all processes
    start from rank 0's weights and keep identical ones; only rank 0 writes ``run_dir`` and
    checkpoints and shows progress; metrics are global-batch means. ``resume`` reads rank
    0's checkpoint (sent to the others) and works with any number of processes. ``evaluate``
    runs on every process (see :func:`snn_robust.distributed.shard`).

    Raises:
        NonFiniteError: a loss, gradient norm or weight became NaN or infinite (the message
            names the step); the run stops there and that state is never checkpointed.
        CheckpointError: ``resume`` found checkpoints but none is usable, or they were
            written with another config.
    """
    from .progress import format_row, progress_bar

    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    if isinstance(dataset, DataLoader):
        raise TypeError("fit takes the dataset, not a DataLoader: it draws its own resumable batch order (pass loader.dataset)")
    for name, value in (("checkpoint_every", checkpoint_every), ("log_every", log_every), ("max_steps", max_steps)):
        if value is not None:
            _check_positive_int(name, value)
    dev = resolve_device(device)
    net.to(dev)
    # several processes (snn_robust.distributed): shards of each global batch, averaged
    # gradients, rank 0 alone writes files, logs and progress
    rank, world = distributed.rank(), distributed.world_size()
    main = rank == 0
    distributed.broadcast_module(net)
    run_path = Path(run_dir) if run_dir is not None else None
    ckpt_dir = Path(checkpoint_dir) if checkpoint_dir is not None else run_path
    ckpt_path = ckpt_dir / CHECKPOINT_NAME if ckpt_dir is not None else None

    sampler = EpochBatchSampler(len(dataset), config.batch_size, shuffle=config.shuffle, seed=config.seed,
                                drop_last=config.drop_last, rank=rank, world_size=world)
    per_epoch = sampler.batches_per_epoch
    generator = torch.Generator(device=dev).manual_seed(distributed.rank_seed(config.seed, rank))
    clean_loss = CleanLoss(config.clean_loss, config.clean_scale)
    step_fn: TrainingStep
    if config.robust:
        step_fn = RobustTrainingStep(
            perturbation, config.eps_schedule(per_epoch), steps=config.steps, bound_steps=config.bound_steps,
            method=config.method, clean_weight=config.clean_weight, bound_weight=config.bound_weight,
            bound_scale=config.bound_scale, clean_loss=clean_loss, clip_norm=config.clip_norm, generator=generator,
            clean_weight_start=config.clean_weight_start,
        )
    else:
        step_fn = TrainingStep(perturbation, steps=config.steps, clean_loss=clean_loss, clip_norm=config.clip_norm, generator=generator)
    opt = optimizer if optimizer is not None else _make_optimizer(net, config)
    lr_sched = _make_lr_scheduler(opt, config, per_epoch)
    per_step_lr = config.lr_schedule == "cosine"

    epoch, batch, step, elapsed = 0, 0, 0, 0.0
    history: dict[str, list[dict[str, Any]]] = {"epochs": [], "steps": []}
    epoch_mean, span_mean = _Mean(), _Mean()
    ck = None
    if main:
        try:
            if ckpt_path is not None:
                remove_stale_temporaries(ckpt_path)
            ck = _checkpoint_to_resume(ckpt_path) if resume and ckpt_path is not None else None
        except CheckpointError as exc:  # raised on every rank, none waits for the checkpoint
            ck = exc
    ck = distributed.broadcast_object(ck)  # other ranks need no shared file system
    if isinstance(ck, CheckpointError):
        raise ck
    if ck is not None:
        diff = _config_mismatch(ck["config"], config.to_dict())
        if diff:
            raise CheckpointError(f"cannot resume {ckpt_path} with a different config ({'; '.join(diff)}); "
                                  "use the original config or a new checkpoint_dir")
        if ck["perturbation"] != repr(perturbation):
            raise CheckpointError(f"cannot resume {ckpt_path}: it was trained with {ck['perturbation']}, now {perturbation!r}")
        net.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        lr_sched.load_state_dict(ck["lr_scheduler"])
        own = _rank_state(ck, rank, world, config.seed)
        step_fn.load_state_dict(own["training_step"])
        restore_rng_state(own["rng"])
        if "reseed" in own:
            generator.manual_seed(own["reseed"])
            log.warning("rank %d: the checkpoint was written by %s processes, now %d: this rank's random coding "
                        "stream restarts from a seed (weights, data order and step are exact)", rank,
                        len(ck["ranks"]) if "ranks" in ck else 1, world)
        epoch, batch, step, elapsed = ck["epoch"], ck["batch"], ck["step"], ck["time"]
        history = ck["history"]
        epoch_mean.load_state_dict(ck["epoch_mean"])
        span_mean.load_state_dict(ck["span_mean"])
        log.info("resumed %s at epoch %d, batch %d (step %d)", ckpt_path, epoch, batch, step)
    elif resume:
        log.debug("no checkpoint at %s yet: training from the start", ckpt_path)  # the normal fresh run

    epoch_log = steps_log = None
    if run_path is not None and main:
        run_path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_path / "config.json", json.dumps(
            {"config": config.to_dict(), "perturbation": repr(perturbation), "network": repr(net), "environment": _environment()},
            indent=2))
        epoch_log = _MetricsLog(run_path, "metrics")
        epoch_log.reset(history["epochs"])
        if log_every is not None:
            steps_log = _MetricsLog(run_path, "steps")
            steps_log.reset(history["steps"])

    started = time.perf_counter()

    def now() -> float:
        return elapsed + (time.perf_counter() - started)

    # previous.pt must come from this run: a fresh run's first save drops an older run's
    # previous.pt and does not keep the older last.pt (a fallback must never revive that run)
    keep_previous = {"on": ck is not None}

    def save() -> None:
        if ckpt_path is None:
            return
        bad = non_finite_parameters(net)
        if bad:  # the training step stops first; this guards models changed from outside
            raise NonFiniteError(f"step {step}: refusing to checkpoint non-finite weights in {', '.join(bad)}")
        # each rank's random streams, so that a resume with the same number of processes is exact
        ranks = distributed.gather({"training_step": step_fn.state_dict(), "rng": capture_rng_state()}) if world > 1 else None
        if not main:
            return
        previous = ckpt_path.with_name(PREVIOUS_CHECKPOINT_NAME)
        if not keep_previous["on"]:
            previous.unlink(missing_ok=True)
        atomic_save({
            "format": CHECKPOINT_FORMAT,
            "config": config.to_dict(),
            "perturbation": repr(perturbation),
            "model": net.state_dict(),
            "optimizer": opt.state_dict(),
            "lr_scheduler": lr_sched.state_dict(),
            "training_step": step_fn.state_dict(),
            "rng": capture_rng_state(),
            "epoch": epoch, "batch": batch, "step": step, "time": now(),
            "history": history,
            "epoch_mean": epoch_mean.state_dict(),
            "span_mean": span_mean.state_dict(),
            "environment": _environment(),
            **({"ranks": ranks} if ranks is not None else {}),
        }, ckpt_path, keep_previous=previous if keep_previous["on"] else None)
        keep_previous["on"] = True

    def stop_now() -> bool:
        return max_steps is not None and step >= max_steps

    total = config.epochs * per_epoch
    show_progress = progress and main  # the other ranks show nothing
    bar = progress_bar(total, "robust" if config.robust else "natural", enabled=show_progress, initial=min(step, total))
    completed = False
    try:
        while epoch < config.epochs and not stop_now():
            sampler.set_epoch(epoch, batch)
            # Its own generator, so that opening the loader draws nothing from torch's global RNG
            # (a resumed epoch opens one loader more than an uninterrupted run).
            loader_gen = torch.Generator().manual_seed(sampler.epoch_seed(epoch) ^ 0x5EED)
            loader = DataLoader(dataset, batch_sampler=sampler, num_workers=num_workers, generator=loader_gen)
            for x, y in loader:
                if batch_transform is not None:
                    x, y = batch_transform(x, y)
                x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
                metrics, n_global = distributed.mean_metrics(step_fn(net, opt, x, y), len(y), dev)
                if per_step_lr:
                    lr_sched.step()
                batch += 1
                step += 1
                epoch_mean.add(metrics, n_global)
                span_mean.add(metrics, n_global)
                bar.update(1)
                if show_progress:
                    shown = {k: f"{metrics[k]:.3g}" for k in ("loss", "clean_acc", "verified", "eps") if k in metrics}
                    bar.set_postfix(epoch=epoch, **shown, refresh=False)
                if log_every is not None and step % log_every == 0:
                    row = _row(span_mean, epoch, step, now())
                    history["steps"].append(row)
                    if steps_log is not None:
                        steps_log.append(row)
                    span_mean = _Mean()
                if batch < per_epoch and (stop_now() or (checkpoint_every is not None and step % checkpoint_every == 0)):
                    save()
                    if stop_now():
                        break
            if batch < per_epoch:  # stopped by max_steps inside the epoch
                break
            extra = None
            if evaluate is not None:
                net.eval()
                extra = dict(evaluate(net))
                net.train()
            row = _row(epoch_mean, epoch, step, now(), extra)
            history["epochs"].append(row)
            if epoch_log is not None:
                epoch_log.append(row)
            if main:
                log.info("%s", format_row(row, config.epochs, "robust" if config.robust else "natural"))
            if not per_step_lr:
                lr_sched.step()
            epoch, batch = epoch + 1, 0
            epoch_mean = _Mean()
            save()
        completed = epoch >= config.epochs
    finally:
        bar.close()
    return FitResult(history=history, step=step, epoch=epoch, completed=completed, checkpoint=ckpt_path)
