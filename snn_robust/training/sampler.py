"""The resumable epoch batch order of :func:`~snn_robust.training.fit`."""
from __future__ import annotations

import hashlib
from typing import Iterator

import torch
from torch import Tensor
from torch.utils.data import Sampler

from .. import distributed
from ..validation import check_positive_int

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
        self.n = check_positive_int("dataset size", n)
        self.batch_size = check_positive_int("batch_size", batch_size)
        if drop_last and n < batch_size:
            raise ValueError(f"drop_last=True with {n} samples and batch_size {batch_size} leaves no batch")
        self.world_size = check_positive_int("world_size", world_size)
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
