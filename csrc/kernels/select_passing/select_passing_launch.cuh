// Launch template of select_passing: plan the launch shapes (config.h), then qsum -> scores ->
// select + gather, kernels 2 and 3 chained to their predecessors with programmatic dependent
// launch where the kernels' binaries support it.
#pragma once

#include <algorithm>
#include <atomic>

#include <cutlass/numeric_types.h>

#include "common/kernel_setup.h"
#include "common/trace.cuh"
#include "select_passing/config.h"
#include "select_passing/select_gather_kernel.cuh"
#include "select_passing/select_passing.h"
#include "select_passing/select_passing_kernel.cuh"
#include "spava/check.h"

namespace spava {
namespace select {

// Kernel 1: at least kQsumLoads rows per row group, so a thread's loads are in flight together;
// at most kMaxQsumSplits partials (64 x 7 rows, D 128: 14 CTAs per kv head).
inline void plan_qsum(SelectPassingParams& p) {
  const int groups = kQsumThreads / (p.head_dim / 8);
  const int64_t rows = int64_t(p.q_len) * (p.heads_q / p.heads_kv);
  const int64_t per =
      std::max<int64_t>(groups * kQsumLoads, (rows + kMaxQsumSplits - 1) / kMaxQsumSplits);
  p.qsum_rows = int(per);
  p.qsum_splits = int((rows + per - 1) / per);
}

// Kernel 2: a tile plus its pool halo fills one round of loads unless the halo leaves fewer
// than kMinScoreRows rows; no tiles when no chunk selects (max_sel_len = 0).
inline void plan_scores(SelectPassingParams& p, int max_sel_len) {
  const int round_rows = score_round_rows(p.head_dim / 8);
  p.score_rows = std::max(kMinScoreRows, round_rows - 2 * (p.pool_kernel / 2));
  p.score_tiles = (max_sel_len + p.score_rows - 1) / p.score_rows;
}

// Kernel 3: one round of kGatherPairs pairs per thread. Its shared key cache fits the longest
// selecting chunk of at most kMaxCachedKeys keys, rounded up to 16 keys (see fill_cache).
inline void plan_gather(SelectPassingParams& p) {
  p.gather_rows = gather_rows(p.head_dim / 8);
  p.gather_tiles = (p.capacity + p.gather_rows - 1) / p.gather_rows;
  p.smem_keys = 0;
  for (int c = 0; c < p.num_chunks; ++c)
    if (p.passing_len < p.chunk_len[c] && p.chunk_len[c] <= kMaxCachedKeys)
      p.smem_keys = std::max(p.smem_keys, (p.chunk_len[c] + 15) / 16 * 16);
}

// PDL needs griddepcontrol in the kernel's binary (compiled for sm_90+ only, see pdl_wait): a
// kernel built for an older arch must not start before its predecessor ends. Cached for the
// process (one build's binary is the same on every device of one arch).
template <auto kKernel>
bool binary_has_pdl() {
  static std::atomic<int> cached{-1};
  int has = cached.load(std::memory_order_relaxed);
  if (has < 0) {
    cudaFuncAttributes attr{};
    SPAVA_CUDA_CHECK(cudaFuncGetAttributes(&attr, kKernel));
    has = attr.binaryVersion >= 90;
    cached.store(has, std::memory_order_relaxed);
  }
  return has != 0;
}

// kKernel<<<grid, threads, smem, stream>>>(p); with `pdl` it may start before the previous grid
// on the stream ends (it calls pdl_wait() before touching that grid's outputs).
template <auto kKernel>
void launch(dim3 grid, int threads, int smem, bool pdl, cudaStream_t stream,
            const SelectPassingParams& p) {
  cudaLaunchAttribute attr{};
  attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr.val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t config{};
  config.gridDim = grid;
  config.blockDim = dim3(threads);
  config.dynamicSmemBytes = size_t(smem);
  config.stream = stream;
  config.attrs = &attr;
  config.numAttrs = pdl && binary_has_pdl<kKernel>() ? 1 : 0;
  SPAVA_CUDA_CHECK(cudaLaunchKernelEx(&config, kKernel, p));
}

// Dynamic shared memory that keeps a second kernel-3 CTA off an SM: half of the SM's shared
// memory (with the static part, more than half). Two CTAs on one SM share its issue slots and
// both selects take ~twice as long: without the padding the 128 CTAs of the key shape landed on
// 95-120 SMs (as the score CTAs retired) and the slowest CTA's select ended ~4 us after the
// median one; with it, on 128 SMs, the call took 20.9 us instead of 24.3 (H100). Sized per
// device, so that it also fits GPUs with less shared memory per block than the H100 (sm_86 /
// sm_89: 100 KB per SM, 99 KB per block).
inline int one_cta_per_sm_bytes() {
  int device = 0, per_sm = 0;
  SPAVA_CUDA_CHECK(cudaGetDevice(&device));
  SPAVA_CUDA_CHECK(
      cudaDeviceGetAttribute(&per_sm, cudaDevAttrMaxSharedMemoryPerMultiprocessor, device));
  return per_sm / 2;
}

}  // namespace select

template <typename T>
void launch_select_passing(SelectPassingParams p, cudaStream_t stream, const char* trace_file) {
  using namespace select;
  SPAVA_TRACE(trace_dump(trace_file, stream));
  const int items = p.num_chunks * p.batch * p.heads_kv;
  if (items == 0 || p.capacity == 0) return;
  int max_sel_len = 0;  // longest chunk that selects (passing_len < len)
  for (int c = 0; c < p.num_chunks; ++c)
    if (p.passing_len < p.chunk_len[c]) max_sel_len = std::max(max_sel_len, p.chunk_len[c]);
  const bool selects = max_sel_len > 0;
  plan_qsum(p);
  plan_scores(p, max_sel_len);
  plan_gather(p);
  if (selects) {
    launch<qsum_kernel<T>>(dim3(p.qsum_splits, p.heads_kv, p.batch), kQsumThreads, 0, false,
                           stream, p);
    launch<score_kernel<T>>(dim3(p.score_tiles * items), kScoreThreads, 0, true, stream, p);
  }
  // When the grid fits on the SMs at one CTA each, pad its shared memory so that it does.
  const int grid = p.gather_tiles * items, pad = one_cta_per_sm_bytes();
  int smem = 4 * p.smem_keys;
  if (selects && grid <= p.num_sms) smem = std::max(smem, pad);
  if (smem > 0) set_max_dynamic_smem<gather_kernel<T>>(std::max(4 * kMaxCachedKeys, pad));
  launch<gather_kernel<T>>(dim3(grid), kSelectThreads, smem, selects, stream, p);
}

}  // namespace spava
