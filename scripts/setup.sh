#!/usr/bin/env bash
# Set up everything finetune needs on a fresh machine, idempotently:
#   - a virtual environment (.venv, or $FINETUNE_VENV) with the pinned dependencies
#     (requirements/constraints.txt), finetune itself (editable), test, docs and faiss extras;
#   - the Debian package dataset-fashion-mnist (the built-in real data set), installed with
#     apt-get as root, else unpacked into .cache/debian with apt-get download + dpkg -x.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${FINETUNE_VENV:-.venv}
PYTHON=${PYTHON:-python3}
export PIP_DISABLE_PIP_VERSION_CHECK=1

want=$(cat requirements/constraints.txt setup.cfg pyproject.toml | sha1sum | cut -c1-40)
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$VENV/.finetune-stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: creating $VENV with pinned dependencies (a few minutes the first time)"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install -q -c requirements/constraints.txt -e ".[cpu,test,docs,faiss]"
  echo "$want" > "$VENV/.finetune-stamp"
fi

FMNIST=/usr/share/datasets/fashion-mnist
if [ ! -f "$FMNIST/t10k-labels-idx1-ubyte.gz" ] && [ ! -f ".cache/debian$FMNIST/t10k-labels-idx1-ubyte.gz" ]; then
  echo "setup: installing Debian package dataset-fashion-mnist"
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    (apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1) \
      || (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q dataset-fashion-mnist >/dev/null)
  else
    mkdir -p .cache/debian
    (cd .cache && apt-get download dataset-fashion-mnist >/dev/null && dpkg -x dataset-fashion-mnist_*.deb debian)
  fi
fi
