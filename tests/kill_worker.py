"""A process for the SIGKILL tests: ``python kill_worker.py RUN_DIR`` trains test_training's
tiny robust config on 80 samples (30 steps, checkpoint after every step, resume=True) and
prints ``step`` to stdout before each step, so the parent can kill it at a chosen point, and
``done`` at the end.
"""
from __future__ import annotations

import sys

import torch

from snn_robust import DigitalLinf
from snn_robust.training import fit

from test_training import CONFIG, noisy_transform, reseed_globals, tiny_data, tiny_net


#: 10 batches of 8 per epoch, 3 epochs: 30 steps, so that six kills rarely reach the end.
STEPS_PER_EPOCH = 10


def main(run_dir: str) -> None:
    torch.set_num_threads(1)  # the same arithmetic in every process (bit-for-bit comparison)
    reseed_globals(0)

    def announce(x, y):
        print("step", flush=True)
        return noisy_transform(x, y)

    fit(tiny_net(), tiny_data(STEPS_PER_EPOCH * CONFIG.batch_size), DigitalLinf(0.0), CONFIG, run_dir=run_dir, progress=False, batch_transform=announce,
        log_every=2, checkpoint_every=1, resume=True)
    print("done", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
