#!/usr/bin/env bash
# The main job on a fresh machine: set up (scripts/setup.sh), then fine-tune a pretrained
# network end to end on the built-in data set. Extra arguments go to `finetune quickstart`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
VENV=${FINETUNE_VENV:-.venv}
exec "$VENV/bin/finetune" quickstart "$@"
