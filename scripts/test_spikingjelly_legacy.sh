#!/usr/bin/env bash
# Run the SpikingJelly adapter tests against SpikingJelly 0.0.0.0.14 (the release whose
# neurons take backend='cupy'), in a separate virtual environment.
#
#   bash scripts/test_spikingjelly_legacy.sh            # create/refresh the env if needed, run the tests
#   bash scripts/test_spikingjelly_legacy.sh -k refusal # extra arguments go to pytest
#
# The environment lives in $SNN_ROBUST_SJ014_VENV (default /tmp/sj014). It is created
# once; a stamp file records the pins and this script's hash, and nothing is reinstalled
# while it matches and the packages import. SNN_ROBUST_FORCE_SETUP=1 reinstalls.
# CuPy is not installed: on a CPU the tests never run a CUDA kernel.
set -euo pipefail

cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
VENV="${SNN_ROBUST_SJ014_VENV:-/tmp/sj014}"
STAMP="$VENV/.snn-robust-sj014.stamp"
PINS="torch==2.14.1 spikingjelly==0.0.0.0.14 snntorch==1.0.0 pytest hypothesis numpy tqdm matplotlib setuptools>=64"

want_stamp() {
    { echo "$PINS"; cat scripts/test_spikingjelly_legacy.sh pyproject.toml; } | sha256sum | cut -d' ' -f1
}

ready() {
    [ -z "${SNN_ROBUST_FORCE_SETUP:-}" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$(want_stamp)" ] \
        && "$VENV/bin/python" -c 'import spikingjelly.activation_based, snn_robust.adapters' >/dev/null 2>&1
}

if ready; then
    echo "sj014: $VENV is up to date"
else
    if [ ! -x "$VENV/bin/python" ]; then
        echo "sj014: creating $VENV with $("$PYTHON" --version 2>&1)"
        "$PYTHON" -m venv "$VENV"
    fi
    rm -f "$STAMP"
    echo "sj014: installing $PINS"
    # shellcheck disable=SC2086  # the pins are a word list on purpose
    "$VENV/bin/python" -m pip install --quiet $PINS
    # snn_robust itself, editable, without its extras (they pin SpikingJelly 2.0.0)
    "$VENV/bin/python" -m pip install --quiet --no-deps --no-build-isolation -e .
    "$VENV/bin/python" -c 'import spikingjelly.activation_based, snn_robust.adapters'
    want_stamp > "$STAMP"
    echo "sj014: done"
fi

# Refuse to report a pass for the wrong release.
"$VENV/bin/python" - <<'EOF'
from importlib.metadata import version
from spikingjelly.activation_based import neuron
got = version("spikingjelly")
if got != "0.0.0.0.14" or hasattr(neuron.BaseNode, "single_step_functional_forward"):
    raise SystemExit(f"sj014: expected spikingjelly 0.0.0.0.14 in the legacy env, found {got}")
print(f"sj014: spikingjelly {got}")
EOF

exec "$VENV/bin/python" -m pytest -q -p no:cacheprovider -W ignore::FutureWarning tests/test_adapters_spikingjelly.py "$@"
