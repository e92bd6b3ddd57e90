#!/usr/bin/env bash
# The GPU box routine (device tool): build from source, GPU tests, sanitizers, benchmarks, and a
# short table at the end. Logs go to $OUT (the device tool brings them back).
#   bash scripts/gpu_check.sh [all|build|test|sanitize|bench|quick|evidence|cuda|kernels2|select]   (default: all)
#   all      = build, GPU tests, sanitizers, SASS mix, the kernel benchmark (~5-9 min)
#   evidence = build, the W=8 simulator (spava bench), the layer sweep, e2e prefill (~8 min)
#   cuda     = build, every test marked cuda, the fuzz corpus under memcheck (~6 min)
#   kernels2 = build, the GPU tests of the decode kernel, quantize_fp8 and attn_fwd_group's spans,
#              the decode routine with the decode kernel on, quantize_fp8's bandwidth, the host
#              routine (~8 min)
#   select   = trace build (SPAVA_ATTN_TRACE=1), select_passing's GPU tests and its timeline
#              (benchmarks/select_trace.py) (~2 min); the next build without it rebuilds
# Needs the nvidia-cutlass 4.2.0.0 wheel in .whl/ (carried: `pip download --no-deps
# nvidia-cutlass==4.2.0.0 -d .whl`). Set SPAVA_COMMIT to record the commit in the results.
set -uo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-all}
case $MODE in  # results record the commit; the box's copy of .git can be stale
  bench|quick|all|evidence|kernels2) : "${SPAVA_COMMIT:?set SPAVA_COMMIT to the commit hash}" ;;
esac
OUT=${OUT:-/tmp/spava_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 MAX_JOBS=${MAX_JOBS:-16}
export PYTHONPATH="$PWD/python${PYTHONPATH:+:$PYTHONPATH}"
summary=()

step() {  # step NAME TIMEOUT_S CMD...: run, log to $OUT/NAME.log, remember the outcome
  local name=$1 limit=$2
  shift 2
  local t0=$SECONDS
  timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  summary+=("$(printf '%-10s rc=%-3s %4ss  %s' "$name" "$rc" $((SECONDS - t0)) "$(tail -n 1 "$OUT/$name.log")")")
  return $rc
}

build() {
  # The box exports CC/CXX=/opt/gcc/bin/g*, a wrapper that links libstdc++ statically into shared
  # objects; a second libstdc++ next to torch's crashes the first ostream use (seen 2026-11-25:
  # SIGSEGV in basic_ostream::_M_insert<long> while formatting a c10 error). Use the system GCC
  # (the same 13.3 that built torch there) when it exists.
  if [ -x /usr/bin/g++ ] && [ "${CXX:-}" != /usr/bin/g++ ]; then
    export CC=/usr/bin/gcc CXX=/usr/bin/g++ CUDAHOSTCXX=/usr/bin/g++
    rm -rf build
  fi
  if [ -z "${SPAVA_CUTLASS_INCLUDE_DIR:-}" ]; then
    python3 -m zipfile -e .whl/nvidia_cutlass-4.2.0.0-py3-none-any.whl /tmp/cutlass
    export SPAVA_CUTLASS_INCLUDE_DIR=/tmp/cutlass/cutlass_library/source/include
  fi
  nvidia-smi --query-gpu=name,driver_version,clocks.sm,power.limit --format=csv >"$OUT/gpu.txt"
  step build 900 python3 setup.py build_ext --inplace
}

gpu_tests() {
  step tests 400 python3 -m pytest -q --timeout 120 tests/test_cuda.py tests/test_attn_group.py \
    tests/test_attn_pairs.py tests/test_ops.py tests/test_opcheck.py tests/test_reference.py \
    tests/test_timing.py
}

sanitize() {
  step memcheck 150 compute-sanitizer --tool memcheck --error-exitcode 1 \
    python3 scripts/sanitize_case.py all
  step racecheck 200 compute-sanitizer --tool racecheck --error-exitcode 1 \
    python3 scripts/sanitize_case.py attn
  step racecheck_select 150 compute-sanitizer --tool racecheck --error-exitcode 1 \
    python3 scripts/sanitize_case.py select
}

sass() {  # resource usage and instruction mix of the attention kernel
  local so
  so=$(ls python/spava_ext/_C*.so | head -n 1)
  cuobjdump --dump-resource-usage "$so" >"$OUT/resource_usage.txt" 2>&1
  cuobjdump --dump-sass "$so" 2>/dev/null | grep -oE '(HGMMA|HMMA|LDGSTS|UTMALDG|LDL|STL)[^ ]*' \
    | sort | uniq -c | sort -rn | head -20 >"$OUT/sass_mix.txt"
}

evidence() {
  step simulate 200 python3 -m spava_ext bench --simulate-world-size 8 --json "$OUT/simulate_w8.json"
  step layer 300 python3 benchmarks/bench.py --routine layer
  step e2e 300 python3 benchmarks/bench.py --routine e2e
}

case $MODE in
  build) build ;;
  test) build && gpu_tests ;;
  sanitize) build && sanitize ;;
  bench) build && step bench 900 python3 benchmarks/bench.py --routine kernels ;;
  quick) build && gpu_tests; sass
    step bench 600 python3 benchmarks/bench.py --routine kernels --quick ;;
  all) build && { gpu_tests; sanitize; sass
    step bench 500 python3 benchmarks/bench.py --routine kernels; } ;;
  evidence) build && evidence ;;
  cuda) build && {
      step tests 400 python3 -m pytest -q --timeout 120 -p no:cacheprovider -m cuda tests/
      step memcheck_fuzz 300 compute-sanitizer --tool memcheck --error-exitcode 1 \
        python3 scripts/sanitize_case.py fuzz; } ;;
  kernels2) build && {
      step tests 300 python3 -m pytest -q --timeout 60 -p no:cacheprovider -m cuda \
        tests/test_attn_decode.py tests/test_quantize_fp8.py tests/test_attn_group.py \
        tests/test_decode.py tests/test_graphs.py
      SPAVA_ATTN_DECODE=1 step decode 300 python3 benchmarks/bench.py --routine decode --ranks 0
      step quantize 120 python3 benchmarks/bench_quantize.py
      step host 200 python3 benchmarks/bench.py --routine host; } ;;
  select) export SPAVA_ATTN_TRACE=1 && build && {
      step tests 300 python3 -m pytest -q --timeout 60 tests/test_cuda.py -k select
      step trace 300 python3 benchmarks/select_trace.py; } ;;
esac

echo "==== spava gpu_check ($MODE) on $(head -n 2 "$OUT/gpu.txt" 2>/dev/null | tail -n 1)"
for line in "${summary[@]}"; do echo "$line"; done
[ -f "$OUT/bench.log" ] && grep -E "TF/s|us |ms " "$OUT/bench.log" | head -40
for f in simulate layer e2e; do [ -f "$OUT/$f.log" ] && tail -n 14 "$OUT/$f.log"; done
[ -f "$OUT/trace.log" ] && grep -E "D = |span|kernel 3" "$OUT/trace.log" | head -12
[ -f "$OUT/sass_mix.txt" ] && head -8 "$OUT/sass_mix.txt"
exit 0
