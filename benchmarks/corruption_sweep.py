"""How many damaged checkpoints and model files are detected (issue 8, docs/reliability.md).

Writes a real ``fit`` checkpoint (the tiny robust run of tests/test_training.py, 5 steps) and
a paper model file (``paper_model("fc", "mnist")``), then damages copies of each in two ways
and loads every copy with the library's loaders:

- one byte flipped (``^ 0xFF``) at every ``--stride``-th position;
- truncated to every ``--cut-stride``-th length (0 included).

Each copy ends in one of three ways: refused (``DamagedFileError`` / ``ModelFileError``),
loaded with content identical to the original (a byte torch's zip reader never reads, such as
record padding), or loaded with *different* content, which would be an undetected corruption.
Prints one JSON line per file and damage kind.

    OMP_NUM_THREADS=1 python benchmarks/corruption_sweep.py --stride 1 --model-stride 97
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from snn_robust import DigitalLinf  # noqa: E402
from snn_robust.fileio import DamagedFileError  # noqa: E402
from snn_robust.models import paper_model  # noqa: E402
from snn_robust.recipes.pipeline import ModelFileError, load_model, save_model  # noqa: E402
from snn_robust.training import fit, load_checkpoint  # noqa: E402


def _equal(a: Any, b: Any) -> bool:
    if torch.is_tensor(a):
        return torch.is_tensor(b) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return a == b


def sweep(reference: Any, load: Callable[[Path], Any], copies: Iterable[bytes], path: Path) -> dict[str, int]:
    counts = {"copies": 0, "refused": 0, "identical": 0, "different": 0}
    for blob in copies:
        path.write_bytes(blob)
        counts["copies"] += 1
        try:
            content = load(path)
        except (DamagedFileError, ModelFileError):
            counts["refused"] += 1
            continue
        counts["identical" if _equal(content, reference) else "different"] += 1
    return counts


def flips(data: bytes, stride: int) -> Iterator[bytes]:
    # one copy at a time: a list of copies of a 3 MB model file would take tens of GB
    return (data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1:] for i in range(0, len(data), stride))


def cuts(data: bytes, stride: int) -> Iterator[bytes]:
    return (data[:n] for n in range(0, len(data), stride))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stride", type=int, default=1, help="flip every N-th byte of the checkpoint")
    parser.add_argument("--model-stride", type=int, default=97, help="flip every N-th byte of the model file")
    parser.add_argument("--cut-stride", type=int, default=256, help="truncate at every N-th length")
    parser.add_argument("--files", nargs="+", choices=("checkpoint", "model file"), default=["checkpoint", "model file"],
                        help="which files to damage (default: both)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    from test_training import CONFIG, noisy_transform, reseed_globals, tiny_data, tiny_net

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        reseed_globals(0)
        fit(tiny_net(), tiny_data(), DigitalLinf(0.0), CONFIG, run_dir=folder / "run", progress=False,
            batch_transform=noisy_transform, max_steps=5)
        ckpt = (folder / "run" / "last.pt").read_bytes()
        ckpt_ref = load_checkpoint(folder / "run" / "last.pt")
        torch.manual_seed(0)
        model_path = save_model(folder / "model.pt", paper_model("fc", "mnist"), arch="fc", dataset="mnist")
        model = model_path.read_bytes()
        model_ref = load_model(model_path)[0].state_dict()

        def load_weights(p: Path) -> Any:
            return load_model(p)[0].state_dict()

        for name, data, ref, load, stride in (("checkpoint", ckpt, ckpt_ref, load_checkpoint, args.stride),
                                              ("model file", model, model_ref, load_weights, args.model_stride)):
            if name not in args.files:
                continue
            for kind, copies in (("flipped byte", flips(data, stride)), ("truncated", cuts(data, args.cut_stride))):
                t0 = time.perf_counter()
                counts = sweep(ref, load, copies, folder / "damaged.pt")
                print(json.dumps({"file": name, "bytes": len(data), "damage": kind,
                                  "stride": stride if kind == "flipped byte" else args.cut_stride, **counts,
                                  "seconds": round(time.perf_counter() - t0, 1)}), flush=True)


if __name__ == "__main__":
    main()
