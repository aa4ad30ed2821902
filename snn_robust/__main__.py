"""``python -m snn_robust ...`` is the ``snn-robust`` command; it is also how ``torchrun``
starts it on several processes::

    torchrun --standalone --nproc_per_node=4 -m snn_robust train --dataset mnist --out runs/fc.pt

(see docs/user-guide.md, "Several processes, GPUs or machines").
"""
from __future__ import annotations

import sys

from snn_robust.cli import main


def _run() -> int:
    try:
        return main()
    finally:
        # leave a process group the command joined (under torchrun), so that exit is clean
        if "torch.distributed" in sys.modules:
            from snn_robust import distributed

            distributed.shutdown()


if __name__ == "__main__":
    sys.exit(_run())
