// select_passing kernels (1) qsum partials and (2) scores + max-pool + top-digit histogram;
// kernel (3), select + gather, is in select_gather_kernel.cuh (its selection in select_block.cuh).
//
// Selection rule (docs/design.md "Selection", tie rule included): keep the m = min(p, len)
// positions with the largest smoothed score; among equal scores the lower position wins. Scores
// become order-preserving uint32 keys; the exact m-th largest key is found by radix select
// (digit 1 = key bits 31..21, its histogram built by all score CTAs of the item; digit 2 = bits
// 20..10; then the few keys sharing both are ranked, or digit 3 = bits 9..0 counted:
// select_block.cuh) and every larger key is kept plus the lowest positions equal to it. Every
// sum has a fixed order and every count is an integer, so the result is deterministic: same
// input, same bytes.
//
// Protocol. Kernel 1 zeroes the per-item histograms. Each score CTA writes its rows' keys and
// adds their top digits to the item's histogram. Every CTA of kernel 3 that holds kept rows of a
// selecting chunk waits for the score grid, then repeats the item's select on its own (all of
// them agree: same data, same arithmetic) and gathers its rows. With programmatic dependent
// launch (the launcher chains kernels 2 and 3 when their binaries are sm_90+) kernel 2 issues
// its K loads before pdl_wait() on kernel 1, and kernel 3 is resident before kernel 2 ends.
// Every CTA of kernels 2 and 3 calls pdl_wait() before it exits, so a grid never completes
// before its predecessor (kernel 3 reads kernel 2's outputs, kernel 2 kernel 1's; without PDL
// the kernels run in plain stream order and pdl_wait() returns at once).
#pragma once

#include <cstdint>

#include "common/trace.cuh"
#include "select_passing/config.h"
#include "select_passing/select_passing.h"
#include "select_passing/select_utils.cuh"
#include "spava/params.h"

namespace spava::select {

// acc[i] += x[i] for the 8 elements of a 16-byte vector of T.
template <typename T>
__device__ __forceinline__ void add_8(float (&acc)[8], const uint4& bits) {
  const T* x = reinterpret_cast<const T*>(&bits);
#pragma unroll
  for (int i = 0; i < 8; ++i) acc[i] += static_cast<float>(x[i]);
}

// sum_i x[i] * q[i] over the 8 elements of a 16-byte vector of T, in order from +0.
template <typename T>
__device__ __forceinline__ float dot_8(const uint4& bits, const float (&q)[8]) {
  const T* x = reinterpret_cast<const T*>(&bits);
  float acc = 0.f;
#pragma unroll
  for (int i = 0; i < 8; ++i) acc = fmaf(static_cast<float>(x[i]), q[i], acc);
  return acc;
}

// hist[bin] += 1 for each lane with `counts`: one shared atomic per distinct bin of the warp
// (keys crowd into few bins). Every lane of the warp must call it.
__device__ __forceinline__ void count_bin(int* hist, bool counts, int bin) {
  const unsigned active = __ballot_sync(0xffffffffu, counts);
  if (counts) {
    const unsigned same = __match_any_sync(active, bin);
    shared_add_if(int(threadIdx.x % 32) == __ffs(same) - 1, hist + bin, __popc(same));
  }
}

// ---------------------------------------------------------------------------- (1) qsum
// grid (qsum_splits, h_kv, b). The nq * G rows r = (t, g) of kv head h are cut into ranges of
// qsum_rows; CTA s writes qsum[s, b, h, :] = sum over its range of q[b, r / G, h*G + r % G, :].
// Thread = (row group, 8-column chunk) with kQsumLoads 16-byte loads in flight; the row groups
// are then summed in a fixed order. The CTAs also zero hist for kernel 2 (their share of the
// items (c, b, h), every chunk c).

template <typename T>
__global__ void __launch_bounds__(kQsumThreads) qsum_kernel(const SelectPassingParams p) {
  pdl_launch_dependents();  // kernel 2 loads its K rows meanwhile, then waits for this grid
  SPAVA_TRACE(sel_stamp(kSelTraceQsum, 0));
  __shared__ float part[kQsumThreads * 8];
  const int s = blockIdx.x, h = blockIdx.y, b = blockIdx.z, tid = threadIdx.x;
  const int G = p.heads_q / p.heads_kv, cpr = p.head_dim / 8;
  const int groups = kQsumThreads / cpr;  // >= 2: head_dim <= 512
  const int cc = tid % cpr, rg = tid / cpr;
  const int r0 = s * p.qsum_rows, r1 = min(p.q_len * G, r0 + p.qsum_rows);
  float acc[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
  if (rg < groups) {
    const T* q = static_cast<const T*>(p.q) + b * p.q_batch_stride +
                 int64_t(h) * G * p.q_head_stride + cc * 8;
    for (int r = r0 + rg; r < r1; r += groups * kQsumLoads) {
      uint4 x[kQsumLoads];
#pragma unroll
      for (int u = 0; u < kQsumLoads; ++u) {
        const int ru = r + u * groups;
        x[u] = ru < r1 ? ldg_16(q + int64_t(ru / G) * p.q_row_stride + (ru % G) * p.q_head_stride)
                       : make_uint4(0, 0, 0, 0);
      }
#pragma unroll
      for (int u = 0; u < kQsumLoads; ++u) add_8<T>(acc, x[u]);
    }
  }
#pragma unroll
  for (int i = 0; i < 8; ++i) part[tid * 8 + i] = acc[i];

  const int hist4 = p.num_chunks * kRadixBins / 4;  // int4 of hist per (b, h)
  for (int i = s * kQsumThreads + tid; i < hist4; i += p.qsum_splits * kQsumThreads) {
    const int c = i / (kRadixBins / 4), e = i % (kRadixBins / 4);
    const int64_t item = (int64_t(c) * p.batch + b) * p.heads_kv + h;
    reinterpret_cast<int4*>(p.hist + item * kRadixBins)[e] = make_int4(0, 0, 0, 0);
  }
  __syncthreads();
  float* out = p.qsum + ((int64_t(s) * p.batch + b) * p.heads_kv + h) * p.head_dim;
  for (int d = tid; d < p.head_dim; d += kQsumThreads) {
    float sum = 0.f;
    for (int g = 0; g < groups; ++g) sum += part[(g * cpr + d / 8) * 8 + d % 8];
    out[d] = sum;
  }
  SPAVA_TRACE(sel_stamp(kSelTraceQsum, 1));
}

// ---------------------------------------------------------------------------- (2) scores
// grid (score_tiles * items), CTA (item, tile) owns chunk rows [row0, row0 + score_rows). It
// scores them plus a halo of pool_kernel / 2 rows each side (clipped to the chunk): raw score =
// k_j . qsum. Thread t < rows_step * cpr reads 8-column chunk t % cpr of rows t / cpr +
// u * rows_step (u < kScoreLoads, all loads in flight together); each (row, chunk) dot product
// goes to shared memory and the row sums follow in a fixed order. The max-pool of the raw scores
// gives the keys of the CTA's rows (p.keys) and their top-digit counts (added to p.hist).
// The launcher sizes a tile with its halo to one round of loads (64 KB) when it can.
constexpr int kRound = kScoreThreads * kScoreLoads;  // (row, chunk) pairs per round, at most

// Shared-memory slot of pair f: one pad word per 32 keeps the row sums free of bank conflicts.
__device__ __forceinline__ int padded(int f) { return f + (f >> 5); }

struct ScoreShared {
  __align__(16) float qs[512];
  float part[kRound + kRound / 32];
  float raw[kRound];  // raw scores of rows [lo, hi)
  int hist[kRadixBins];
};

template <typename T>
__global__ void __launch_bounds__(kScoreThreads, 2) score_kernel(const SelectPassingParams p) {
  __shared__ ScoreShared sm;
  pdl_launch_dependents();  // kernel 3 becomes resident as CTAs retire, then waits for this grid
  SPAVA_TRACE(sel_stamp(kSelTraceScore, 0));
  const int item = blockIdx.x / p.score_tiles, tile = blockIdx.x % p.score_tiles;
  const int h = item % p.heads_kv, b = (item / p.heads_kv) % p.batch;
  const int c = item / (p.heads_kv * p.batch);
  const int len = p.chunk_len[c], row0 = tile * p.score_rows;
  if (p.passing_len >= len || row0 >= len) {  // the chunk keeps every row, or past its end
    pdl_wait();
    return;
  }
  const int tid = threadIdx.x, cpr = p.head_dim / 8, half = p.pool_kernel / 2;
  const int rows_step = kScoreThreads / cpr, round_rows = score_round_rows(cpr);
  const bool active = tid < rows_step * cpr;
  const int cc = tid % cpr, r_first = tid / cpr;
  const int lo = max(0, row0 - half), hi = min(len, row0 + p.score_rows + half);
  const T* k = static_cast<const T*>(p.k) + b * p.k_batch_stride + h * p.k_head_stride +
               (int64_t(p.chunk_start[c]) + lo + r_first) * p.k_row_stride + cc * 8;
  const int64_t step = int64_t(rows_step) * p.k_row_stride;
  uint4 x[kScoreLoads];
  auto load_round = [&](int r0) {  // tile rows [r0, r0 + round_rows) of [0, hi - lo)
    const int rows = active ? min(round_rows, hi - lo - r0) - r_first : 0;  // of this thread
    const T* src = k + int64_t(r0) * p.k_row_stride;
#pragma unroll
    for (int u = 0; u < kScoreLoads; ++u)
      x[u] = u * rows_step < rows ? ldg_16(src + u * step) : make_uint4(0, 0, 0, 0);
  };
  load_round(0);  // K rows do not depend on kernel 1
  for (int i = tid; i < kRadixBins; i += kScoreThreads) sm.hist[i] = 0;
  pdl_wait();  // kernel 1 has completed: qsum partials and zeroed p.hist visible
  SPAVA_TRACE(sel_stamp(kSelTraceScore, 1));
  for (int d = tid; d < p.head_dim; d += kScoreThreads) {  // all in flight, summed in order
    const float* part = p.qsum + (int64_t(b) * p.heads_kv + h) * p.head_dim + d;
    const int64_t split_stride = int64_t(p.batch) * p.heads_kv * p.head_dim;
    float y[kMaxQsumSplits];
#pragma unroll
    for (int i = 0; i < kMaxQsumSplits; ++i)
      y[i] = i < p.qsum_splits ? __ldcg(part + i * split_stride) : 0.f;
    float sum = 0.f;
#pragma unroll
    for (int i = 0; i < kMaxQsumSplits; ++i)
      if (i < p.qsum_splits) sum += y[i];
    sm.qs[d] = sum;
  }
  __syncthreads();
  SPAVA_TRACE(sel_stamp(kSelTraceScore, 2));
  float q8[8];
#pragma unroll
  for (int i = 0; i < 8; ++i) q8[i] = sm.qs[cc * 8 + i];
  for (int r0 = 0;;) {  // x holds the loads of round r0 (dead during the row sums)
    if (active) {
#pragma unroll
      for (int u = 0; u < kScoreLoads; ++u)
        sm.part[padded(tid + u * rows_step * cpr)] = dot_8<T>(x[u], q8);
    }
    __syncthreads();
    const int rows = min(round_rows, hi - lo - r0);
    for (int j = tid; j < rows; j += kScoreThreads) {
      float sum = 0.f;
      for (int i = 0; i < cpr; ++i) sum += sm.part[padded(j * cpr + i)];
      sm.raw[r0 + j] = sum;
    }
    __syncthreads();
    r0 += round_rows;
    if (r0 >= hi - lo) break;
    load_round(r0);  // only when the halo or head_dim makes a tile exceed a round
  }
  SPAVA_TRACE(sel_stamp(kSelTraceScore, 3));
  uint32_t* keys = p.keys + int64_t(item) * p.key_stride;
  const int row_end = min(len, row0 + p.score_rows);
  for (int j0 = row0; j0 < row_end; j0 += kScoreThreads) {  // warp-uniform trip count
    const int j = j0 + tid;
    uint32_t key = 0;
    if (j < row_end) {
      // The max-pool on keys (order_key is monotone): a NaN in the window pools to NaN's key,
      // where fmaxf would drop it. The window holds j, so key ends as a real key, never 0.
      for (int i = max(lo, j - half); i <= min(hi - 1, j + half); ++i)
        key = max(key, order_key(sm.raw[i - lo]));
      keys[j] = key;
    }
    count_bin(sm.hist, j < row_end, int(key >> 21));
  }
  __syncthreads();
  int* item_hist = p.hist + int64_t(item) * kRadixBins;
#pragma unroll
  for (int u = 0; u < kRadixBins / kScoreThreads; ++u) {
    const int i = tid + u * kScoreThreads, count = sm.hist[i];
    global_add_if(count != 0, item_hist + i, count);
  }
  SPAVA_TRACE(sel_stamp(kSelTraceScore, 4));
}

}  // namespace spava::select
