// select_passing kernels: (1) qsum, (2) scores + max-pool, (3) exact top-m + gather.
//
// Selection rule (DESIGN.md §1, tie rule included): keep the m = min(p, len) positions with the
// largest smoothed score; among equal scores the lower position wins. Kernel 3 finds the m-th
// largest smoothed score T exactly by a 4-pass radix select on order-preserving uint32 keys,
// keeps every position with a larger key and the first (take_eq) positions equal to T, and
// compacts the kept positions in ascending order with block scans. Integer counts only, so the
// result is deterministic: same input, same bytes.
#pragma once

#include <cub/block/block_scan.cuh>

#include "common/device_utils.cuh"
#include "spava/params.h"

namespace spava::select {

constexpr int kScoreThreads = 256;
constexpr int kScoreRowsPerBlock = 256;
constexpr int kSelectThreads = 512;

// ---------------------------------------------------------------------------- (1) qsum
// grid (h_kv, b), kQsumThreads threads: qsum[b, h, d] = sum_t sum_g q[b, t, h*G + g, d].
// Thread = (row group, 8-column chunk): 16-byte loads, then a fixed-order reduction over the
// row groups (deterministic).
constexpr int kQsumThreads = 256;

template <typename T>
__global__ void __launch_bounds__(kQsumThreads) qsum_kernel(const SelectPassingParams p) {
  __shared__ float part[kQsumThreads * 8];
  const int h = blockIdx.x, b = blockIdx.y;
  const int G = p.heads_q / p.heads_kv, chunks = p.head_dim / 8;
  const int groups = kQsumThreads / chunks;  // head_dim <= 512 keeps this >= 4
  const int cc = threadIdx.x % chunks, rg = threadIdx.x / chunks;
  float acc[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
  if (rg < groups) {
    const T* q = static_cast<const T*>(p.q) + b * p.q_batch_stride + cc * 8;
    for (int r = rg; r < p.q_len * G; r += groups) {
      const int t = r / G, g = r % G;
      const uint4 raw =
          *reinterpret_cast<const uint4*>(q + t * p.q_row_stride + (h * G + g) * p.q_head_stride);
      const T* x = reinterpret_cast<const T*>(&raw);
#pragma unroll
      for (int i = 0; i < 8; ++i) acc[i] += static_cast<float>(x[i]);
    }
  }
#pragma unroll
  for (int i = 0; i < 8; ++i) part[threadIdx.x * 8 + i] = acc[i];
  __syncthreads();
  for (int d = threadIdx.x; d < p.head_dim; d += kQsumThreads) {
    float sum = 0.f;
    for (int g = 0; g < groups; ++g) sum += part[(g * chunks + d / 8) * 8 + d % 8];
    p.qsum[(b * p.heads_kv + h) * p.head_dim + d] = sum;
  }
}

// ---------------------------------------------------------------------------- (2) scores
// grid (row blocks, chunks * b * h_kv). Raw scores k . qsum of the block's rows plus a halo of
// pool_kernel / 2 rows each side (16 lanes per key row, 16-byte loads), then the max-pool
// clipped to the chunk: p.scores receives the smoothed scores.
constexpr int kMaxHalo = 64;

template <typename T>
__global__ void __launch_bounds__(kScoreThreads) score_kernel(const SelectPassingParams p) {
  const int item = blockIdx.y;  // (c * b + bi) * h_kv + h
  const int h = item % p.heads_kv, b = (item / p.heads_kv) % p.batch;
  const int c = item / (p.heads_kv * p.batch);
  const int len = p.chunk_len[c];
  const int row0 = blockIdx.x * kScoreRowsPerBlock;
  if (row0 >= len) return;
  const int half = p.pool_kernel / 2;
  __shared__ float qs[512];
  __shared__ float raw[kScoreRowsPerBlock + 2 * kMaxHalo];
  for (int d = threadIdx.x; d < p.head_dim; d += kScoreThreads)
    qs[d] = p.qsum[(b * p.heads_kv + h) * p.head_dim + d];
  __syncthreads();
  const T* k = static_cast<const T*>(p.k) + b * p.k_batch_stride + h * p.k_head_stride +
               int64_t(p.chunk_start[c]) * p.k_row_stride;
  const int lane16 = threadIdx.x % 16, group = threadIdx.x / 16;
  const int lo = max(0, row0 - half), hi = min(len, row0 + kScoreRowsPerBlock + half);
  // the trip count is uniform across the block: the shuffles below need every lane of a warp
  for (int base = lo; base < hi; base += kScoreThreads / 16) {
    const int j = base + group;
    float acc = 0.f;
    if (j < hi) {
      const T* row = k + int64_t(j) * p.k_row_stride;
      for (int e = lane16 * 8; e < p.head_dim; e += 16 * 8) {
        const uint4 bits = *reinterpret_cast<const uint4*>(row + e);
        const T* x = reinterpret_cast<const T*>(&bits);
#pragma unroll
        for (int i = 0; i < 8; ++i) acc += static_cast<float>(x[i]) * qs[e + i];
      }
    }
#pragma unroll
    for (int off = 8; off > 0; off /= 2) acc += __shfl_xor_sync(0xffffffff, acc, off);
    if (j < hi && lane16 == 0) raw[j - lo] = acc;
  }
  __syncthreads();
  float* out = p.scores + int64_t(item) * p.score_stride;
  const int row_end = min(len, row0 + kScoreRowsPerBlock);
  for (int j = row0 + threadIdx.x; j < row_end; j += kScoreThreads) {
    float mx = -INFINITY;
    for (int i = max(lo, j - half); i <= min(hi - 1, j + half); ++i) mx = fmaxf(mx, raw[i - lo]);
    out[j] = mx;
  }
}

// ---------------------------------------------------------------------------- (3) select + gather
// Order-preserving map float -> uint32 (larger float, larger key). No NaN on legal inputs.
__device__ __forceinline__ uint32_t order_key(float f) {
  const uint32_t u = __float_as_uint(f);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// grid (gather_splits, chunks * b * h_kv), block kSelectThreads.
// Dynamic smem: [capacity] int positions, then [smem_scores] float smoothed scores.
template <typename T>
__global__ void __launch_bounds__(kSelectThreads) select_gather_kernel(const SelectPassingParams p) {
  using BlockScan = cub::BlockScan<int, kSelectThreads>;
  __shared__ typename BlockScan::TempStorage scan_storage;
  __shared__ int hist[256];
  __shared__ uint32_t s_prefix;
  __shared__ int s_remaining;
  extern __shared__ __align__(16) char dyn[];
  int* sel = reinterpret_cast<int*>(dyn);
  float* smooth_cache = reinterpret_cast<float*>(dyn + sizeof(int) * p.capacity);

  const int item = blockIdx.y;
  const int h = item % p.heads_kv, b = (item / p.heads_kv) % p.batch;
  const int c = item / (p.heads_kv * p.batch);
  const int len = p.chunk_len[c], m = min(p.passing_len, len);
  const int tid = threadIdx.x;
  const float* smooth = p.scores + int64_t(item) * p.score_stride;  // smoothed by kernel 2
  const bool cached = len <= p.smem_scores;
  auto key_at = [&](int j) { return order_key(cached ? smooth_cache[j] : smooth[j]); };

  if (m < len) {
    if (cached) {
      for (int j = tid; j < len; j += kSelectThreads) smooth_cache[j] = smooth[j];
    }
    // radix select of the m-th largest key, 8 bits at a time from the top
    if (tid == 0) {
      s_prefix = 0;
      s_remaining = m;
    }
    uint32_t mask = 0;
    for (int shift = 24; shift >= 0; shift -= 8) {
      for (int i = tid; i < 256; i += kSelectThreads) hist[i] = 0;
      __syncthreads();
      const uint32_t prefix = s_prefix;
      for (int j0 = 0; j0 < len; j0 += kSelectThreads) {  // warp-uniform trip count
        const int j = j0 + tid;
        const uint32_t key = j < len ? key_at(j) : 0u;
        const bool counts = j < len && (key & mask) == prefix;
        const int bin = counts ? int((key >> shift) & 255) : -1;
        // one atomic per distinct bin and warp: keys crowd into few bins in the top digits
        const unsigned same = __match_any_sync(0xffffffff, bin);
        if (counts && (threadIdx.x % 32) == __ffs(same) - 1) atomicAdd(&hist[bin], __popc(same));
      }
      __syncthreads();
      // digit of the wanted key: scan the bins from the top (thread i holds bin 255 - i)
      const int remaining = s_remaining;
      const int count = tid < 256 ? hist[255 - tid] : 0;
      int above = 0;
      BlockScan(scan_storage).ExclusiveSum(count, above);
      if (tid < 256 && above < remaining && above + count >= remaining) {
        s_remaining = remaining - above;  // keys equal to the prefix so far that are still wanted
        s_prefix = prefix | (uint32_t(255 - tid) << shift);
      }
      mask |= 255u << shift;
      __syncthreads();
    }
    const uint32_t thresh = s_prefix;  // the m-th largest key
    const int take_eq = s_remaining;   // keys equal to it that are kept (lowest positions)

    // compaction in position order: each thread owns a contiguous range of positions
    const int per = (len + kSelectThreads - 1) / kSelectThreads;
    const int j0 = min(len, tid * per), j1 = min(len, j0 + per);
    int n_gt = 0, n_eq = 0;
    for (int j = j0; j < j1; ++j) {
      const uint32_t key = key_at(j);
      n_gt += key > thresh;
      n_eq += key == thresh;
    }
    int eq_before = 0, kept_before = 0;
    BlockScan(scan_storage).ExclusiveSum(n_eq, eq_before);
    __syncthreads();
    const int kept = n_gt + max(0, min(n_eq, take_eq - eq_before));
    BlockScan(scan_storage).ExclusiveSum(kept, kept_before);
    int slot = kept_before, eq_seen = eq_before;
    for (int j = j0; j < j1; ++j) {
      const uint32_t key = key_at(j);
      const bool keep = key > thresh || (key == thresh && eq_seen++ < take_eq);
      if (keep) sel[slot++] = j;
    }
    __syncthreads();
  }

  // gather this split's share of rows [0, capacity)
  const int per_split = (p.capacity + gridDim.x - 1) / gridDim.x;
  const int i0 = blockIdx.x * per_split, i1 = min(p.capacity, i0 + per_split);
  const int B = p.batch, H = p.heads_kv, D = p.head_dim;
  const T* k = static_cast<const T*>(p.k) + b * p.k_batch_stride + h * p.k_head_stride;
  const T* v = static_cast<const T*>(p.v) + b * p.v_batch_stride + h * p.v_head_stride;
  T* kv = static_cast<T*>(p.kv);
  int64_t* indices = p.indices + int64_t(item) * p.capacity;
  const int chunks_per_row = D / 8;
  for (int idx = i0 * chunks_per_row + tid; idx < i1 * chunks_per_row; idx += kSelectThreads) {
    const int i = idx / chunks_per_row, e = (idx % chunks_per_row) * 8;
    T* dst_k = kv + ((((int64_t(c) * p.capacity + i) * 2 + 0) * B + b) * H + h) * D + e;
    T* dst_v = kv + ((((int64_t(c) * p.capacity + i) * 2 + 1) * B + b) * H + h) * D + e;
    uint4 rk = make_uint4(0, 0, 0, 0), rv = rk;
    if (i < m) {
      const int64_t pos = p.chunk_start[c] + (m < len ? sel[i] : i);
      rk = *reinterpret_cast<const uint4*>(k + pos * p.k_row_stride + e);
      rv = *reinterpret_cast<const uint4*>(v + pos * p.v_row_stride + e);
      if (e == 0) indices[i] = pos;
    } else if (e == 0) {
      indices[i] = -1;
    }
    *reinterpret_cast<uint4*>(dst_k) = rk;
    *reinterpret_cast<uint4*>(dst_v) = rv;
  }
}

}  // namespace spava::select
