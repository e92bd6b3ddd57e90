#!/usr/bin/env bash
# Multi-GPU runs (issue "Multi-GPU runs on NCCL") on a machine with several GPUs: build, then
# for W = 2, 4, 8 (as many as the machine has) correctness + overlap + speed over NCCL, and a
# torchrun `spava generate` with a tiny random model and a synthetic video; the per-rank kernel
# timelines of every schedule variant and the logs end up in $OUT/multi_gpu_logs.tgz, the
# results in $OUT/multi_gpu_w<W>_<date>_<card>.json. W = 2 hung twice
# (2026-11-25, a lazy-loading deadlock; BENCHMARKS.md "Multi-GPU"); with its fix it completed.
# A stall ends in an error, not a hang, with SPAVA_COLLECTIVE_TIMEOUT_S set low (e.g. 60).
#   SPAVA_COMMIT=<hash> bash scripts/multi_gpu.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/spava_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/python${PYTHONPATH:+:$PYTHONPATH}"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1  # never NVLink multicast here
bash scripts/gpu_check.sh build >/dev/null || { echo "build failed"; exit 1; }
n=$(python3 -c "import torch; print(torch.cuda.device_count())")
for w in 2 4 8; do
  [ "$w" -le "$n" ] || continue
  timeout 900 torchrun --nproc-per-node "$w" benchmarks/bench.py --routine multi-gpu \
    --trace-dir "$OUT/traces" >"$OUT/multi_gpu_w$w.log" 2>&1
  echo "W=$w rc=$?"; tail -n $((4 * w + 8)) "$OUT/multi_gpu_w$w.log"
done
timeout 600 python3 -m pytest -q tests/test_cli_generate.py >"$OUT/cli_generate.log" 2>&1
echo "tiny-model torchrun generate: rc=$? ($(tail -n 1 "$OUT/cli_generate.log"))"
# the device tool brings back at most 8 files: logs and kernel timelines travel as one archive
(cd "$OUT" && tar czf multi_gpu_logs.tgz ./*.log traces 2>/dev/null && rm -rf ./*.log traces)
