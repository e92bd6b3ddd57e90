#!/usr/bin/env bash
# Idempotent set-up of a fresh machine: a venv with torch, the CUTLASS headers and spava built.
#   VENV (default .venv)  PYTHON (default python3)
#   SPAVA_TORCH, SPAVA_TORCHVISION (default: the pins of requirements-torch.txt)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${SPAVA_TORCH:-$(grep '^torch==' requirements-torch.txt)}
VISION_SPEC=${SPAVA_TORCHVISION:-$(grep '^torchvision==' requirements-torch.txt)}  # matches torch
export MAX_JOBS=${MAX_JOBS:-2}

if [ ! -x "$VENV/bin/python" ]; then
  echo "spava: creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
stamp="$VENV/.spava-deps"
want="$TORCH_SPEC $VISION_SPEC $(cat requirements-dev.txt | tr '\n' ' ')"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  # torch (a CUDA build) and the dev requirements take about 6 GB in the venv, the build 1 GB
  free_kb=$(df -Pk "$VENV" | awk 'NR == 2 {print $4}')
  if [ "${free_kb:-0}" -lt $((8 * 1024 * 1024)) ]; then
    echo "spava: $VENV's disk has $((free_kb / 1024)) MB free; installing torch and building" \
         "needs about 8 GB (free some space, or set VENV to a larger disk)" >&2
    exit 1
  fi
  echo "spava: [1/3] upgrading pip"
  "$PY" -m pip install -q --upgrade pip
  echo "spava: [2/3] installing $TORCH_SPEC, $VISION_SPEC and requirements-dev.txt" \
       "(several GB on the first run: a few minutes)"
  "$PY" -m pip install --progress-bar off "$TORCH_SPEC" "$VISION_SPEC" -r requirements-dev.txt
  # CUTLASS/CuTe headers only: its runtime dependencies are not needed.
  "$PY" -m pip install -q --no-deps nvidia-cutlass==4.2.0.0
  echo "$want" > "$stamp"
else
  echo "spava: [1-2/3] $VENV has torch and the dev requirements ($stamp)"
fi
# Rebuild (ninja makes this incremental) and install in editable mode. The full log goes to
# $VENV/spava-build.log; the compile steps are shown as they run.
echo "spava: [3/3] building the extension (first build: several minutes with CUDA kernels)"
log="$VENV/spava-build.log"
if ! "$PY" -m pip install -v --no-build-isolation --no-deps -e . 2>&1 | tee "$log" \
    | sed -unE '/^ *(spava:|-- spava|\[[0-9]+\/[0-9]+\] )/p'; then  # -u: line by line
  echo "spava: the build failed; the end of $log:" >&2
  tail -n 40 "$log" >&2
  exit 1
fi
