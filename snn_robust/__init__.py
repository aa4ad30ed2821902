"""snn-robust: certified bounds (S-IBP, S-CROWN) and robust training for spiking networks."""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: Public name -> the submodule defining it. Names are imported on first use (PEP 562
#: ``__getattr__``), so ``import snn_robust`` and ``snn-robust --help`` do not load torch and
#: the frameworks (seconds on a busy CPU); ``sr.compute_bounds`` or ``from snn_robust import
#: LIF`` work as with eager imports. A new public name goes here and into ``__all__``.
_EXPORTS: dict[str, str] = {
    "from_snntorch": "adapters", "from_spikingjelly": "adapters",
    "EOTPGD": "attacks", "GreedyFlip": "attacks", "SpikeCompatibleAttack": "attacks",
    "SpikeCompatibleDigitalAttack": "attacks",
    "METHODS": "bounds", "compute_bounds": "bounds", "margin_spec": "bounds",
    "CodingCertificate": "certificates", "certify_over_codings": "certificates",
    "clopper_pearson_lower": "certificates", "event_l0_bounds": "certificates",
    "UnsupportedLayerError": "errors",
    "attack_error": "evaluate", "certified_error": "evaluate", "clean_error": "evaluate",
    "bound_logits": "loss", "certified_loss": "loss",
    "paper_model": "models",
    "SpikingNetwork": "network",
    "LIF": "neuron", "Rectangular": "neuron",
    "DigitalLinf": "perturbations", "DirectLinf": "perturbations", "Perturbation": "perturbations",
    "SpikeL0": "perturbations", "bernoulli_encode": "perturbations",
    "EpsSchedule": "schedules",
    "CleanLoss": "training", "RobustTrainingStep": "training", "TrainConfig": "training",
    "TrainingStep": "training", "fit": "training",
}

__all__ = [
    "EOTPGD",
    "CleanLoss",
    "CodingCertificate",
    "EpsSchedule",
    "GreedyFlip",
    "RobustTrainingStep",
    "SpikeCompatibleAttack",
    "SpikeCompatibleDigitalAttack",
    "TrainConfig",
    "TrainingStep",
    "attack_error",
    "certified_error",
    "clean_error",
    "fit",
    "paper_model",
    "LIF",
    "METHODS",
    "DigitalLinf",
    "DirectLinf",
    "Perturbation",
    "Rectangular",
    "SpikeL0",
    "SpikingNetwork",
    "UnsupportedLayerError",
    "bernoulli_encode",
    "bound_logits",
    "certified_loss",
    "certify_over_codings",
    "clopper_pearson_lower",
    "compute_bounds",
    "event_l0_bounds",
    "from_snntorch",
    "from_spikingjelly",
    "margin_spec",
]



def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'snn_robust' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
