#!/usr/bin/env bash
# Set up the project's virtual environment in .venv (idempotent).
#
#   bash scripts/setup.sh          # create/refresh .venv only when needed
#   SNN_ROBUST_FORCE_SETUP=1 bash scripts/setup.sh   # reinstall regardless of the stamp
#
# Steps: create .venv with python3 (or $PYTHON) if it is missing; install the pinned
# torch/torchvision; install this package in editable mode with the snntorch,
# spikingjelly, data and test extras. A stamp file in .venv records the hash of
# pyproject.toml and of this script; when it matches and the package imports, nothing
# is reinstalled.
set -euo pipefail

cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
VENV=".venv"
STAMP="$VENV/.snn-robust-setup.stamp"
TORCH_PINS="${SNN_ROBUST_TORCH_PINS:-torch==2.14.1 torchvision==0.29.1}"
EXTRAS="snntorch,spikingjelly,data,test"

want_stamp() {
    cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1
}

# The editable install maps snn_robust.adapters / .recipes to absolute folders: a .venv copied
# from another clone would run that clone's code, so it counts as out of date.
from_checkout() {
    "$VENV/bin/python" - "$(pwd -P)" <<'EOF' 2>/dev/null || echo no
import sys
from pathlib import Path
import snn_robust.adapters, snn_robust.recipes
root = Path(sys.argv[1])
mods = (snn_robust.adapters, snn_robust.recipes)
print("yes" if all(root in Path(m.__file__).resolve().parents for m in mods) else "no")
EOF
}

if [ ! -x "$VENV/bin/python" ]; then
    if ! command -v "$PYTHON" >/dev/null 2>&1; then
        echo "setup: error: $PYTHON not found; install Python >= 3.10 or set PYTHON=/path/to/python3" >&2
        exit 1
    fi
    if ! "$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)'; then
        echo "setup: error: $PYTHON is $("$PYTHON" --version 2>&1); snn-robust needs Python >= 3.10" >&2
        exit 1
    fi
    echo "setup: creating $VENV with $("$PYTHON" --version 2>&1)"
    "$PYTHON" -m venv "$VENV"
fi

if [ -z "${SNN_ROBUST_FORCE_SETUP:-}" ] && [ -f "$STAMP" ] \
    && [ "$(cat "$STAMP")" = "$(want_stamp)" ] \
    && "$VENV/bin/python" -c 'import snn_robust, snn_robust.adapters, snn_robust.recipes' >/dev/null 2>&1 \
    && [ "$(from_checkout)" = yes ]; then
    echo "setup: $VENV is up to date"
    exit 0
fi

rm -f "$STAMP"
echo "setup: installing $TORCH_PINS"
# shellcheck disable=SC2086  # the pins are a word list on purpose
"$VENV/bin/python" -m pip install --quiet $TORCH_PINS
echo "setup: installing snn-robust (editable) with extras [$EXTRAS]"
"$VENV/bin/python" -m pip install --quiet -e ".[$EXTRAS]"
"$VENV/bin/python" -c 'import snn_robust, snn_robust.adapters, snn_robust.recipes'
if [ "$(from_checkout)" != yes ]; then
    echo "setup: error: $VENV imports snn_robust from outside $(pwd -P)" >&2
    exit 1
fi
want_stamp > "$STAMP"
echo "setup: done"
