"""Evaluation: clean error, attack error and certified (verified) error of a spiking network.

Shape glossary: ``N`` samples, ``B`` batch, ``T`` time steps, ``X...`` one sample's input
shape, ``C`` classes.

Data are given as a pair of tensors ``(inputs [N, ...], labels [N])`` or as an iterable of
``(inputs, labels)`` batches (a ``DataLoader``); they are batched internally. What the
inputs are depends on the coding (an :mod:`snn_robust.coding` object, or its name):

* ``RateCoding`` / ``"rate"``: images ``[N, X...]`` in ``[0, 1]``, Bernoulli rate coded with
  ``time_steps`` steps at evaluation (fresh samples per seed);
* ``SpikeFrames`` / ``"spike"``: binary spike trains, *sample-major* ``[N, T, X...]`` as
  datasets and ``DataLoader`` batches hold them (e.g. N-MNIST frames); turned time-major
  once per batch (:meth:`Coding.batch <snn_robust.coding.Coding.batch>`);
* ``DirectCoding`` / ``"direct"``: analog images ``[N, X...]`` fed as current at every step.

Correctness is strict (:func:`snn_robust.metrics.is_correct`): ties, e.g. a silent output
layer, are errors, so a verified sample is always correct.

Rate-coded results are averaged over ``seeds``: each seed fixes the attack's randomness
and, separately, the evaluation encodings; results report the mean, the sample standard
deviation over seeds and every seed's value. All results are dataclasses whose
``to_dict()`` is JSON-serialisable.
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Iterator, Sequence

import torch
from torch import Tensor

from .bounds.api import Method, compute_bounds
from .attacks.common import Attack
from .coding import Coding, as_coding
from .metrics import AttackResult, ErrorResult, is_correct, summarize
from .network import SpikingNetwork
from .perturbations import Perturbation
from .progress import progress_bar
from .validation import check_positive_int

__all__ = [
    "ErrorResult",
    "AttackResult",
    "is_correct",
    "clean_error",
    "attack_error",
    "certified_error",
    "certified_boxes",
]

# -- data and seeds ---------------------------------------------------------------------
def _is_tensor_pair(data: Any) -> bool:
    return isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(d, Tensor) for d in data)


def _num_batches(data: Any, batch_size: int, max_samples: int | None) -> int | None:
    if _is_tensor_pair(data):
        n = data[0].shape[0] if max_samples is None else min(max_samples, data[0].shape[0])
        return math.ceil(n / batch_size)
    if max_samples is None and hasattr(data, "__len__"):
        return len(data)
    return None


def _total(data: Any, batch_size: int, max_samples: int | None, repeats: int) -> int | None:
    per = _num_batches(data, batch_size, max_samples)
    return None if per is None else per * repeats


def _batches(
    data: Any, batch_size: int, max_samples: int | None, device: torch.device, coding: Coding | None = None
) -> Iterator[tuple[Tensor, Tensor]]:
    """``(inputs, labels)`` batches on ``device``, at most ``max_samples`` samples in all;
    with a ``coding``, the inputs as its ``encode`` takes them (``coding.batch``)."""
    if _is_tensor_pair(data):
        inputs, labels = data
        if inputs.shape[0] != labels.shape[0]:
            raise ValueError(f"got {inputs.shape[0]} inputs but {labels.shape[0]} labels")
        n = inputs.shape[0] if max_samples is None else min(max_samples, inputs.shape[0])
        source: Iterable = ((inputs[i:i + batch_size], labels[i:i + batch_size]) for i in range(0, n, batch_size))
    elif isinstance(data, Iterable):
        source = data
    else:
        raise TypeError(
            "data must be a pair of tensors (inputs [N, ...], labels [N]) or an iterable of (inputs, labels) "
            f"batches, got {type(data).__name__}"
        )
    seen = 0
    for batch in source:
        if not (isinstance(batch, (tuple, list)) and len(batch) >= 2):
            raise TypeError("every batch must be an (inputs, labels) pair")
        x, y = batch[0], batch[1]
        if max_samples is not None:
            if seen >= max_samples:
                return
            x, y = x[: max_samples - seen], y[: max_samples - seen]
        seen += x.shape[0]
        x = x.to(device)
        if not x.is_floating_point():
            x = x.to(torch.get_default_dtype())
        yield (x if coding is None else coding.batch(x)), torch.as_tensor(y, device=device).long()


def _device(net: SpikingNetwork) -> torch.device:
    p = next(net.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _generators(seed: int, device: torch.device, count: int) -> list[torch.Generator]:
    """``count`` independent generators derived from ``seed`` (attack, clean encodings,
    adversarial encodings, ...), so that one stream's use never shifts another's."""
    root = torch.Generator().manual_seed(int(seed))
    seeds = torch.randint(0, 2**62, (count,), generator=root).tolist()
    return [torch.Generator(device=device).manual_seed(s) for s in seeds]


def _check_net(net: SpikingNetwork, coding: Coding) -> None:
    if not isinstance(net, SpikingNetwork):
        raise TypeError(f"expected a SpikingNetwork, got {type(net).__name__}")
    coding.check_network(net)


def _coding_details(coding: Coding, eval_samples: int) -> dict[str, Any]:
    # spike frames without a step count use every frame of the data: no T to record
    return {"coding": coding.name, "time_steps": coding.steps, "eval_samples": eval_samples}


def _progress(progress: bool, total: int | None, desc: str) -> Any:
    """A bar over batches on a terminal, plain lines in a log (:func:`.progress.progress_bar`)."""
    return progress_bar(total, desc, enabled=progress, unit="batch", leave=False)


# -- clean error ------------------------------------------------------------------------
def _wrong_clean(
    net: SpikingNetwork, x: Tensor, y: Tensor, coding: Coding, gen: torch.Generator | None, eval_samples: int
) -> Tensor:
    """``[eval_samples, B]`` bool: misclassified under each evaluation encoding."""
    return torch.stack([~is_correct(net(coding.encode(x, gen)), y) for _ in range(eval_samples)])


@torch.no_grad()
def clean_error(
    net: SpikingNetwork,
    data: Any,
    *,
    coding: Coding | str = "rate",
    time_steps: int = 10,
    seeds: Sequence[int] = (0, 1, 2),
    eval_samples: int = 1,
    batch_size: int = 256,
    max_samples: int | None = None,
    progress: bool = True,
) -> ErrorResult:
    """Share of samples misclassified on clean inputs.

    ``coding``: a :class:`~snn_robust.coding.Coding`, or its name (``"rate"``, ``"spike"``,
    ``"direct"``) with ``time_steps`` steps. For rate coding each seed draws fresh Bernoulli
    encodings (``eval_samples`` encodings per sample, their errors averaged); the encodings
    are the same as the clean encodings :func:`attack_error` uses for that seed. For spike
    frames and direct coding the evaluation is deterministic and runs once (``seeds`` is
    ignored).
    """
    coding = as_coding(coding, time_steps)
    _check_net(net, coding)
    check_positive_int("batch_size", batch_size)
    device = _device(net)
    run_seeds = list(seeds) if coding.random else []
    per_seed, n = [], 0
    bar = _progress(progress, _total(data, batch_size, max_samples, max(1, len(run_seeds))), "clean error")
    for seed in run_seeds or [None]:
        gen = _generators(seed, device, 3)[1] if seed is not None else None
        wrong, n = 0.0, 0
        for x, y in _batches(data, batch_size, max_samples, device, coding):
            wrong += _wrong_clean(net, x, y, coding, gen, eval_samples).float().mean(0).sum().item()
            n += y.shape[0]
            bar.update()
        per_seed.append(wrong / max(n, 1))
    bar.close()
    return summarize(per_seed, run_seeds, n, _coding_details(coding, eval_samples))


# -- attack error -----------------------------------------------------------------------
def attack_error(
    net: SpikingNetwork,
    data: Any,
    attack: "Attack",
    eps: Sequence[float],
    *,
    time_steps: int = 10,
    seeds: Sequence[int] = (0, 1, 2),
    eval_samples: int = 1,
    batch_size: int = 256,
    max_samples: int | None = None,
    progress: bool = True,
) -> AttackResult:
    """Share of samples misclassified after the attack, for every budget in ``eps``.

    ``attack.with_eps(e)`` is run on every batch for each ``e`` and seed. A sample counts as
    an error when its clean input or its adversarial input is misclassified, so the attack
    error is never below the clean error of the same encodings. Clean and adversarial inputs
    reach the network through ``attack.coding(net, time_steps)``.

    * Digital attacks (``attack.input_kind == "digital"``; images, rate coded): the
      adversarial *image* is re-encoded with fresh Bernoulli samples (a generator separate
      from the attack's) with ``time_steps`` steps, the model's T; with ``eval_samples > 1``
      the error is averaged over that many encodings per sample (the clean side pairs
      encoding ``j`` with adversarial encoding ``j``).
    * Spike attacks (``input_kind == "spike"``; data sample-major ``[N, T, X...]``): the
      network is deterministic, so the returned spike train is scored exactly; seeds only
      vary the attack's own randomness.
    """
    check_positive_int("batch_size", batch_size)
    if not isinstance(attack, Attack):
        raise TypeError(f"attack must be an snn_robust.attacks.Attack, got {attack!r}")
    coding = attack.coding(net, time_steps)
    _check_net(net, coding)
    device = _device(net)
    eps = [float(e) for e in eps]
    seeds = list(seeds)
    if not seeds:
        raise ValueError("attack_error needs at least one seed")
    total = _total(data, batch_size, max_samples, len(seeds) * len(eps))
    bar = _progress(progress, total, f"attack {type(attack).__name__}")
    clean_per_seed: dict[int, float] = {}
    results, n = [], 0
    for e in eps:
        atk = attack.with_eps(e)
        per_seed = []
        for seed in seeds:
            attack_gen, clean_gen, adv_gen = _generators(seed, device, 3)
            wrong_clean_sum = wrong_sum = 0.0
            n = 0
            for x, y in _batches(data, batch_size, max_samples, device, coding):
                x_adv = atk.attack(net, x, y, attack_gen)
                with torch.no_grad():
                    reps = eval_samples if coding.random else 1
                    wrong_clean = _wrong_clean(net, x, y, coding, clean_gen, reps)
                    wrong_adv = _wrong_clean(net, x_adv, y, coding, adv_gen, reps)
                wrong_clean_sum += wrong_clean.float().mean(0).sum().item()
                wrong_sum += (wrong_clean | wrong_adv).float().mean(0).sum().item()
                n += y.shape[0]
                bar.update()
            per_seed.append(wrong_sum / max(n, 1))
            clean_per_seed[seed] = wrong_clean_sum / max(n, 1)
        results.append(summarize(per_seed, seeds, n, {"eps": e}))
    bar.close()
    random_eval = coding.random
    clean = summarize(
        [clean_per_seed[s] for s in seeds] if random_eval else [clean_per_seed[seeds[0]]],
        seeds if random_eval else [],
        n,
        _coding_details(coding, eval_samples if random_eval else 1),
    )
    # The attack passed in is a template: every budget in ``eps`` replaced its own eps, so the
    # record keeps its other parameters only (an 'eps' here would name a budget not run alone).
    config = {k: v for k, v in attack.config().items() if k != "eps"}
    return AttackResult(config, clean, eps, results)


# -- certified error --------------------------------------------------------------------
def certified_error(
    net: SpikingNetwork,
    data: Any,
    perturbation: Perturbation,
    steps: int = 10,
    method: Method = "best",
    *,
    seeds: Sequence[int] = (0, 1, 2),
    batch_size: int = 128,
    max_samples: int | None = None,
    progress: bool = True,
) -> ErrorResult:
    """Verified error: share of samples NOT verified for sampled input bounds.

    For each seed the perturbation's input bounds are sampled with ``steps`` steps (the
    paper's T') and bounded with :func:`~snn_robust.compute_bounds`; a sample is verified
    when every margin lower bound ``rate[y] - rate[j]`` is ``> 0``. A misclassified sample is
    never verified (its clean input lies in its bounds), so this is the standard verified
    error and is never below the clean error of the same encodings.

    Inputs: images ``[N, X...]`` for :class:`~snn_robust.DigitalLinf` and
    :class:`~snn_robust.DirectLinf`, sample-major spike trains ``[N, T, X...]`` for
    :class:`~snn_robust.SpikeL0`. What is certified is the sampled Bernoulli maps / l_0
    picks, not the whole ball (Section 3.2); ``DirectLinf`` bounds are deterministic and run
    once (``seeds`` ignored).
    """
    per_seed, n = [], 0
    _check_perturbation(perturbation)
    run_seeds = list(seeds) if perturbation.sampled else []
    # built (and so validated) before the bar; each draws its batches only when iterated
    streams = [certified_boxes(net, data, perturbation, steps, seed, batch_size=batch_size, max_samples=max_samples)
               for seed in run_seeds or [None]]
    bar = _progress(progress, _total(data, batch_size, max_samples, max(1, len(run_seeds))), "certified error")
    for boxes in streams:
        unverified, n = 0, 0
        for lower, upper, y in boxes:
            with torch.no_grad():
                margins = compute_bounds(net, lower, upper, labels=y, method=method)
            unverified += int((~(margins > 0).all(1)).sum())
            n += y.shape[0]
            bar.update()
        per_seed.append(unverified / max(n, 1))
    bar.close()
    details = {"perturbation": type(perturbation).__name__, "eps": float(perturbation.eps), "steps": steps,
               "method": method}
    return summarize(per_seed, run_seeds, n, details)


def _check_perturbation(perturbation: Any) -> None:
    if not isinstance(perturbation, Perturbation):
        raise TypeError(f"perturbation must be an snn_robust Perturbation, got {type(perturbation).__name__}")


def certified_boxes(
    net: SpikingNetwork,
    data: Any,
    perturbation: Perturbation,
    steps: int = 10,
    seed: int | None = 0,
    *,
    batch_size: int = 128,
    max_samples: int | None = None,
) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
    """The input boxes :func:`certified_error` bounds for one coding ``seed``: ``(lower,
    upper, labels)`` batch by batch, ``lower`` / ``upper`` ``[T', B, ...]`` on ``net``'s device.

    The same draws, in the same order, as ``certified_error(..., seeds=(seed,),
    batch_size=batch_size)``, so another verifier (a longer MILP, an external tool) can be
    run on exactly the boxes a reported certified error was computed on. ``seed`` is
    ignored (``None`` allowed) for a deterministic perturbation (:class:`~snn_robust.DirectLinf`).
    Bad arguments raise here, not at the first batch."""
    _check_perturbation(perturbation)
    check_positive_int("batch_size", batch_size)
    coding = perturbation.coding(steps)
    _check_net(net, coding)
    device = _device(net)
    # the fourth of the seed's streams: clean_error and attack_error use the first three
    gen = _generators(seed, device, 4)[3] if perturbation.sampled and seed is not None else None

    def draw() -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        for x, y in _batches(data, batch_size, max_samples, device, coding):
            lower, upper = perturbation.bounds(x, steps, gen)
            yield lower, upper, y

    return draw()
