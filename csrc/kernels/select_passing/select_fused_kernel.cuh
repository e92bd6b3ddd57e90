// select_passing, the fused kernel: scores, selection and gather in one grid, after kernel 1
// (qsum partials; it also zeroes the counts and counters used here).
//
// The grid is the score grid (score_tiles CTAs per item, CTA `tile` owns chunk rows [row0,
// row_end)), and the launcher runs it only when every CTA can be resident at once (occupancy
// times SMs), so the CTAs of an item can meet at barriers: a global counter per barrier, each
// CTA adds 1 and waits until all `ctas` CTAs of the item have (trapping after
// barrier_timeout_ns instead of hanging). Per CTA of a selecting item:
//   score its rows (select_passing_kernel.cuh: keys to global and shared memory, top digit
//       counts to the item's histogram)                                        | barrier 0
//   pick digit 1 from the item's counts; unless decided, count digit 2 of its own keys into the
//       item's second histogram                                                 | barrier 1
//   pick digit 2; unless decided, digit 3 likewise                              | barrier 2
//   the threshold is known (every CTA computes the same one from the same counts); count its
//       keys above / equal to it and publish the two counts                     | barrier 3
//   slots: the kept keys before its rows = those above in the tiles before it + the taken equal
//       ones (lowest positions first: tile order is position order); it writes the K/V rows of
//       its own kept keys to those send-buffer rows, and its share of the zero rows past m.
// A chunk that keeps every row is copied by its CTAs straight away (slot = position). Counts are
// integers and every sum of floats keeps kernel 2's order: the bytes equal the unfused path's.
#pragma once

#include <cstdint>

#include "select_passing/select_block.cuh"
#include "select_passing/select_passing.h"
#include "select_passing/select_passing_kernel.cuh"
#include "select_passing/select_utils.cuh"
#include "spava/params.h"

namespace spava::select {

constexpr int kFusedPairs = 4;  // (row, 8-column chunk) pairs per thread in a round of copies
constexpr int kFusedPer = kRadixBins / kScoreThreads;  // digit counts per thread in a pick (8)

struct FusedShared {
  ScoreShared score;  // score.part: the CTA's keys; score.raw: its kept positions (after pooling)
  typename WarpScans<kScoreThreads>::TempStorage scan;
  DigitPick pick;
  int warp_gt[kScoreThreads / 32], warp_eq[kScoreThreads / 32];
};

// The parts of an item's int32 workspace (select_passing.h).
struct ItemWork {
  int *hist1, *hist2, *hist3, *sync, *counts;
};

__device__ __forceinline__ ItemWork item_work(const SelectPassingParams& p, int item) {
  int* base = p.hist + int64_t(item) * kItemInts;
  return {base, base + kRadixBins, base + 2 * kRadixBins, base + 2 * kRadixBins + kRadixBins / 2,
          base + kItemZeroInts};
}

__device__ __forceinline__ uint64_t globaltimer_ns() {
  uint64_t t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

// Block-wide: returns once all `ctas` CTAs of the item have arrived at *counter (zero at launch);
// every global write and atomic of the CTA before it is visible to them afterwards.
__device__ __forceinline__ void item_barrier(int* counter, int ctas, int64_t timeout_ns) {
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) {
    atomicAdd(counter, 1);
    const uint64_t start = globaltimer_ns();
    for (;;) {
      int v;
      asm volatile("ld.acquire.gpu.global.b32 %0, [%1];" : "=r"(v) : "l"(counter) : "memory");
      if (v >= ctas) break;
      if (int64_t(globaltimer_ns() - start) > timeout_ns) asm volatile("trap;");
      __nanosleep(32);
    }
  }
  __syncthreads();
}

// The threshold of the item's m < len kept keys, from the CTA's own keys own[0, n) and the
// counts every CTA of the item adds (digits 2 and 3 only while undecided; `decided` is the same
// in every CTA, so all of them take the same barriers).
__device__ __forceinline__ Threshold fused_threshold(const uint32_t* own, int n, int m,
                                                     const ItemWork& w, int ctas,
                                                     int64_t timeout_ns, FusedShared& sm) {
  uint32_t prefix = 0, mask = 0;
  int remaining = m;
#pragma unroll 1
  for (int pass = 0; pass < 3; ++pass) {
    const int shift = pass == 0 ? 21 : pass == 1 ? 10 : 0;
    const int bins = pass == 2 ? kRadixBins / 2 : kRadixBins;
    int* hist = pass == 0 ? w.hist1 : pass == 1 ? w.hist2 : w.hist3;
    if (pass > 0) {  // digit `pass + 1` of the own keys that match the prefix so far
      for (int j = threadIdx.x; j < n; j += kScoreThreads) {
        const uint32_t key = own[j];
        if ((key & mask) == prefix) atomicAdd(hist + ((key >> shift) & (bins - 1)), 1);
      }
    }
    item_barrier(w.sync + pass, ctas, timeout_ns);
    int cnt[kFusedPer];  // digits bins - 1 - kFusedPer * t - e, read at L2
#pragma unroll
    for (int e = 0; e < kFusedPer; ++e) {
      const int digit = bins - 1 - kFusedPer * int(threadIdx.x) - e;
      cnt[e] = digit >= 0 ? __ldcg(hist + digit) : 0;
    }
    const bool decided = pick_digit<kScoreThreads, kFusedPer>(cnt, bins - 1, shift, prefix,
                                                              remaining, sm.scan, sm.pick);
    mask |= uint32_t(bins - 1) << shift;
    if (decided) break;
  }
  return {prefix, mask, remaining};
}

// (a, b) summed over the block; every thread gets the sums. Ends with a barrier.
__device__ __forceinline__ void block_sum2(int& a, int& b, FusedShared& sm) {
#pragma unroll
  for (int o = 16; o > 0; o /= 2) {
    a += __shfl_xor_sync(0xffffffffu, a, o);
    b += __shfl_xor_sync(0xffffffffu, b, o);
  }
  if (threadIdx.x % 32 == 0) sm.warp_gt[threadIdx.x / 32] = a, sm.warp_eq[threadIdx.x / 32] = b;
  __syncthreads();
  a = b = 0;
#pragma unroll
  for (int w = 0; w < kScoreThreads / 32; ++w) a += sm.warp_gt[w], b += sm.warp_eq[w];
  __syncthreads();
}

// kv[c, slot0 + i] = K / V row pos(i) of the chunk for i < n (pos(i) = kept[i], or slot0 + i
// when kept is null: the chunk keeps every row), and indices likewise. kFusedPairs (row,
// 8-column chunk) pairs per thread, every load of a round before its stores.
template <typename T>
__device__ __forceinline__ void copy_rows(const SelectPassingParams& p, const ScoreTile& t,
                                          const int* kept, int slot0, int n) {
  const int cpr = p.head_dim / 8, pairs = n * cpr;
  const int64_t start = p.chunk_start[t.c];
  const int64_t plane = int64_t(p.batch) * p.heads_kv * p.head_dim;  // kv[c, i, 0] to kv[c, i, 1]
  const T* k = static_cast<const T*>(p.k) + t.b * p.k_batch_stride + t.h * p.k_head_stride;
  const T* v = static_cast<const T*>(p.v) + t.b * p.v_batch_stride + t.h * p.v_head_stride;
  T* kv = static_cast<T*>(p.kv) + int64_t(t.c) * p.capacity * 2 * plane +
          (int64_t(t.b) * p.heads_kv + t.h) * p.head_dim;
  int64_t* indices = p.indices + int64_t(t.item) * p.capacity;
  for (int f0 = threadIdx.x; f0 < pairs; f0 += kScoreThreads * kFusedPairs) {
    int pos[kFusedPairs];
    uint4 rk[kFusedPairs], rv[kFusedPairs];
#pragma unroll
    for (int u = 0; u < kFusedPairs; ++u) {
      const int f = f0 + u * kScoreThreads, i = f / cpr, e = f % cpr * 8;
      pos[u] = f < pairs ? (kept ? kept[i] : slot0 + i) : -1;
      if (pos[u] >= 0) {
        rk[u] = ldg_16(k + (start + pos[u]) * p.k_row_stride + e);
        rv[u] = ldg_16(v + (start + pos[u]) * p.v_row_stride + e);
      }
    }
#pragma unroll
    for (int u = 0; u < kFusedPairs; ++u) {
      const int f = f0 + u * kScoreThreads, i = f / cpr, e = f % cpr * 8;
      if (pos[u] >= 0) {
        const int64_t row = slot0 + i;
        *reinterpret_cast<uint4*>(kv + 2 * row * plane + e) = rk[u];
        *reinterpret_cast<uint4*>(kv + (2 * row + 1) * plane + e) = rv[u];
        if (e == 0) indices[row] = start + pos[u];
      }
    }
  }
}

// CTA `t.tile` of the item's `ctas` writes its share of the rows [m, capacity): zeros, index -1.
template <typename T>
__device__ __forceinline__ void zero_tail(const SelectPassingParams& p, const ScoreTile& t, int m,
                                          int ctas) {
  const int share = (p.capacity - m + ctas - 1) / ctas;
  const int s0 = m + t.tile * share, s1 = min(p.capacity, s0 + share);
  if (s0 >= s1) return;
  const int cpr = p.head_dim / 8, pairs = (s1 - s0) * cpr;
  const int64_t plane = int64_t(p.batch) * p.heads_kv * p.head_dim;
  T* kv = static_cast<T*>(p.kv) + int64_t(t.c) * p.capacity * 2 * plane +
          (int64_t(t.b) * p.heads_kv + t.h) * p.head_dim;
  int64_t* indices = p.indices + int64_t(t.item) * p.capacity;
  for (int f = threadIdx.x; f < pairs; f += kScoreThreads) {
    const int64_t row = s0 + f / cpr;
    const int e = f % cpr * 8;
    *reinterpret_cast<uint4*>(kv + 2 * row * plane + e) = make_uint4(0, 0, 0, 0);
    *reinterpret_cast<uint4*>(kv + (2 * row + 1) * plane + e) = make_uint4(0, 0, 0, 0);
    if (e == 0) indices[row] = -1;
  }
}

template <typename T>
__global__ void __launch_bounds__(kScoreThreads, 2) fused_kernel(const SelectPassingParams p) {
  __shared__ FusedShared sm;
  const ScoreTile t = score_tile_of(p);
  if (t.row0 >= t.len) {  // past the end of a shorter chunk: no rows, no barriers
    pdl_wait();
    return;
  }
  const int m = min(p.passing_len, t.len), ctas = (t.len + p.score_rows - 1) / p.score_rows;
  const int n = t.row_end - t.row0, tid = threadIdx.x;
  if (m == t.len) {  // the chunk keeps every row: slot = position
    copy_rows<T>(p, t, nullptr, t.row0, n);
    zero_tail<T>(p, t, m, ctas);
    pdl_wait();  // the grid never completes before kernel 1
    return;
  }
  const ItemWork w = item_work(p, t.item);
  score_rows<T>(p, sm.score, t, w.hist1);
  const uint32_t* own = reinterpret_cast<const uint32_t*>(sm.score.part);  // [n]
  const Threshold th = fused_threshold(own, n, m, w, ctas, p.barrier_timeout_ns, sm);

  // This thread's rows [r0, r1) of the CTA's n (contiguous: position order), flagged.
  const int per = (n + kScoreThreads - 1) / kScoreThreads;  // <= 16: score_rows <= 4096
  const int r0 = min(n, tid * per), r1 = min(n, r0 + per);
  unsigned gt = 0, eq = 0;
  for (int e = 0; e < r1 - r0; ++e) {
    const uint32_t key = own[r0 + e] & th.mask;
    gt |= unsigned(key > th.prefix) << e;
    eq |= unsigned(key == th.prefix) << e;
  }
  int before, total;  // (above << 16 | equal) counts of the CTA's rows before this thread's / all
  WarpScans<kScoreThreads>(sm.scan).ExclusiveSum((__popc(gt) << 16) | __popc(eq), before, total);
  if (tid == 0) w.counts[2 * t.tile] = total >> 16, w.counts[2 * t.tile + 1] = total & 0xFFFF;
  item_barrier(w.sync + 3, ctas, p.barrier_timeout_ns);
  int gt_tiles = 0, eq_tiles = 0;  // counts of the item's tiles before this one
  for (int i = tid; i < t.tile; i += kScoreThreads) {
    gt_tiles += __ldcg(w.counts + 2 * i);
    eq_tiles += __ldcg(w.counts + 2 * i + 1);
  }
  block_sum2(gt_tiles, eq_tiles, sm);

  // Kept keys: above the threshold, or equal to it among the first take_eq equal ones.
  const int first_slot = gt_tiles + min(eq_tiles, th.take_eq);
  const int kept_total =
      gt_tiles + (total >> 16) + min(eq_tiles + (total & 0xFFFF), th.take_eq) - first_slot;
  int* kept = reinterpret_cast<int*>(sm.score.raw);  // [kept_total] positions, slot order
  int eq_seen = eq_tiles + (before & 0xFFFF);
  int slot = gt_tiles + (before >> 16) + min(eq_seen, th.take_eq);
  for (int e = 0; e < r1 - r0; ++e) {
    const bool is_eq = (eq >> e) & 1;
    if (((gt >> e) & 1) || (is_eq && eq_seen < th.take_eq)) kept[slot++ - first_slot] = t.row0 + r0 + e;
    eq_seen += is_eq;
  }
  __syncthreads();
  copy_rows<T>(p, t, kept, first_slot, kept_total);
  zero_tail<T>(p, t, m, ctas);
}

}  // namespace spava::select
