"""Losses and single training steps (Section 3.3, 4.1): :class:`CleanLoss`,
:class:`TrainingStep` (natural BPTT) and :class:`RobustTrainingStep` (clean + certified loss).

Shape glossary: ``T`` clean coding steps, ``T'`` bound steps, ``B`` batch, ``C`` classes,
``X...`` one sample's shape.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import distributed
from ..bounds.api import Method
from ..coding import Coding
from ..bounds.ibp import IBPResult
from ..loss import certified_loss, unstable_penalty
from ..names import check_method
from ..network import SpikingNetwork
from ..perturbations import Perturbation
from ..schedules import EpsSchedule
from ..validation import check_number, check_positive_int, non_finite_names

CLEAN_LOSSES = ("ce", "mse")


DEFAULT_CE_SCALE = 5.0
"""Default factor on the rates in the clean cross-entropy. Measured (MNIST, 784-128-10 FC SNN,
T = 10, paper SGD lr 0.01 momentum 0.9, batch 128, 2 epochs, first 2000 test images;
init seeds 0 / 1): scale 1 (authors' code) 90.6 / 89.9 % test accuracy, 5: 95.2 / 94.8 %,
10: 94.8 / 94.5 %, 20: 82.8 % (too sharp, unstable; seed 0 only), ``"mse"`` against
one-hot: 85.9 % (seed 0 only)."""


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
        check_number("CleanLoss scale", self.scale, 0.0, low_open=True)

    def __call__(self, rates: Tensor, labels: Tensor) -> Tensor:
        if self.kind == "ce":
            return F.cross_entropy(rates * self.scale, labels)
        target = F.one_hot(labels, rates.shape[-1]).to(rates.dtype)
        return F.mse_loss(rates, target)


class NonFiniteError(ValueError):
    """Training produced a NaN or infinite loss, gradient or weight; the message names the
    training step (counted from 1) and, for weights, the parameters."""


def non_finite_parameters(net: torch.nn.Module) -> list[str]:
    """Names of the parameters and buffers of ``net`` holding a NaN or an infinity (one
    device sync for the whole network; :func:`~snn_robust.validation.non_finite_names`)."""
    return non_finite_names([*net.named_parameters(), *net.named_buffers()])


def _check_clip(value: float | None) -> float | None:
    """``clip_norm``: ``None`` (no clipping) or a finite number > 0."""
    return None if value is None else check_number("clip_norm (None: no clipping)", value, 0.0, low_open=True)


class TrainingStep:
    """One natural BPTT step: code the input with ``coding.encode`` over ``steps`` (T)
    steps, clean loss on the output rates, backward, optional gradient-norm clipping,
    optimizer step.

    Args:
        coding: the input coding: a coding object (:mod:`snn_robust.coding`: ``RateCoding(T)``,
            ``SpikeFrames(T)``, ``DirectCoding(T)``), or a perturbation set, which stands for
            its own coding (``perturbation.coding(steps)``: Bernoulli for ``DigitalLinf``, the
            first frames for ``SpikeL0``, repetition for ``DirectLinf``; its eps does not
            matter here, and its input checks, e.g. images in ``[0, 1]``, run on every batch).
        steps: T, the number of coding steps of the clean forward pass (paper: 10); with a
            coding object it is the object's own (``None``, or the same number).
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
        coding: Coding | Perturbation,
        *,
        steps: int | None = None,
        clean_loss: CleanLoss = CleanLoss(),
        clip_norm: float | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        if isinstance(coding, Perturbation):
            self.steps = check_positive_int("steps", 10 if steps is None else steps)
            # encoded through the set: the same draws as its coding's, after the set's input checks
            self.perturbation: Perturbation | None = coding
            self.coding: Coding = coding.coding(self.steps)
        elif isinstance(coding, Coding):
            if steps is not None and steps != coding.steps:
                raise ValueError(f"steps={steps} contradicts the coding's own steps ({coding!r}); leave steps out")
            self.steps = coding.steps
            self.perturbation = None
            self.coding = coding
        else:
            raise TypeError("coding must be a coding object (RateCoding, SpikeFrames, DirectCoding) or a "
                            f"perturbation set (DigitalLinf, SpikeL0, DirectLinf), got {type(coding).__name__}")
        if not isinstance(clean_loss, CleanLoss):
            raise TypeError(f"clean_loss must be a CleanLoss, got {type(clean_loss).__name__}")
        self.clean_loss = clean_loss
        self.clip_norm = _check_clip(clip_norm)
        self.generator = generator
        self.step = 0

    def compute_loss(self, net: SpikingNetwork, x: Tensor, labels: Tensor) -> tuple[Tensor, dict[str, Tensor | float]]:
        """The loss to minimise and detached metric tensors (no backward, no step)."""
        if self.perturbation is not None:
            inputs = self.perturbation.encode(x, self.steps, self.generator)
        else:
            inputs = self.coding.encode(x, self.generator)
        rates = net(inputs)
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
    + bound_weight * CE(bound_scale * -[0, lb], y) + unstable_weight * R``

    where the second term is :func:`~snn_robust.certified_loss` (``lb``: the margin lower
    bounds by ``method``, default S-IBP, over the input bounds
    ``perturbation.with_eps(eps_schedule(k)).bounds(x, T')``); then backward, clip the
    gradient norm to ``clip_norm``, optimizer step. The coding is drawn from ``generator``
    before the input bounds are.

    Args:
        perturbation: the perturbation set; its own eps is replaced by the schedule's.
        eps_schedule: an :class:`EpsSchedule`, or a number for a constant eps.
        steps: T of the clean forward pass (paper: 10).
        bound_steps: T' of the bounds (paper: 3; default 5), independent of T.
        method: the training bound, one of :data:`snn_robust.METHODS` (paper: ``"crown-ibp"``;
            default ``"ibp"``). The defaults of ``bound_steps``, ``method``, ``bound_scale`` and
            ``unstable_weight`` are :func:`~snn_robust.certified_loss`'s, the recommended
            training loss (docs/user-guide.md, "Recommended settings");
            ``TrainConfig.robust`` passes the paper's.
        clean_weight, bound_weight: the loss weights (paper: 0.4, 0.6).
        clean_weight_start: the kappa schedule of CROWN-IBP (Zhang et al. 2020): the clean
            weight moves linearly from this value to ``clean_weight`` along the eps ramp
            (fraction ``u = eps(k) / final_eps``) and the bound weight is
            ``clean_weight + bound_weight - clean weight``, so the sum stays fixed; ``None``:
            constant weights (the paper).
        bound_scale: factor on the bound logits (paper: 1; default 2, see
            :func:`~snn_robust.certified_loss`).
        unstable_weight: weight of the unstable-neuron regulariser ``R`` in the loss
            (:func:`~snn_robust.loss.unstable_penalty`, on the bound pass's own S-IBP
            intervals; 0: none, the paper; default 0.1).
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
        bound_steps: int = 5,
        method: Method = "ibp",
        clean_weight: float = 0.4,
        bound_weight: float = 0.6,
        bound_scale: float = 2.0,
        clean_loss: CleanLoss = CleanLoss(),
        clip_norm: float | None = 0.25,
        clean_weight_start: float | None = None,
        unstable_weight: float = 0.1,
        generator: torch.Generator | None = None,
    ) -> None:
        if not isinstance(perturbation, Perturbation):  # a bare coding has no bounds to train against
            raise TypeError(f"perturbation must be a Perturbation (DigitalLinf, SpikeL0, DirectLinf), got {type(perturbation).__name__}")
        super().__init__(perturbation, steps=steps, clean_loss=clean_loss, clip_norm=clip_norm, generator=generator)
        if not isinstance(eps_schedule, EpsSchedule):
            eps_schedule = EpsSchedule(float(eps_schedule), ramp_steps=0)
        check_method(method)
        self.eps_schedule = eps_schedule
        self.bound_steps = check_positive_int("bound_steps", bound_steps)
        self.method = method
        self.clean_weight = check_number("clean_weight", clean_weight, 0.0)
        self.bound_weight = check_number("bound_weight", bound_weight, 0.0)
        if clean_weight_start is not None:
            clean_weight_start = check_number("clean_weight_start", clean_weight_start, 0.0)
            if clean_weight_start > self.clean_weight + self.bound_weight:
                raise ValueError(f"clean_weight_start ({clean_weight_start}) must be <= clean_weight + bound_weight "
                                 f"({self.clean_weight + self.bound_weight}), the fixed sum of the two weights")
        self.clean_weight_start = clean_weight_start
        self.bound_scale = check_number("bound_scale", bound_scale, 0.0, low_open=True)
        self.unstable_weight = check_number("unstable_weight", unstable_weight, 0.0)

    @property
    def eps(self) -> float:
        """The eps the next call will use."""
        return self.eps_schedule(self.step)

    def compute_loss(self, net: SpikingNetwork, x: Tensor, labels: Tensor) -> tuple[Tensor, dict[str, Tensor | float]]:
        clean, metrics = super().compute_loss(net, x, labels)
        eps = self.eps
        passes: list[IBPResult] = []
        bound, margins = certified_loss(net, x, labels, self.perturbation.with_eps(eps), self.bound_steps, self.method,
                                        self.generator, bound_scale=self.bound_scale, return_margins=True,
                                        unstable_weight=0.0,  # added below, on its own, as a metric too
                                        ibp_sink=passes if self.unstable_weight else None)
        metrics["bound_loss"] = bound.detach()
        metrics["verified"] = (margins.detach() > 0).all(dim=1).float().mean()
        metrics["eps"] = eps
        loss = self._weights(eps)[0] * clean + self._weights(eps)[1] * bound
        if self.unstable_weight:
            penalty = unstable_penalty(net, passes[0]).mean()
            metrics["unstable_penalty"] = penalty.detach()
            loss = loss + self.unstable_weight * penalty
        return loss, metrics

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
