"""What an evaluation counts: strict correctness of output rates, and error rates over seeds.

Shape glossary: ``B`` batch, ``C`` classes.

A sample is correct only when the label's rate is larger than every other rate
(``rate[y] > rate[j]`` for all ``j != y``); ties, e.g. a silent output layer, are errors.
This is what a margin lower bound ``> 0`` certifies, so a verified sample is always correct.
The attacks (early stopping, success checks) and the evaluation (:mod:`snn_robust.evaluate`,
:mod:`snn_robust.certificates`) share this one rule and the result records below.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

__all__ = ["is_correct", "label_and_runner_up", "ErrorResult", "AttackResult", "summarize"]


def label_and_runner_up(rates: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """``(rates[b, y_b], max_{j != y_b} rates[b, j])``, each ``[B]``."""
    ry = rates.gather(1, labels[:, None]).squeeze(1)
    others = rates.scatter(1, labels[:, None], float("-inf"))
    return ry, others.amax(1)


def is_correct(rates: Tensor, labels: Tensor) -> Tensor:
    """``[B]`` bool: ``rates[b, y_b] > rates[b, j]`` for every ``j != y_b`` (ties are errors)."""
    ry, runner_up = label_and_runner_up(rates, labels)
    return ry > runner_up


@dataclass
class ErrorResult:
    """An error rate over seeds.

    ``error``: mean over seeds of the share of samples counted as errors; ``std``: sample
    standard deviation over seeds (0 for one seed); ``per_seed``: each seed's error;
    ``seeds``: the seeds used (empty when the evaluation involves no randomness);
    ``num_samples``: samples evaluated; ``details``: what was measured and how."""

    error: float
    std: float
    per_seed: list[float]
    seeds: list[int]
    num_samples: int
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class AttackResult:
    """Attack error per budget: ``errors[i]`` is the result at ``eps[i]``; ``clean`` the
    clean error measured on the same evaluation encodings; ``attack`` the attack's name and
    parameters except its eps (the budgets are ``eps``)."""

    attack: dict[str, Any]
    clean: ErrorResult
    eps: list[float]
    errors: list[ErrorResult]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def summarize(per_seed: list[float], seeds: list[int], n: int, details: dict[str, Any]) -> ErrorResult:
    """An :class:`ErrorResult` from each seed's error: their mean and sample standard deviation."""
    t = torch.tensor(per_seed, dtype=torch.float64)
    std = float(t.std(unbiased=True)) if len(per_seed) > 1 else 0.0
    return ErrorResult(float(t.mean()), std, [float(e) for e in per_seed], [int(s) for s in seeds], n, details)
