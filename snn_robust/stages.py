"""The training stage shared by ``snn-robust train`` / ``robust-train`` and the recipes:
train a paper network on a dataset given by name and write its model file."""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .coding import time_major
from .datasets import dataset_spec
from .modelfile import save_model
from .training import TrainConfig, fit

if TYPE_CHECKING:
    import torch
    from torch import Tensor

    from .network import SpikingNetwork

__all__ = ["train_and_save"]


def _time_major(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    return time_major(x), y


def train_and_save(out: str | os.PathLike[str], net: SpikingNetwork, *, arch: str, dataset: str, train_set: Any,
                   config: TrainConfig, run_dir: str | os.PathLike[str], device: torch.device | str = "cpu",
                   progress: bool = True, log_points: int = 50, **meta: Any) -> Path:
    """Train ``net`` in place with :func:`snn_robust.training.fit` (natural or robust per
    ``config``, resuming from ``run_dir``'s checkpoint) on ``train_set`` of ``dataset``, then
    write it to the model file ``out`` (:func:`snn_robust.modelfile.save_model`, with the
    training config, the perturbation set and ``meta``).

    The perturbation set is the dataset's at ``config.eps`` (:meth:`DatasetSpec.perturbation`;
    0 for natural training, where it only names the input coding); event datasets' batches
    are made time-major. About ``log_points`` metric rows are logged over the run."""
    spec = dataset_spec(dataset)
    perturbation = spec.perturbation(config.eps)
    steps = config.epochs * math.ceil(len(train_set) / config.batch_size)
    fit(net, train_set, perturbation, config, run_dir=run_dir, resume=True, device=device, progress=progress,
        log_every=max(1, steps // max(1, log_points)), batch_transform=_time_major if spec.events else None)
    return save_model(out, net, arch=arch, dataset=dataset, train_config=config.to_dict(), perturbation=repr(perturbation),
                      **meta)
