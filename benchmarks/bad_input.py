"""What the input checks of ``compute_bounds`` cost, and how many bad inputs the tests try.

Cost: the checks ``compute_bounds`` runs before bounding (``_validate``: shapes, devices,
finite bounds, neuron parameters and weights, binary spikes, labels) and the parameter
check alone (``SpikingNetwork.check_parameters``), against the bound itself, on the paper's
MNIST FC and CONV models (best of several runs, one thread by default).

Count: runs ``tests/test_bad_input.py`` and counts the ``pytest.raises`` blocks entered,
i.e. the bad inputs handed to the library whose refusal was checked (each hypothesis
example counts).

    python benchmarks/bad_input.py [--batch 32] [--steps 3] [--threads 1]
    python benchmarks/bad_input.py --count
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import snn_robust as sr
from snn_robust.bounds.api import _validate
from snn_robust.models import paper_model


def _best(fn, repeats: int) -> float:
    fn()  # warm-up (and the cached shape check)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def cost(batch: int, steps: int) -> None:
    for arch in ("fc", "conv"):
        net = paper_model(arch, "mnist")
        gen = torch.Generator().manual_seed(0)
        x, y = torch.rand(batch, 1, 28, 28, generator=gen), torch.randint(0, 10, (batch,), generator=gen)
        lower, upper = sr.DigitalLinf(0.1).bounds(x, steps, gen)
        with torch.no_grad():
            t_params = _best(net.check_parameters, 20)
            t_checks = _best(lambda: _validate(net, lower, upper, y, "ibp"), 20)
            t_ibp = _best(lambda: sr.compute_bounds(net, lower, upper, y, method="ibp"), 5)
        print(f"{arch}: check_parameters {t_params * 1e3:.2f} ms, all input checks {t_checks * 1e3:.2f} ms, "
              f"compute_bounds ibp {t_ibp * 1e3:.1f} ms (checks included) = {100 * t_checks / t_ibp:.1f} % "
              f"(B={batch}, T'={steps}, {torch.get_num_threads()} thread(s))")


class _CountRaises:
    """A pytest plugin wrapping ``pytest.raises`` to count the blocks entered."""

    def __init__(self) -> None:
        self.count = 0

    def pytest_configure(self, config) -> None:
        import pytest

        original = pytest.raises

        def counting(*args, **kwargs):
            self.count += 1
            return original(*args, **kwargs)

        pytest.raises = counting


def count() -> None:
    import pytest

    plugin = _CountRaises()
    tests = Path(__file__).resolve().parents[1] / "tests" / "test_bad_input.py"
    code = pytest.main(["-q", "-p", "no:cacheprovider", str(tests)], plugins=[plugin])
    print(f"bad inputs refused as expected (pytest.raises blocks entered): {plugin.count}; pytest exit code {int(code)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--count", action="store_true", help="count the bad inputs tests/test_bad_input.py tries")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.count:
        count()
    else:
        cost(args.batch, args.steps)


if __name__ == "__main__":
    main()
