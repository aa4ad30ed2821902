"""Provenance records: what produced a number. Model files, recipe runs and results carry
them, so that a result can be traced to the software versions and the machine."""
from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import torch

__all__ = ["environment", "hardware"]


def environment() -> dict[str, str]:
    """Versions of Python and of the packages that decide the numbers."""
    import numpy as np

    from . import __version__

    out = {"python": platform.python_version(), "snn_robust": __version__,
           "torch": str(torch.__version__), "numpy": str(np.__version__)}
    for name in ("torchvision", "tonic", "matplotlib", "snntorch", "spikingjelly"):
        try:
            from importlib.metadata import version

            out[name] = version(name)
        except Exception:  # not installed
            pass
    return out


def hardware(device: torch.device | str = "cpu") -> dict[str, Any]:
    """CPU model, core and thread counts, and the GPU's name when one is used."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    dev = torch.device(device)
    gpu = torch.cuda.get_device_name(dev) if dev.type == "cuda" else None
    return {"cpu": cpu, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "device": str(dev), "gpu": gpu, "platform": platform.platform()}
