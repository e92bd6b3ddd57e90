#!/usr/bin/env bash
# One abi3 wheel under several (CPython, torch) pairs, with no build step: for each pair a venv
# with that torch (from the index pip is configured with), the wheel and its [video] extra
# installed, and the CPU test suite run against the installed package from a directory outside
# the source tree.
#   bash scripts/abi_matrix.sh WHEEL [PYTHON:TORCH ...]
# PYTHON: an interpreter (path or name); TORCH: a torch release, or "system": the torch and test
# requirements already installed in PYTHON's environment (seen from the venv after its own
# packages; nothing downloaded: for a machine without an index, e.g. the GPU box). Default
# pairs: python3.12:2.11.0 (the oldest torch the wheel supports) and python3.13:2.15.0.
#   ABI_MATRIX_DIR  where the venvs stay between runs (default /tmp/spava-abi-matrix)
#   PYTEST_ARGS     default "-q -x"; TESTS: default "tests" (the copy's test files)
# Ends with one line per pair: its python, torch and pytest's summary; exits non-zero if a pair
# failed. Torch is several GB per venv on the first run.
set -euo pipefail
unset PYTHONPATH  # the installed wheel is what runs, never a source tree
[ $# -ge 1 ] && [ -f "$1" ] || { echo "usage: $0 WHEEL [PYTHON:TORCH ...]" >&2; exit 2; }
wheel=$(realpath "$1")
shift
pairs=("$@")
[ ${#pairs[@]} -gt 0 ] || pairs=(python3.12:2.11.0 python3.13:2.15.0)
repo=$(realpath "$(dirname "$0")/..")
root=${ABI_MATRIX_DIR:-/tmp/spava-abi-matrix}
mkdir -p "$root"
summary=()
status=0
for pair in "${pairs[@]}"; do
  python=${pair%%:*}
  torch_version=${pair##*:}
  version=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  venv="$root/py$version-torch$torch_version"
  echo "spava: [$pair] venv $venv"
  if [ "$torch_version" = system ]; then
    [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
    parent=$("$python" -c 'import sysconfig as s; print(s.get_path("purelib")); print(s.get_path("platlib"))')
    own=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
    echo "$parent" | sort -u > "$own/spava-parent-env.pth"
  else
    [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
    # torch pinned in the same install: the extra's torchvision must match it. The test
    # requirements at requirements-dev.txt's pins: only python and torch differ between pairs.
    grep -E '^(numpy|pytest|pytest-timeout|transformers|av|hypothesis)([=<>~ ]|$)' \
      "$repo/requirements-dev.txt" > "$venv/test-requirements.txt"
    "$venv/bin/python" -m pip install -q --progress-bar off "torch==$torch_version" \
      "$wheel[video]" -r "$venv/test-requirements.txt"
  fi
  "$venv/bin/python" -m pip install -q --no-deps --no-index --force-reinstall "$wheel"
  # The tests (and the benchmarks some of them import) from a copy: python/ is not importable.
  run="$venv/run"
  rm -rf "$run"
  mkdir -p "$run"
  cp -r "$repo/tests" "$repo/benchmarks" "$repo/pyproject.toml" "$run/"
  (cd "$run" && "$venv/bin/python" -c "
import spava_ext, sys, torch
assert spava_ext.__file__.startswith(sys.prefix), spava_ext.__file__
print('spava: [$pair] spava_ext', spava_ext.__file__, 'torch', torch.__version__)")
  log="$run/pytest.log"
  set +e
  # SPAVA_WHEEL: tests/test_packaging.py also checks the wheel's tag and metadata.
  (cd "$run" && SPAVA_WHEEL="$wheel" "$venv/bin/python" -m pytest ${PYTEST_ARGS:--q -x} \
    -p no:cacheprovider ${TESTS:-tests}) 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  set -e
  [ "$rc" -eq 0 ] || status=1
  summary+=("python $version, torch $torch_version: $(tail -n 1 "$log")")
done
printf 'spava: %s\n' "${summary[@]}"
exit $status
