#!/usr/bin/env bash
# Smoke test of a built wheel: install it into a fresh venv (no build step; torch and the other
# requirements from pip's cache or index) and run tests/test_packaging.py there against it.
#   bash scripts/wheel_smoke.sh dist/spava_ext-*.whl      PYTHON (default python3)
set -euo pipefail
[ $# -eq 1 ] && [ -f "$1" ] || { echo "usage: $0 WHEEL (exactly one wheel file)" >&2; exit 2; }
wheel=$(realpath "$1")
repo=$(realpath "$(dirname "$0")/..")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "spava: smoke test of $(basename "$wheel") in a fresh venv ($tmp)"
"${PYTHON:-python3}" -m venv "$tmp/venv"
echo "spava: installing the wheel and its requirements (torch: several GB, from the cache)"
"$tmp/venv/bin/python" -m pip install --progress-bar off "$wheel" pytest
# From $tmp: the source tree's python/ is not importable, the installed wheel is what runs.
cd "$tmp"
SPAVA_WHEEL="$wheel" "$tmp/venv/bin/python" -m pytest -q -p no:cacheprovider \
  "$repo/tests/test_packaging.py"
