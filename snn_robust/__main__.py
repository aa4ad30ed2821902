"""``python -m snn_robust ...`` is the ``snn-robust`` command; it is also how ``torchrun``
starts it on several processes::

    torchrun --standalone --nproc_per_node=4 -m snn_robust train --dataset mnist --out runs/fc.pt

(see docs/user-guide.md, "Several processes, GPUs or machines").
"""
from __future__ import annotations

import sys

from snn_robust.cli import main


def _leave_process_group(code: int) -> None:
    """Leave a process group the command joined (under torchrun); without one, nothing."""
    if "torch.distributed" not in sys.modules:
        return
    from snn_robust import distributed

    if distributed.is_initialized():
        distributed.shutdown(synchronize=code == 0, exit_code=code if code == 0 else None)


def _run() -> int:
    try:
        code = main()
    except BaseException:
        _leave_process_group(1)  # no barrier: the other ranks may never get there
        raise
    _leave_process_group(code)
    return code


if __name__ == "__main__":
    sys.exit(_run())
