"""The paper's model zoo (Table 1): ``FC`` X-FC512-FC256-FC10 and ``CONV``
X-C64K3S2-C128K3S2-FC256-FC10, LIF neurons with ``alpha = th = 0.25``, hard reset."""
from __future__ import annotations

import math
from typing import Literal

from torch import nn

from .datasets import SPECS
from .network import SpikingNetwork
from .neuron import LIF

__all__ = ["INPUT_SHAPES", "paper_model"]

#: One sample's shape per dataset (:data:`snn_robust.datasets.SPECS`).
INPUT_SHAPES: dict[str, tuple[int, ...]] = {name: spec.input_shape for name, spec in SPECS.items()}


def _lif(alpha: float, threshold: float) -> LIF:
    return LIF(alpha=alpha, threshold=threshold, reset="zero", firing=">")


def paper_model(
    arch: Literal["fc", "conv"],
    dataset: str = "mnist",
    num_classes: int = 10,
    alpha: float = 0.25,
    threshold: float = 0.25,
) -> SpikingNetwork:
    """The paper's FC or CONV network for a dataset's input shape (recorded as the
    network's ``input_shape``, so inputs without a time dimension are refused)."""
    if dataset not in INPUT_SHAPES:
        raise ValueError(f"dataset must be one of {sorted(INPUT_SHAPES)}, got {dataset!r}")
    c, h, w = INPUT_SHAPES[dataset]
    if arch == "fc":
        layers = [
            nn.Flatten(),
            nn.Linear(c * h * w, 512), _lif(alpha, threshold),
            nn.Linear(512, 256), _lif(alpha, threshold),
            nn.Linear(256, num_classes), _lif(alpha, threshold),
        ]
    elif arch == "conv":
        h2, w2 = math.ceil(math.ceil(h / 2) / 2), math.ceil(math.ceil(w / 2) / 2)
        layers = [
            nn.Conv2d(c, 64, 3, 2, 1), _lif(alpha, threshold),
            nn.Conv2d(64, 128, 3, 2, 1), _lif(alpha, threshold),
            nn.Flatten(),
            nn.Linear(128 * h2 * w2, 256), _lif(alpha, threshold),
            nn.Linear(256, num_classes), _lif(alpha, threshold),
        ]
    else:
        raise ValueError(f"arch must be 'fc' or 'conv', got {arch!r}")
    return SpikingNetwork(layers, input_shape=(c, h, w))
