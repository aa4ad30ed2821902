"""``python -m snn_robust.cli`` runs the ``snn-robust`` command (as ``python -m snn_robust``)."""
from __future__ import annotations

import sys

from . import main

if __name__ == "__main__":
    sys.exit(main())
