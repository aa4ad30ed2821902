"""Shared test set-up: the hypothesis profile and writers for small files in real data formats."""

from __future__ import annotations

import gzip
import os
import struct
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings

# 'ci': no per-example deadline (timings on a shared 2-core machine are noisy).
settings.register_profile("ci", deadline=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """Test tensors are tiny: one intra-op thread is several times faster than two, and
    much faster on a busy machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _write_idx(path: Path, array: np.ndarray) -> Path:
    """Write a uint8 array as an IDX file (magic 0x08 type, big-endian dims); gzip for ``.gz``."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(payload) if path.suffix == ".gz" else payload)
    return path


def _write_nmnist_bin(path: Path, events: Iterable[tuple[int, int, int, int]]) -> Path:
    """Write (x, y, t_us, p) events in N-MNIST's 5-byte format (23-bit big-endian timestamp)."""
    out = bytearray()
    for x, y, t, p in events:
        out += bytes([x, y, (p << 7) | ((t >> 16) & 0x7F), (t >> 8) & 0xFF, t & 0xFF])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(out))
    return path


@pytest.fixture
def write_idx() -> Callable[[Path, np.ndarray], Path]:
    return _write_idx


@pytest.fixture
def write_nmnist_bin() -> Callable[[Path, Iterable[tuple[int, int, int, int]]], Path]:
    return _write_nmnist_bin
