"""What a dataset's name decides: one :class:`DatasetSpec` per dataset (input shape,
coding, perturbation set and attacks), and loading a dataset by name.

===========  ============  =======================  =================  ==========================
dataset      input shape   coding                   perturbation set   attacks (paper, reference)
===========  ============  =======================  =================  ==========================
``mnist``    1 x 28 x 28   ``rate``: Bernoulli, T   ``DigitalLinf``    spike-compatible, eot-pgd
``fmnist``   1 x 28 x 28   ``rate``: Bernoulli, T   ``DigitalLinf``    spike-compatible, eot-pgd
``nmnist``   2 x 34 x 34   ``spike``: event frames  ``SpikeL0``        spike-compatible, greedy-flip
===========  ============  =======================  =================  ==========================

The specs are plain data: this module imports torch and the data layer only inside the
functions that build objects, so that the command line's parser (:mod:`snn_robust.names`)
and the recipe configs can read them without loading torch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from torch import Tensor

    from .network import SpikingNetwork
    from .perturbations import Perturbation

__all__ = [
    "DatasetSpec",
    "SPECS",
    "attack_errors",
    "attack_names",
    "dataset_spec",
    "load_test_set",
    "load_train_set",
    "make_attack",
    "perturbation_for",
]


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset's fixed choices.

    Attributes:
        name: the name used on the command line and in model files.
        input_shape: one sample's shape ``(C, H, W)`` (the network's ``input_shape``).
        coding: ``"rate"`` (images in ``[0, 1]``, Bernoulli rate coded with T steps, Eq. 4)
            or ``"spike"`` (binary event frames, sample-major ``[N, T, C, H, W]`` in the
            dataset, time-major in the network).
        attacks: attack name -> role, ``"paper"`` (the paper's attack) or ``"reference"``
            (a stronger check), in that order.
    """

    name: str
    input_shape: tuple[int, int, int]
    coding: Literal["rate", "spike"]
    attacks: tuple[tuple[str, str], ...]

    @property
    def events(self) -> bool:
        """Whether samples are event frames (spike coding) rather than images."""
        return self.coding == "spike"

    def perturbation(self, eps: float) -> Perturbation:
        """The perturbation set at budget ``eps``: ``SpikeL0`` (a share of the spike
        elements) for event data, ``DigitalLinf`` (an l_inf ball on the pixels) for images."""
        from .perturbations import DigitalLinf, SpikeL0

        return SpikeL0(eps) if self.events else DigitalLinf(eps)


_IMAGE_ATTACKS = (("spike-compatible", "paper"), ("eot-pgd", "reference"))
SPECS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec("mnist", (1, 28, 28), "rate", _IMAGE_ATTACKS),
    "fmnist": DatasetSpec("fmnist", (1, 28, 28), "rate", _IMAGE_ATTACKS),
    "nmnist": DatasetSpec("nmnist", (2, 34, 34), "spike", (("spike-compatible", "paper"), ("greedy-flip", "reference"))),
}
"""Every dataset snn-robust knows, by name (the ``--dataset`` choices)."""


def dataset_spec(name: str) -> DatasetSpec:
    """The :class:`DatasetSpec` of ``name``; a ``ValueError`` listing the names otherwise."""
    try:
        return SPECS[name]
    except (KeyError, TypeError):
        raise ValueError(f"dataset must be one of {', '.join(SPECS)}, got {name!r}") from None


def perturbation_for(dataset: str, eps: float) -> Perturbation:
    """``SpikeL0`` for event data (N-MNIST), ``DigitalLinf`` for images
    (:meth:`DatasetSpec.perturbation`)."""
    return dataset_spec(dataset).perturbation(eps)


def attack_names(dataset: str) -> dict[str, str]:
    """Attack name -> role (``"paper"`` or ``"reference"``) for a dataset."""
    return dict(dataset_spec(dataset).attacks)


def make_attack(name: str, eps: float, *, dataset: str, arch: str, iters: int, eot_samples: int = 2) -> Any:
    """The attack ``name`` at budget ``eps``. Spike inputs: the paper's per-iteration limit is
    ``eps / 2`` of the elements (FC) or ``eps / 6`` (CONV), Section 4.1."""
    from . import attacks

    if name == "spike-compatible":
        if dataset_spec(dataset).events:
            return attacks.SpikeCompatibleAttack(eps, n_iter=iters, iter_fraction=eps / 2 if arch == "fc" else eps / 6)
        return attacks.SpikeCompatibleDigitalAttack(eps, n_iter=iters)
    if name == "eot-pgd":
        return attacks.EOTPGD(eps, n_iter=iters, samples=eot_samples)
    if name == "greedy-flip":
        return attacks.GreedyFlip(eps, n_iter=iters)
    raise ValueError(f"unknown attack {name!r}; expected spike-compatible, eot-pgd or greedy-flip")


def attack_errors(net: SpikingNetwork, data: tuple[Tensor, Tensor], name: str, eps_list: list[float], *,
                  dataset: str, arch: str, iters: int, eot_samples: int, seeds: tuple[int, ...],
                  batch_size: int, max_samples: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Attack error at each eps (one attack object per eps, so parameters derived from eps
    follow it). Returns ``{"attack", "eps", "errors", "clean"}`` (ErrorResult dicts)."""
    from .evaluate import attack_error

    errors, clean, config = [], None, None
    for e in eps_list:
        atk = make_attack(name, e, dataset=dataset, arch=arch, iters=iters, eot_samples=eot_samples)
        res = attack_error(net, data, atk, [e], seeds=seeds, batch_size=batch_size, max_samples=max_samples,
                           progress=progress)
        errors.append(res.errors[0].to_dict())
        clean = res.clean.to_dict()
        config = res.attack
    return {"attack": config, "eps": [float(e) for e in eps_list], "errors": errors, "clean": clean}


# --------------------------------------------------------------------------------------------
# Loading by name


def _load_split(dataset: str, root: Any, train: bool, verify: bool, steps: int = 10) -> Any:
    from . import data

    if dataset_spec(dataset).events:
        return data.nmnist(root, train=train, steps=steps, verify=verify)
    load = data.mnist if dataset == "mnist" else data.fashion_mnist
    return load(root, train=train, verify=verify)


def load_train_set(dataset: str, n: int | None, root: Any = None, verify: bool = True, seed: int = 0) -> Any:
    """The training set, or a stratified subset of ``n`` samples (seed ``seed``)."""
    from .data import stratified_split

    full = _load_split(dataset, root, True, verify)
    if n is None or n >= len(full):
        return full
    return stratified_split(full, n, seed=seed)[0]


def load_test_set(dataset: str, n: int, root: Any = None, verify: bool = True, seed: int = 0) -> tuple[Tensor, Tensor]:
    """``n`` test samples (stratified, seed ``seed``; all when the split is smaller) as
    tensors: images ``[N, C, H, W]`` or sample-major frames ``[N, T, 2, 34, 34]``, labels ``[N]``."""
    import torch

    from .data import stratified_split

    full = _load_split(dataset, root, False, verify)
    indices = list(range(len(full))) if n >= len(full) else list(stratified_split(full, n, seed=seed)[0].indices)
    if hasattr(full, "tensors"):
        x, y = full.tensors()
        idx = torch.tensor(indices, dtype=torch.long)
        return x[idx], y[idx]
    items = [full[i] for i in indices]
    return torch.stack([it[0] for it in items]), torch.tensor([it[1] for it in items], dtype=torch.long)
