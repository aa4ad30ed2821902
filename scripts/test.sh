#!/usr/bin/env bash
# Set up .venv if needed (scripts/setup.sh), then run the test suite.
# Extra arguments go to pytest:  bash scripts/test.sh -k data -x
set -euo pipefail

cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest -q tests "$@"
