// select_passing kernels (1) qsum partials and (2) scores + max-pool + top-digit histogram;
// kernel (3), select + gather, is in select_gather_kernel.cuh (its selection in select_block.cuh).
//
// Selection rule (DESIGN.md §1, tie rule included): keep the m = min(p, len) positions with the
// largest smoothed score; among equal scores the lower position wins. Scores become
// order-preserving uint32 keys; the exact m-th largest key is found by radix select (11/11/10-bit
// digits, the first digit's histogram built by all score CTAs of the item) and every larger key
// is kept plus the lowest positions equal to it. Every sum has a fixed order and every count is
// an integer, so the result is deterministic: same input, same bytes.
//
// Protocol. Kernel 1 zeroes the per-item histograms. Each score CTA writes its rows' keys and
// adds their top digits to the item's histogram. Every CTA of kernel 3 that holds kept rows of a
// selecting chunk waits for the score grid, then repeats the item's select on its own (all of
// them agree: same data, same arithmetic) and gathers its rows. With programmatic dependent
// launch (sm_90+, launcher's choice) kernel 2 issues its K loads before pdl_wait() on kernel 1,
// and kernel 3 is resident before kernel 2 ends. Every CTA of kernels 2 and 3 calls pdl_wait()
// before it exits, so a grid never completes before its predecessor (kernel 3 reads kernel 2's
// outputs, kernel 2 kernel 1's; without PDL the kernels run in plain stream order and pdl_wait()
// returns at once).
#pragma once

#include <cstdint>

#include <cuda.h>
#include <cute/arch/copy_sm90_tma.hpp>
#include <cutlass/arch/barrier.h>

#include "select_passing/select_passing.h"
#include "select_passing/select_utils.cuh"
#include "spava/params.h"

namespace spava::select {

using TxBarrier = cutlass::arch::ClusterTransactionBarrier;

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
    if (int(threadIdx.x % 32) == __ffs(same) - 1) atomicAdd(hist + bin, __popc(same));
  }
}

// ---------------------------------------------------------------------------- (1) qsum
// grid (qsum_splits, h_kv, b). The nq * G rows r = (t, g) of kv head h are cut into ranges of
// qsum_rows; CTA s writes qsum[s, b, h, :] = sum over its range of q[b, r / G, h*G + r % G, :].
// Thread = (row group, 8-column chunk) with kQsumLoads 16-byte loads in flight; the row groups
// are then summed in a fixed order. The CTAs also zero hist for kernel 2 (their share of the
// items (c, b, h), every chunk c).
constexpr int kQsumThreads = 128;
constexpr int kQsumLoads = 4;

template <typename T>
__global__ void __launch_bounds__(kQsumThreads) qsum_kernel(const SelectPassingParams p) {
  pdl_launch_dependents();  // kernel 2 loads its K rows meanwhile, then waits for this grid
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
}

// ---------------------------------------------------------------------------- (2) scores
// grid (score_tiles * items), CTA (item, tile) owns chunk rows [row0, row0 + score_rows). It
// scores them plus a halo of pool_kernel / 2 rows each side (clipped to the chunk): raw score =
// k_j . qsum. A round of rows (<= 64 KB) arrives in shared memory by TMA (boxes of
// score_box_rows x score_box_cols, column slices side by side, one mbarrier; 16-byte loads kept
// in registers reached ~2 TB/s over the GPU here, TMA boxes more per SM: NOTES.md, v8). Thread
// t < rows_step * cpr takes 8-column chunk t % cpr of rows t / cpr + u * rows_step
// (u < kScoreLoads); each (row, chunk) dot product goes to shared memory and the row sums
// follow in a fixed order. The max-pool of the raw scores gives the keys of the CTA's rows
// (p.keys) and their top-digit counts (added to p.hist). The launcher sizes a tile with its
// halo to one round when it can.
constexpr int kScoreThreads = 256;
constexpr int kScoreLoads = 16;
constexpr int kMinScoreRows = 32;
constexpr int kRound = kScoreThreads * kScoreLoads;  // (row, chunk) pairs per round, at most

// Rows of one round of loads (4096 / cpr when cpr divides 256; <= 4096).
__host__ __device__ constexpr int score_round_rows(int cpr) {
  return kScoreThreads / cpr * kScoreLoads;
}

// Shared-memory slot of pair f: one pad word per 32 keeps the row sums free of bank conflicts.
__device__ __forceinline__ int padded(int f) { return f + (f >> 5); }

// Rows of K's TMA box and the shared memory of a round (host and device agree on both).
__host__ __device__ constexpr int score_box_rows(int cpr) {
  return (score_round_rows(cpr) + (score_round_rows(cpr) + 255) / 256 - 1) /
         ((score_round_rows(cpr) + 255) / 256);
}
__host__ __device__ constexpr int score_tile_bytes(int head_dim, int elem_bytes) {
  return (score_round_rows(head_dim / 8) + score_box_rows(head_dim / 8) - 1) /
         score_box_rows(head_dim / 8) * score_box_rows(head_dim / 8) * head_dim * elem_bytes;
}

struct ScoreShared {
  uint64_t full;  // mbarrier: a round's boxes have landed
  __align__(16) float qs[512];
  float part[kRound + kRound / 32];
  float raw[kRound];  // raw scores of rows [lo, hi)
  int hist[kRadixBins];
};

// kmap: K as [b, rows, h_kv, d], boxes of p.score_box_rows x p.score_box_cols, no swizzle.
// Dynamic shared memory: score_tile_bytes (the round's rows, slice-major).
template <typename T>
__global__ void __launch_bounds__(kScoreThreads, 2)
    score_kernel(const SelectPassingParams p, const __grid_constant__ CUtensorMap kmap) {
  __shared__ ScoreShared sm;
  extern __shared__ __align__(128) uint4 ktile[];
  pdl_launch_dependents();  // kernel 3 becomes resident as CTAs retire, then waits for this grid
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
  const int box_rows = p.score_box_rows, box_cols = p.score_box_cols;
  const int cps = box_cols / 8, slices = p.head_dim / box_cols;  // chunks per slice, slices
  const int slice_rows = (round_rows + box_rows - 1) / box_rows * box_rows;  // rows per slice
  auto load_round = [&](int r0) {  // rows [r0, r0 + round_rows) of [0, hi - lo), by thread 0
    if (tid == 0) {
      const int boxes = (min(round_rows, hi - lo - r0) + box_rows - 1) / box_rows;
      TxBarrier::arrive_and_expect_tx(&sm.full, boxes * slices * box_rows * box_cols * int(sizeof(T)));
      for (int s = 0; s < slices; ++s)
        for (int i = 0; i < boxes; ++i)
          cute::SM90_TMA_LOAD_4D::copy(&kmap, &sm.full,
                                       uint64_t(cute::TMA::CacheHintSm90::EVICT_NORMAL),
                                       ktile + (s * slice_rows + i * box_rows) * cps, s * box_cols,
                                       h, int(p.chunk_start[c]) + lo + r0 + i * box_rows, b);
    }
  };
  if (tid == 0) {
    TxBarrier::init(&sm.full, 1);
    cutlass::arch::fence_barrier_init();
  }
  __syncthreads();
  load_round(0);  // K rows do not depend on kernel 1
  for (int i = tid; i < kRadixBins; i += kScoreThreads) sm.hist[i] = 0;
  pdl_wait();  // kernel 1 has completed: qsum partials and zeroed p.hist visible
  for (int d = tid; d < p.head_dim; d += kScoreThreads) {  // 4 partials in flight, summed in order
    const float* part = p.qsum + (int64_t(b) * p.heads_kv + h) * p.head_dim + d;
    const int64_t split_stride = int64_t(p.batch) * p.heads_kv * p.head_dim;
    float sum = 0.f;
    for (int i0 = 0; i0 < p.qsum_splits; i0 += 4) {
      float y[4];
#pragma unroll
      for (int i = 0; i < 4; ++i)
        y[i] = i0 + i < p.qsum_splits ? __ldcg(part + (i0 + i) * split_stride) : 0.f;
#pragma unroll
      for (int i = 0; i < 4; ++i)
        if (i0 + i < p.qsum_splits) sum += y[i];
    }
    sm.qs[d] = sum;
  }
  __syncthreads();
  float q8[8];
#pragma unroll
  for (int i = 0; i < 8; ++i) q8[i] = sm.qs[cc * 8 + i];
  for (int r0 = 0, round = 0;; ++round) {  // ktile holds the rows of round r0
    TxBarrier::wait(&sm.full, round & 1);
    if (active) {
      const int slice = cc / cps, in_slice = cc % cps;
#pragma unroll
      for (int u = 0; u < kScoreLoads; ++u) {
        const int row = r_first + u * rows_step;  // rows past the round read zeros or spare rows
        sm.part[padded(tid + u * rows_step * cpr)] =
            dot_8<T>(ktile[(slice * slice_rows + row) * cps + in_slice], q8);
      }
    }
    __syncthreads();  // (also: every thread has read ktile before the next round's boxes)
    const int rows = min(round_rows, hi - lo - r0);
    for (int j = tid; j < rows; j += kScoreThreads) {
      float sum = 0.f;
      for (int i = 0; i < cpr; ++i) sum += sm.part[padded(j * cpr + i)];
      sm.raw[r0 + j] = sum;
    }
    __syncthreads();
    r0 += round_rows;
    if (r0 >= hi - lo) break;
    load_round(r0);  // only when the halo or head_dim make a tile exceed a round
  }
  uint32_t* keys = p.keys + int64_t(item) * p.key_stride;
  const int row_end = min(len, row0 + p.score_rows);
  for (int j0 = row0; j0 < row_end; j0 += kScoreThreads) {  // warp-uniform trip count
    const int j = j0 + tid;
    uint32_t key = 0;
    if (j < row_end) {
      float mx = -INFINITY;
      for (int i = max(lo, j - half); i <= min(hi - 1, j + half); ++i)
        mx = fmaxf(mx, sm.raw[i - lo]);
      key = order_key(mx);
      keys[j] = key;
    }
    count_bin(sm.hist, j < row_end, int(key >> 21));
  }
  __syncthreads();
  int* item_hist = p.hist + int64_t(item) * kRadixBins;
  for (int i = tid; i < kRadixBins; i += kScoreThreads)
    if (sm.hist[i] != 0) atomicAdd(item_hist + i, sm.hist[i]);
}

}  // namespace spava::select
