#!/usr/bin/env bash
# Create .venv (or reuse it) with torch 2.13.0 CPU, the build tools and liteffn (editable, native build).
# Idempotent: a second run only rebuilds what changed. Usage: bash scripts/setup.sh [extra...]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${LITEFFN_VENV:-.venv}
extras=${LITEFFN_EXTRAS:-dev,hf}

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV"
  "$PY" -m venv "$VENV"
fi
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@"; }

# torch first, pinned: a bare 'torch' would resolve to a multi-GB CUDA build.
if ! "$VENV/bin/python" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '2.13.0')" 2>/dev/null; then
  echo "[setup] installing torch==2.13.0 (CPU)"
  pip install "torch==2.13.0"
fi
# Build tools into the venv so the editable install can rebuild without isolation.
pip install "scikit-build-core>=0.10" "pybind11>=2.12" ninja cmake
echo "[setup] building and installing liteffn[$extras]"
pip install --no-build-isolation -e ".[$extras]"
"$VENV/bin/python" -c "import liteffn; print('[setup] liteffn', liteffn.__version__, '| native:', liteffn.native_available())"
