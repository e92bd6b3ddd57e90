#!/usr/bin/env bash
# Idempotent set-up of a fresh machine: a venv with torch, the CUTLASS headers and spava built.
#   VENV (default .venv)  PYTHON (default python3)  SPAVA_TORCH (default torch==2.14.1)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${SPAVA_TORCH:-torch==2.14.1}
VISION_SPEC=${SPAVA_TORCHVISION:-torchvision==0.29.1}  # must match torch (video processors)
export MAX_JOBS=${MAX_JOBS:-2}

if [ ! -x "$VENV/bin/python" ]; then
  echo "spava: creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
stamp="$VENV/.spava-deps"
want="$TORCH_SPEC $VISION_SPEC $(cat requirements-dev.txt | tr '\n' ' ')"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  "$PY" -m pip install -q --upgrade pip
  "$PY" -m pip install -q "$TORCH_SPEC" "$VISION_SPEC" -r requirements-dev.txt
  # CUTLASS/CuTe headers only: its runtime dependencies are not needed.
  "$PY" -m pip install -q --no-deps nvidia-cutlass==4.2.0.0
  echo "$want" > "$stamp"
fi
# Rebuild (ninja makes this incremental) and install in editable mode.
"$PY" -m pip install -q --no-build-isolation --no-deps -e .
