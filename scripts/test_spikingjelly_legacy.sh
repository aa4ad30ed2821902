#!/usr/bin/env bash
# Run the SpikingJelly adapter tests against SpikingJelly 0.0.0.0.14 (the release whose
# neurons take backend='cupy'), in a separate virtual environment inside this checkout.
#
#   bash scripts/test_spikingjelly_legacy.sh            # create/refresh the env if needed, run the tests
#   bash scripts/test_spikingjelly_legacy.sh -k refusal # extra arguments go to pytest
#
# The environment is .venv-sj014/ next to .venv/ (ignored by git). It holds only
# spikingjelly 0.0.0.0.14 (its dependencies --no-deps, about 20 MB in all); a .pth file then
# adds .venv's site-packages *behind* its own, so torch, snnTorch, pytest and this checkout's
# editable snn_robust come from .venv, and spikingjelly resolves to 0.0.0.0.14 first.
# Nothing is shared with other clones: both environments belong to this checkout, and the
# script refuses to run when snn_robust.adapters is imported from anywhere else.
# A stamp file records the pin, .venv's stamp and this script's hash; nothing is reinstalled
# while it matches and the packages import. SNN_ROBUST_FORCE_SETUP=1 reinstalls.
# CuPy is not installed: on a CPU the tests never run a CUDA kernel.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT="$(pwd -P)"

BASE=".venv"
VENV=".venv-sj014"
STAMP="$VENV/.snn-robust-sj014.stamp"
PIN="spikingjelly==0.0.0.0.14"

if [ ! -x "$BASE/bin/python" ]; then
    echo "sj014: error: $BASE is missing; run 'bash scripts/setup.sh' first (make test does)" >&2
    exit 1
fi

want_stamp() {
    { echo "$PIN"; cat "$BASE/.snn-robust-setup.stamp" 2>/dev/null; cat scripts/test_spikingjelly_legacy.sh; } \
        | sha256sum | cut -d' ' -f1
}

ready() {
    [ -z "${SNN_ROBUST_FORCE_SETUP:-}" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$(want_stamp)" ] \
        && "$VENV/bin/python" -c 'import spikingjelly.activation_based, snn_robust.adapters' >/dev/null 2>&1
}

if ready; then
    echo "sj014: $VENV is up to date"
else
    rm -rf "$VENV"
    # The same interpreter as .venv: the .pth below puts .venv's compiled packages on the path.
    BASE_PY="$("$BASE/bin/python" -c 'import sys; print(getattr(sys, "_base_executable", sys.executable))')"
    echo "sj014: creating $VENV with $("$BASE_PY" --version 2>&1), on top of $BASE"
    "$BASE_PY" -m venv "$VENV"
    echo "sj014: installing $PIN (its dependencies come from $BASE)"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps "$PIN"
    BASE_SITE="$("$BASE/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    OWN_SITE="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    # addsitedir (not a bare path line) so .venv's own .pth files run too: they register the
    # editable install of this checkout. Appended, so this env's spikingjelly comes first.
    echo "import site; site.addsitedir('$BASE_SITE')" > "$OWN_SITE/zz_snn_robust_base_venv.pth"
    "$VENV/bin/python" -c 'import spikingjelly.activation_based, snn_robust.adapters'
    want_stamp > "$STAMP"
    echo "sj014: done ($(du -sh "$VENV" | cut -f1))"
fi

# Refuse to report a pass for the wrong release or for another clone's code.
SNN_ROBUST_CHECKOUT="$ROOT" "$VENV/bin/python" - <<'EOF'
import os
from importlib.metadata import version
from pathlib import Path

import snn_robust.adapters
from spikingjelly.activation_based import neuron

got = version("spikingjelly")
if got != "0.0.0.0.14" or hasattr(neuron.BaseNode, "single_step_functional_forward"):
    raise SystemExit(f"sj014: expected spikingjelly 0.0.0.0.14 in the legacy env, found {got}")
root = Path(os.environ["SNN_ROBUST_CHECKOUT"])
where = Path(snn_robust.adapters.__file__).resolve()
if root not in where.parents:
    raise SystemExit(f"sj014: snn_robust.adapters comes from {where}, not from this checkout {root}; "
                     "reinstall with SNN_ROBUST_FORCE_SETUP=1 bash scripts/setup.sh")
print(f"sj014: spikingjelly {got}, snn_robust.adapters from {where.parent}")
EOF

exec "$VENV/bin/python" -m pytest -q -p no:cacheprovider -W ignore::FutureWarning tests/test_adapters_spikingjelly.py "$@"
