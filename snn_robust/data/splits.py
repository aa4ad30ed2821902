"""Splits of a dataset (e.g. a class-balanced held-out set carved from Train)."""
from __future__ import annotations

import torch
from torch.utils.data import Dataset, Subset

__all__ = ["stratified_split"]


def _labels_of(dataset: Dataset) -> torch.Tensor:
    """Labels of a dataset: its ``targets`` (through ``Subset`` indices), else by iterating."""
    if isinstance(dataset, Subset):
        return _labels_of(dataset.dataset)[torch.as_tensor(list(dataset.indices), dtype=torch.long)]
    targets = getattr(dataset, "targets", None)
    if targets is not None:
        return torch.as_tensor(targets, dtype=torch.long)
    return torch.tensor([int(dataset[i][1]) for i in range(len(dataset))], dtype=torch.long)  # type: ignore[arg-type]


def stratified_split(dataset: Dataset, n: int, seed: int = 0) -> tuple[Subset, Subset]:
    """Split off ``n`` samples with the class proportions of ``dataset``; return ``(part, rest)``.

    Per class ``c`` with ``m_c`` of the ``M`` samples, ``part`` takes ``floor(n * m_c / M)``
    samples, and the remaining ones go to the classes with the largest fractional parts (ties
    to the smaller label). Which samples are taken is a random choice from ``seed``
    (``torch.Generator``), so the split is reproducible. Indices in both subsets are sorted.

    Raises:
        ValueError: ``n`` not in ``0..len(dataset)``.
    """
    labels = _labels_of(dataset)
    total = int(labels.numel())
    if not 0 <= n <= total:
        raise ValueError(f"n must be in 0..{total} (the dataset size), got {n}")
    classes, counts = torch.unique(labels, return_counts=True)
    exact = counts.double() * n / max(total, 1)
    take = exact.floor().long()
    remainder = n - int(take.sum())
    if remainder:
        order = sorted(range(len(classes)), key=lambda i: (-(exact[i] - take[i]).item(), int(classes[i])))
        for i in order[:remainder]:
            take[i] += 1
    gen = torch.Generator().manual_seed(int(seed))
    chosen: list[torch.Tensor] = []
    for c, k in zip(classes.tolist(), take.tolist()):
        idx = torch.nonzero(labels == c, as_tuple=False).flatten()
        chosen.append(idx[torch.randperm(idx.numel(), generator=gen)[:k]])
    part = torch.cat(chosen).sort().values if chosen else torch.empty(0, dtype=torch.long)
    mask = torch.ones(total, dtype=torch.bool)
    mask[part] = False
    rest = torch.nonzero(mask, as_tuple=False).flatten()
    return Subset(dataset, part.tolist()), Subset(dataset, rest.tolist())
