#!/usr/bin/env bash
# The whole test suite on a fresh machine: set up (scripts/setup.sh), build the docs with
# warnings as errors, run every test. Extra arguments go to pytest (e.g. -m "not slow").
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
VENV=${FINETUNE_VENV:-.venv}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(nproc)}
export MPLBACKEND=Agg
echo "test: building docs (warnings are errors)"
rm -rf docs/_build
"$VENV/bin/python" -m sphinx -W --keep-going -q -b html docs docs/_build/html
echo "test: running pytest"
"$VENV/bin/python" -m pytest -q --durations=25 "$@"
