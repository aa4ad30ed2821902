"""Compile the kernel sources without a GPU: the CUDA file to PTX with ``nvcc`` and with
NVRTC (CuPy's compiler; syntax checks), and the host harness (the kernels' per-element code looped on the CPU) to a
shared library whose entry points are a :data:`~snn_robust.kernels._launch.Launcher`.

The tests use both: the PTX build catches a kernel that does not compile, and the harness,
run through the same :func:`~snn_robust.kernels._launch.lif_interval` /
:func:`~snn_robust.kernels._launch.lif_coefficients` as the GPU, is compared bit for bit
with the torch reference on CPU tensors.
"""
from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path
from typing import Sequence

from torch import Tensor

from ._launch import Scalar

__all__ = ["SOURCE_DIR", "find_compiler", "compile_ptx", "find_nvrtc", "nvrtc_ptx", "HostHarness"]

SOURCE_DIR = Path(__file__).resolve().parent
"""Where ``lif_ops.cuh``, ``lif_kernels.cu`` and ``host_harness.cpp`` live."""

# No contraction of a * b + c into one fused multiply-add: each operation rounds on its
# own, as in torch's separate elementwise kernels (the explicit fma() calls stay fused).
_HOST_FLAGS = ["-O2", "-std=c++17", "-ffp-contract=off", "-shared", "-fPIC"]


def find_compiler(kind: str = "host") -> str | None:
    """The path of ``nvcc`` (``kind="cuda"``), or of a host C++ compiler (``g++``, ``c++``,
    ``clang++``, else ``nvcc``) for the harness; ``None`` if there is none."""
    names = ["nvcc"] if kind == "cuda" else ["g++", "c++", "clang++", "nvcc"]
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    return None


def _run(cmd: list[str]) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"compiling the LIF kernels failed: {' '.join(cmd)}\n{done.stdout}{done.stderr}")


def compile_ptx(out_dir: Path | str, arch: str = "sm_80", nvcc: str | None = None) -> Path:
    """Compile ``lif_kernels.cu`` to PTX for ``arch`` with the options CuPy uses
    (``--fmad=false``); returns the ``.ptx`` path. ``RuntimeError`` with the compiler's
    messages if it fails, ``FileNotFoundError`` without ``nvcc``."""
    nvcc = nvcc or find_compiler("cuda")
    if nvcc is None:
        raise FileNotFoundError("compile_ptx: nvcc is not on PATH")
    out = Path(out_dir) / f"lif_kernels_{arch}.ptx"
    _run([nvcc, "-ptx", f"-arch={arch}", "--fmad=false", "-std=c++17", f"-I{SOURCE_DIR}",
          str(SOURCE_DIR / "lif_kernels.cu"), "-o", str(out)])
    return out


def find_nvrtc() -> Path | None:
    """The NVRTC library CuPy compiles with: the system's (``ctypes.util.find_library``) or
    the one the CUDA build of torch ships (``nvidia/cu*/lib``); ``None`` if neither."""
    import ctypes.util

    name = ctypes.util.find_library("nvrtc")
    if name:
        return Path(name)
    try:
        import nvidia  # namespace package of the CUDA runtime wheels torch depends on
    except ImportError:
        return None
    for root in getattr(nvidia, "__path__", []):
        found = sorted(Path(root).glob("*/lib/libnvrtc.so*"))
        if found:
            return found[0]
    return None


def nvrtc_ptx(source: str, options: Sequence[str], arch: str = "compute_90", library: Path | None = None) -> str:
    """Compile ``source`` with NVRTC (what ``cupy.RawModule`` does) and return the PTX;
    ``RuntimeError`` with NVRTC's log if it fails."""
    library = library or find_nvrtc()
    if library is None:
        raise FileNotFoundError("nvrtc_ptx: no NVRTC library found")
    lib = ctypes.CDLL(str(library))
    prog = ctypes.c_void_p()
    if lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), b"lif_kernels.cu", 0, None, None) != 0:
        raise RuntimeError("nvrtcCreateProgram failed")
    try:
        opts = [o.encode() for o in (*options, f"-arch={arch}")]
        status = lib.nvrtcCompileProgram(prog, len(opts), (ctypes.c_char_p * len(opts))(*opts))
        size = ctypes.c_size_t()
        lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
        log = ctypes.create_string_buffer(size.value)
        lib.nvrtcGetProgramLog(prog, log)
        if status != 0:
            text = log.value.decode(errors="replace")
            raise RuntimeError(f"NVRTC could not compile the LIF kernels ({arch}):\n{text}")
        lib.nvrtcGetPTXSize(prog, ctypes.byref(size))
        ptx = ctypes.create_string_buffer(size.value)
        lib.nvrtcGetPTX(prog, ptx)
        return ptx.value.decode()
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(prog))


class HostHarness:
    """The host harness library; calling it is a launcher (``harness(name, n, args)``)
    for CPU tensors."""

    def __init__(self, out_dir: Path | str, compiler: str | None = None) -> None:
        compiler = compiler or find_compiler("host")
        if compiler is None:
            raise FileNotFoundError("HostHarness: no C++ compiler (g++, c++, clang++ or nvcc) on PATH")
        self.path = Path(out_dir) / "lif_host_harness.so"
        src = str(SOURCE_DIR / "host_harness.cpp")
        if Path(compiler).name == "nvcc":
            cmd = [compiler, "-O2", "-std=c++17", "-shared", "-Xcompiler", "-fPIC,-ffp-contract=off", src]
        else:
            cmd = [compiler, *_HOST_FLAGS, src]
        _run(cmd + [f"-I{SOURCE_DIR}", "-o", str(self.path)])
        self.lib = ctypes.CDLL(str(self.path))

    def __call__(self, name: str, n: int, args: Sequence[Tensor | Scalar]) -> None:
        real = ctypes.c_double if name.endswith("_f64") else ctypes.c_float
        converted = []
        for a in args:
            if isinstance(a, Scalar):
                kind = {"i64": ctypes.c_longlong, "i32": ctypes.c_int, "float": real}[a.kind]
                converted.append(kind(a.value))
            else:
                if a.device.type != "cpu" or not a.is_contiguous():
                    raise ValueError(f"HostHarness.{name}: arguments must be contiguous CPU tensors")
                converted.append(ctypes.c_void_p(a.data_ptr()))
        getattr(self.lib, name)(*converted)
