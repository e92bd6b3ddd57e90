// select_passing kernel (3): exact top-m by radix select, compaction in position order, gather
// of the kept K/V rows into the packed send buffer. Rule and protocol: select_passing_kernel.cuh.
#pragma once

#include <cub/block/block_scan.cuh>

#include "select_passing/select_passing_kernel.cuh"

namespace spava::select {

constexpr int kSelectThreads = 512;
constexpr int kSelectWarps = kSelectThreads / 32;
constexpr int kCopyLoads = 4;    // 16-byte key loads in flight per thread (32 KB per CTA)
constexpr int kGatherPairs = 4;  // (row, 8-column chunk) pairs per thread per round: 8 loads
static_assert(kSelectThreads * 4 == kRadixBins, "each thread scans 4 bins of a digit");

struct SelectShared {
  typename cub::BlockScan<int, kSelectThreads>::TempStorage scan;
  int hist[kRadixBins];
  int warp_gt[kSelectWarps], warp_eq[kSelectWarps];
  uint32_t prefix;
  int remaining, done;
};

// The kept positions: (key & mask) > prefix, plus the first take_eq with (key & mask) == prefix.
struct Threshold {
  uint32_t prefix, mask;
  int take_eq;
};

// One radix step. Invariant: the m-th largest key has `prefix` in the bits already resolved and
// is the remaining-th largest of the keys that do. Thread t holds the counts of digits
// top - 4t - e (cnt[e], 0 below digit 0). Picks the digit of the wanted key and returns true when
// every key with the extended prefix is kept (the threshold needs no more bits). Block-wide.
__device__ __forceinline__ bool pick_digit(const int (&cnt)[4], int top, int shift,
                                           uint32_t& prefix, int& remaining, SelectShared& sm) {
  int above = 0;  // counted keys in digits above this thread's
  cub::BlockScan<int, kSelectThreads>(sm.scan).ExclusiveSum(cnt[0] + cnt[1] + cnt[2] + cnt[3],
                                                            above);
#pragma unroll
  for (int e = 0; e < 4; ++e) {
    if (above < remaining && above + cnt[e] >= remaining) {  // exactly one (thread, e)
      sm.prefix = prefix | (uint32_t(top - 4 * int(threadIdx.x) - e) << shift);
      sm.remaining = remaining - above;
      sm.done = cnt[e] == remaining - above;
    }
    above += cnt[e];
  }
  __syncthreads();
  prefix = sm.prefix;
  remaining = sm.remaining;
  return sm.done;
}

// Counts the digit (key >> shift) & (bins - 1) of the keys matching prefix under mask into
// sm.hist (zero on entry), then picks the wanted digit. keys: [len] in shared or global memory,
// 16-byte aligned.
__device__ __forceinline__ bool radix_pass(const uint32_t* keys, int len, uint32_t mask,
                                           int shift, int bins, uint32_t& prefix,
                                           int& remaining, SelectShared& sm) {
  for (int base = 0; base < len; base += 4 * kSelectThreads) {  // warp-uniform trip count
    const int j = base + 4 * int(threadIdx.x);
    const uint4 k4 = j < len ? *reinterpret_cast<const uint4*>(keys + j) : make_uint4(0, 0, 0, 0);
    const uint32_t kk[4] = {k4.x, k4.y, k4.z, k4.w};
#pragma unroll
    for (int e = 0; e < 4; ++e)
      count_bin(sm.hist, j + e < len && (kk[e] & mask) == prefix,
                int((kk[e] >> shift) & (bins - 1)));
  }
  __syncthreads();
  int cnt[4];
#pragma unroll
  for (int e = 0; e < 4; ++e) {
    const int digit = bins - 1 - 4 * int(threadIdx.x) - e;
    cnt[e] = digit >= 0 ? sm.hist[digit] : 0;
  }
  return pick_digit(cnt, bins - 1, shift, prefix, remaining, sm);
}

// The threshold of the m = min(p, len) < len kept keys: digit 1 (bits 31..21) from kernel 2's
// histogram (h4: this thread's digits 2044 - 4t .. 2047 - 4t), digits 2 (20..10) and 3 (9..0)
// counted here unless already decided.
__device__ __forceinline__ Threshold find_threshold(const uint32_t* keys, int len, int m,
                                                    const int4& h4, SelectShared& sm) {
  uint32_t prefix = 0, mask = 0xFFE00000u;
  int remaining = m;
  const int cnt[4] = {h4.w, h4.z, h4.y, h4.x};  // digits 2047 - 4t - e
  bool done = pick_digit(cnt, kRadixBins - 1, 21, prefix, remaining, sm);
  for (int pass = 0; pass < 2 && !done; ++pass) {  // `done` is block-uniform
    const int shift = pass == 0 ? 10 : 0, bins = pass == 0 ? kRadixBins : kRadixBins / 2;
    if (pass > 0) {
      for (int i = threadIdx.x; i < kRadixBins; i += kSelectThreads) sm.hist[i] = 0;
      __syncthreads();
    }
    done = radix_pass(keys, len, mask, shift, bins, prefix, remaining, sm);
    mask |= uint32_t(bins - 1) << shift;
  }
  return {prefix, mask, remaining};
}

// sel[0, m) = the kept positions in ascending order. Warp w owns positions
// [w * per_warp, (w + 1) * per_warp); lanes read consecutive keys (no bank conflicts), ballots
// rank them inside the warp and a scan over the warps' counts places each warp.
__device__ __forceinline__ void compact(const uint32_t* keys, int len, Threshold t, int* sel,
                                        SelectShared& sm) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const unsigned below = (1u << lane) - 1;
  const int per_warp = (len + kSelectThreads - 1) / kSelectThreads * 32;
  const int w0 = min(len, warp * per_warp), w1 = min(len, w0 + per_warp);
  int n_gt = 0, n_eq = 0;
  for (int base = w0; base < w1; base += 32) {
    const int j = base + lane;
    const uint32_t key = j < w1 ? keys[j] & t.mask : 0;
    n_gt += __popc(__ballot_sync(0xffffffffu, j < w1 && key > t.prefix));
    n_eq += __popc(__ballot_sync(0xffffffffu, j < w1 && key == t.prefix));
  }
  if (lane == 0) sm.warp_gt[warp] = n_gt, sm.warp_eq[warp] = n_eq;
  __syncthreads();
  int slot = 0, eq_seen = 0;  // kept and equal keys before this warp's range
  for (int w = 0; w < warp; ++w) {
    slot += sm.warp_gt[w] + max(0, min(sm.warp_eq[w], t.take_eq - eq_seen));
    eq_seen += sm.warp_eq[w];
  }
  for (int base = w0; base < w1; base += 32) {
    const int j = base + lane;
    const uint32_t key = j < w1 ? keys[j] & t.mask : 0;
    const bool eq = j < w1 && key == t.prefix;
    const unsigned eq_bits = __ballot_sync(0xffffffffu, eq);
    const bool keep = (j < w1 && key > t.prefix) ||
                      (eq && eq_seen + __popc(eq_bits & below) < t.take_eq);
    const unsigned keep_bits = __ballot_sync(0xffffffffu, keep);
    if (keep) sel[slot + __popc(keep_bits & below)] = j;
    slot += __popc(keep_bits);
    eq_seen += __popc(eq_bits);
  }
  __syncthreads();
}

// grid (gather_splits * items), kSelectThreads threads. Every CTA of an item selects (the
// work is small next to the launch of another kernel), then gathers its share of the rows
// [0, capacity): kept K/V rows, zeros and -1 past m. Dynamic shared memory: keys[smem_keys]
// (when the chunk fits), then sel[capacity].
template <typename T>
__global__ void __launch_bounds__(kSelectThreads)
    select_gather_kernel(const SelectPassingParams p) {
  __shared__ SelectShared sm;
  extern __shared__ __align__(16) uint32_t dyn[];
  int* sel = reinterpret_cast<int*>(dyn + p.smem_keys);
  const int item = blockIdx.x / p.gather_splits, split = blockIdx.x % p.gather_splits;
  const int h = item % p.heads_kv, b = (item / p.heads_kv) % p.batch;
  const int c = item / (p.heads_kv * p.batch);
  const int len = p.chunk_len[c], m = min(p.passing_len, len), tid = threadIdx.x;
  for (int i = tid; i < kRadixBins; i += kSelectThreads) sm.hist[i] = 0;
  pdl_wait();  // kernel 2 has completed: p.keys and p.hist are visible
  if (m < len) {
    const uint32_t* keys = p.keys + int64_t(item) * p.key_stride;
    const int4 h4 =  // in flight with the key copy
        __ldcg(reinterpret_cast<const int4*>(p.hist + int64_t(item) * kRadixBins) +
               kSelectThreads - 1 - tid);
    if (len <= p.smem_keys) {
      for (int j0 = 4 * tid; j0 < len; j0 += 4 * kSelectThreads * kCopyLoads) {
        uint4 x[kCopyLoads];
#pragma unroll
        for (int u = 0; u < kCopyLoads; ++u) {
          const int j = j0 + u * 4 * kSelectThreads;
          x[u] = j < len ? __ldcg(reinterpret_cast<const uint4*>(keys + j))
                         : make_uint4(0, 0, 0, 0);
        }
#pragma unroll
        for (int u = 0; u < kCopyLoads; ++u) {
          const int j = j0 + u * 4 * kSelectThreads;
          if (j < len) *reinterpret_cast<uint4*>(dyn + j) = x[u];
        }
      }
      __syncthreads();
      compact(dyn, len, find_threshold(dyn, len, m, h4, sm), sel, sm);
    } else {  // keys stay in global memory (L2): same code, slower
      compact(keys, len, find_threshold(keys, len, m, h4, sm), sel, sm);
    }
  }

  const int cpr = p.head_dim / 8;
  const int per_split = (p.capacity + p.gather_splits - 1) / p.gather_splits;
  const int i0 = split * per_split, n = max(0, min(p.capacity, i0 + per_split) - i0) * cpr;
  const int64_t start = p.chunk_start[c];
  const int64_t plane = int64_t(p.batch) * p.heads_kv * p.head_dim;  // kv[c, i, 0] to kv[c, i, 1]
  const T* k = static_cast<const T*>(p.k) + b * p.k_batch_stride + h * p.k_head_stride;
  const T* v = static_cast<const T*>(p.v) + b * p.v_batch_stride + h * p.v_head_stride;
  T* kv = static_cast<T*>(p.kv) + int64_t(c) * p.capacity * 2 * plane +
          (int64_t(b) * p.heads_kv + h) * p.head_dim;
  int64_t* indices = p.indices + int64_t(item) * p.capacity;
  for (int f0 = tid; f0 < n; f0 += kSelectThreads * kGatherPairs) {
    uint4 rk[kGatherPairs], rv[kGatherPairs];
    int pos[kGatherPairs];
#pragma unroll
    for (int u = 0; u < kGatherPairs; ++u) {  // every load before any store
      const int f = f0 + u * kSelectThreads, i = i0 + f / cpr, e = f % cpr * 8;
      rk[u] = rv[u] = make_uint4(0, 0, 0, 0);
      pos[u] = -1;
      if (f < n && i < m) {
        pos[u] = m < len ? sel[i] : i;
        rk[u] = ldg_16(k + (start + pos[u]) * p.k_row_stride + e);
        rv[u] = ldg_16(v + (start + pos[u]) * p.v_row_stride + e);
      }
    }
#pragma unroll
    for (int u = 0; u < kGatherPairs; ++u) {
      const int f = f0 + u * kSelectThreads, i = i0 + f / cpr, e = f % cpr * 8;
      if (f < n) {
        *reinterpret_cast<uint4*>(kv + 2 * i * plane + e) = rk[u];
        *reinterpret_cast<uint4*>(kv + (2 * i + 1) * plane + e) = rv[u];
        if (e == 0) indices[i] = pos[u] < 0 ? -1 : start + pos[u];
      }
    }
  }
}

}  // namespace spava::select
