#!/usr/bin/env bash
# Set up .venv if needed (scripts/setup.sh), run the test suite, then the SpikingJelly adapter
# tests against spikingjelly 0.0.0.0.14 in their own environment.
# Extra arguments go to pytest:  bash scripts/test.sh -k data -x
#
# What it creates, all inside this checkout: .venv/ (torch, the frameworks, this package
# editable) and .venv-sj014/ (spikingjelly 0.0.0.0.14 only, layered on .venv); pytest and
# hypothesis caches. Nothing goes to the system temp dir beyond pytest's tmp_path folders.
set -euo pipefail

cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m pytest -q tests "$@"
# The SpikingJelly adapter tests again against 0.0.0.0.14 (the release with CuPy neurons), in
# its own environment. SNN_ROBUST_SKIP_LEGACY=1 skips this step.
if [ -z "${SNN_ROBUST_SKIP_LEGACY:-}" ]; then
    bash scripts/test_spikingjelly_legacy.sh
fi
