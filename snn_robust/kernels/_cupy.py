"""The CuPy launcher: ``lif_kernels.cu`` compiled once per device by NVRTC
(``cupy.RawModule``), run on torch's current CUDA stream.

Import this module only when :func:`snn_robust.kernels.cupy_available` is true.
"""
from __future__ import annotations

import functools
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from ._launch import Scalar
from .host import SOURCE_DIR

__all__ = ["launch", "OPTIONS", "source"]

# Separate roundings as in torch's elementwise kernels (see lif_ops.cuh).
OPTIONS = ("--fmad=false", "-std=c++17")
_BLOCK = 256


def source() -> str:
    """``lif_kernels.cu`` with ``lif_ops.cuh`` inlined (NVRTC needs no include path)."""
    header = (SOURCE_DIR / "lif_ops.cuh").read_text()
    return (SOURCE_DIR / "lif_kernels.cu").read_text().replace('#include "lif_ops.cuh"', header)


@functools.lru_cache(maxsize=None)
def _module(device: int):
    """The compiled module for one GPU (called with that GPU current)."""
    import cupy

    module = cupy.RawModule(code=source(), options=OPTIONS)
    module.compile()
    return module


def launch(name: str, n: int, args: Sequence[Tensor | Scalar]) -> None:
    """Run entry point ``name`` with one thread per element (``n`` of them) on the device
    of the tensor arguments, in torch's current stream."""
    import cupy

    tensors = [a for a in args if isinstance(a, Tensor)]
    device = tensors[0].device
    real = np.float64 if name.endswith("_f64") else np.float32
    kinds = {"i64": np.int64, "i32": np.int32, "float": real}
    converted = []
    for a in args:
        if isinstance(a, Scalar):
            converted.append(kinds[a.kind](a.value))
        else:
            if a.device != device or not a.is_contiguous():
                raise ValueError(f"CUDA LIF kernel {name}: every tensor must be contiguous on {device}, got one on "
                                 f"{a.device} (contiguous: {a.is_contiguous()})")
            converted.append(np.uint64(a.data_ptr()))  # a pointer is passed by value, 8 bytes
    stream = torch.cuda.current_stream(device)
    # torch's device context, not cupy.cuda.Device: CuPy's restores the runtime's device on
    # exit behind torch's back (the way SpikingJelly's CuPy neurons avoid it too)
    with torch.cuda.device(device):
        kernel = _module(device.index).get_function(name)
        with cupy.cuda.ExternalStream(stream.cuda_stream, device.index):
            kernel(((n + _BLOCK - 1) // _BLOCK,), (_BLOCK,), tuple(converted))
