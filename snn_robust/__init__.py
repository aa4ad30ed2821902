"""snn-robust: certified bounds (S-IBP, S-CROWN) and robust training for spiking networks."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from pathlib import Path
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
    "METHODS": "bounds", "compute_bounds": "bounds", "margin_spec": "bounds", "use_ieee_float32": "bounds",
    "CodingCertificate": "certificates", "certify_over_codings": "certificates",
    "DirectCoding": "coding", "RateCoding": "coding", "SpikeFrames": "coding", "bernoulli_encode": "coding",
    "clopper_pearson_lower": "certificates", "event_l0_bounds": "certificates",
    "UnsupportedLayerError": "errors",
    "attack_error": "evaluate", "certified_error": "evaluate", "clean_error": "evaluate",
    "bound_logits": "loss", "certified_loss": "loss",
    "paper_model": "models",
    "SpikingNetwork": "network",
    "LIF": "neuron", "Rectangular": "neuron",
    "DigitalLinf": "perturbations", "DirectLinf": "perturbations", "Perturbation": "perturbations",
    "SpikeL0": "perturbations",
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
    "DirectCoding",
    "DirectLinf",
    "Perturbation",
    "RateCoding",
    "Rectangular",
    "SpikeFrames",
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
    "use_ieee_float32",
]



class _CheckoutFinder(importlib.abc.MetaPathFinder):
    """Finds ``snn_robust.adapters`` / ``snn_robust.recipes`` in the top-level ``adapters/``
    and ``recipes/`` folders of a source checkout, so that the package imports from a
    checkout on ``PYTHONPATH`` without being installed.

    An install maps those folders to the same names through ``package-dir`` (pyproject.toml;
    a wheel copies them under ``snn_robust/``). This finder is appended to
    ``sys.meta_path``, after the interpreter's own finders, so an installed layout always
    wins and the finder answers only where nothing else finds the name."""

    def __init__(self, folders: dict[str, Path]) -> None:
        self.folders = folders

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        folder = self.folders.get(fullname)
        if folder is None:
            return None
        return importlib.util.spec_from_file_location(
            fullname, folder / "__init__.py", submodule_search_locations=[str(folder)])


def _install_checkout_finder() -> None:
    root = Path(__file__).resolve().parent.parent
    folders = {f"{__name__}.{name}": root / name for name in ("adapters", "recipes")
               if not (Path(__file__).parent / name).is_dir() and (root / name / "__init__.py").is_file()}
    if folders and not any(isinstance(f, _CheckoutFinder) for f in sys.meta_path):
        sys.meta_path.append(_CheckoutFinder(folders))


_install_checkout_finder()


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'snn_robust' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
