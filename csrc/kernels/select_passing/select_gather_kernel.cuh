// select_passing, part (3): the block-wide exact top-m of one item (radix select + compaction in
// position order), run once per item by the last score CTA of that item (see
// select_passing_kernel.cuh), and the gather kernel that copies the kept K/V rows into the
// packed send buffer. Also the device helpers of the three kernels.
#pragma once

#include <cub/block/block_scan.cuh>
#include <cstdint>

#include "select_passing/select_passing.h"
#include "spava/params.h"

namespace spava::select {

// ---------------------------------------------------------------------------- helpers
// Blocks until the preceding grid on the stream has completed and its writes are visible; a
// no-op when the kernel was launched without programmatic stream serialization.
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}

// Lets the next grid on the stream (launched with PDL) be scheduled before this one ends.
__device__ __forceinline__ void pdl_launch_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}

// Order-preserving map float -> uint32 (larger float, larger key). Scores are never NaN or -0
// (sums start at +0), so equal keys are exactly equal scores.
__device__ __forceinline__ uint32_t order_key(float f) {
  const uint32_t u = __float_as_uint(f);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

__device__ __forceinline__ uint4 ldg_16(const void* src) {
  return __ldg(reinterpret_cast<const uint4*>(src));
}

// 4 keys at keys[j] (16-byte aligned): shared memory, or global memory written by other CTAs of
// the running grid (read at L2, never a stale L1 line).
template <bool kShared>
__device__ __forceinline__ uint4 load_keys4(const uint32_t* keys, int j) {
  if constexpr (kShared) return *reinterpret_cast<const uint4*>(keys + j);
  else return __ldcg(reinterpret_cast<const uint4*>(keys + j));
}

// ---------------------------------------------------------------------------- block select
// kThreads threads select the m < len largest keys of one item. Each thread owns kBins = 2048 /
// kThreads digits of a radix pass; loads keep kKeyLoads 16-byte key loads in flight.
constexpr int kKeyLoads = 8;

template <int kThreads>
struct SelectShared {
  typename cub::BlockScan<int, kThreads>::TempStorage scan;
  int warp_gt[kThreads / 32], warp_eq[kThreads / 32];
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
// top - kBins * t - e (cnt[e], 0 below digit 0). Picks the digit of the wanted key and returns
// true when every key with the extended prefix is kept (no more bits needed). Block-wide.
template <int kThreads, int kBins>
__device__ __forceinline__ bool pick_digit(const int (&cnt)[kBins], int top, int shift,
                                           uint32_t& prefix, int& remaining,
                                           SelectShared<kThreads>& sm) {
  int sum = 0, above = 0;  // above: counted keys in the digits above this thread's
#pragma unroll
  for (int e = 0; e < kBins; ++e) sum += cnt[e];
  cub::BlockScan<int, kThreads>(sm.scan).ExclusiveSum(sum, above);
#pragma unroll
  for (int e = 0; e < kBins; ++e) {
    if (above < remaining && above + cnt[e] >= remaining) {  // exactly one (thread, e)
      sm.prefix = prefix | (uint32_t(top - kBins * int(threadIdx.x) - e) << shift);
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

// Counts the digit (key >> shift) & (bins - 1) of the keys matching prefix under mask into hist
// (shared, zero on entry), then picks the wanted digit. After the first digit the matching keys
// spread over many bins, so plain shared atomics rarely collide (a run of equal keys does).
template <int kThreads, bool kShared>
__device__ __forceinline__ bool radix_pass(const uint32_t* keys, int len, uint32_t mask,
                                           int shift, int bins, uint32_t& prefix, int& remaining,
                                           int* hist, SelectShared<kThreads>& sm) {
  constexpr int kBins = kRadixBins / kThreads;
  for (int base = 0; base < len; base += 4 * kThreads * kKeyLoads) {
    uint4 k4[kKeyLoads];
#pragma unroll
    for (int u = 0; u < kKeyLoads; ++u) {
      const int j = base + 4 * (int(threadIdx.x) + u * kThreads);
      k4[u] = j < len ? load_keys4<kShared>(keys, j) : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int u = 0; u < kKeyLoads; ++u) {
      const int j = base + 4 * (int(threadIdx.x) + u * kThreads);
      const uint32_t kk[4] = {k4[u].x, k4[u].y, k4[u].z, k4[u].w};
#pragma unroll
      for (int e = 0; e < 4; ++e)
        if (j + e < len && (kk[e] & mask) == prefix)
          atomicAdd(hist + ((kk[e] >> shift) & (bins - 1)), 1);
    }
  }
  __syncthreads();
  int cnt[kBins];
#pragma unroll
  for (int e = 0; e < kBins; ++e) {
    const int digit = bins - 1 - kBins * int(threadIdx.x) - e;
    cnt[e] = digit >= 0 ? hist[digit] : 0;
  }
  return pick_digit<kThreads>(cnt, bins - 1, shift, prefix, remaining, sm);
}

// The threshold of the m < len kept keys: digit 1 (bits 31..21) from the score kernel's
// histogram (item_hist, global), digits 2 (20..10) and 3 (9..0) counted here unless decided.
// hist: shared [kRadixBins], zero on entry.
template <int kThreads, bool kShared>
__device__ __forceinline__ Threshold find_threshold(const uint32_t* keys, int len, int m,
                                                    const int (&top_cnt)[kRadixBins / kThreads],
                                                    int* hist, SelectShared<kThreads>& sm) {
  uint32_t prefix = 0, mask = 0xFFE00000u;
  int remaining = m;
  bool done = pick_digit<kThreads>(top_cnt, kRadixBins - 1, 21, prefix, remaining, sm);
  for (int pass = 0; pass < 2 && !done; ++pass) {  // `done` is block-uniform
    const int shift = pass == 0 ? 10 : 0, bins = pass == 0 ? kRadixBins : kRadixBins / 2;
    if (pass > 0) {  // every thread read pass 0's counts before pick_digit's barrier
      for (int i = threadIdx.x; i < kRadixBins; i += kThreads) hist[i] = 0;
      __syncthreads();
    }
    done = radix_pass<kThreads, kShared>(keys, len, mask, shift, bins, prefix, remaining, hist,
                                         sm);
    mask |= uint32_t(bins - 1) << shift;
  }
  return {prefix, mask, remaining};
}

// Ranks the flagged key slots (bit e of `flags`: key 4 * lane + e of a 128-key block) of a warp
// in position order: before = flagged keys of the lanes below, returns the warp's total.
__device__ __forceinline__ int rank_4(unsigned flags, int& before) {
  const unsigned below = (1u << (threadIdx.x % 32)) - 1;
  int total = 0;
  before = 0;
#pragma unroll
  for (int e = 0; e < 4; ++e) {
    const unsigned bits = __ballot_sync(0xffffffffu, (flags >> e) & 1);
    before += __popc(bits & below);
    total += __popc(bits);
  }
  return total;
}

// Bit e = key e of k4 (positions j + e, those >= end ignored) is above / equal to t.prefix.
__device__ __forceinline__ void classify_4(const uint4& k4, int j, int end, const Threshold& t,
                                           unsigned& gt, unsigned& eq) {
  const uint32_t kk[4] = {k4.x, k4.y, k4.z, k4.w};
  gt = eq = 0;
#pragma unroll
  for (int e = 0; e < 4; ++e) {
    const uint32_t key = kk[e] & t.mask;
    gt |= unsigned(j + e < end && key > t.prefix) << e;
    eq |= unsigned(j + e < end && key == t.prefix) << e;
  }
}

// sel[0, m) (global) = the kept positions in ascending order. Warp w owns positions
// [w * per, (w + 1) * per), per a multiple of 128; lane l reads keys 4l..4l+3 of each 128-key
// block (one 16-byte load, kU blocks in flight). A counting pass places each warp, ballots rank
// the keys inside a block.
template <int kThreads, bool kShared>
__device__ __forceinline__ void compact(const uint32_t* keys, int len, const Threshold& t,
                                        int* sel, SelectShared<kThreads>& sm) {
  constexpr int kWarps = kThreads / 32, kU = kKeyLoads / 2;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int per = (len + 128 * kWarps - 1) / (128 * kWarps) * 128;
  const int w0 = min(len, warp * per), w1 = min(len, w0 + per);
  auto load_blocks = [&](int base, uint4 (&k4)[kU]) {
#pragma unroll
    for (int u = 0; u < kU; ++u) {
      const int j = base + 128 * u + 4 * lane;
      k4[u] = j < w1 ? load_keys4<kShared>(keys, j) : make_uint4(0, 0, 0, 0);
    }
  };
  int n_gt = 0, n_eq = 0;  // this lane's, then the warp's
  for (int base = w0; base < w1; base += 128 * kU) {
    uint4 k4[kU];
    load_blocks(base, k4);
#pragma unroll
    for (int u = 0; u < kU; ++u) {
      unsigned gt, eq;
      classify_4(k4[u], base + 128 * u + 4 * lane, w1, t, gt, eq);
      n_gt += __popc(gt), n_eq += __popc(eq);
    }
  }
#pragma unroll
  for (int o = 16; o > 0; o /= 2) {
    n_gt += __shfl_xor_sync(0xffffffffu, n_gt, o);
    n_eq += __shfl_xor_sync(0xffffffffu, n_eq, o);
  }
  if (lane == 0) sm.warp_gt[warp] = n_gt, sm.warp_eq[warp] = n_eq;
  __syncthreads();
  int slot = 0, eq_seen = 0;  // kept keys and equal keys before the next block of this warp
  for (int w = 0; w < warp; ++w) {
    slot += sm.warp_gt[w] + max(0, min(sm.warp_eq[w], t.take_eq - eq_seen));
    eq_seen += sm.warp_eq[w];
  }
  for (int base = w0; base < w1; base += 128 * kU) {
    uint4 k4[kU];
    load_blocks(base, k4);
#pragma unroll
    for (int u = 0; u < kU; ++u) {
      const int j = base + 128 * u + 4 * lane;
      unsigned keep, eq;
      classify_4(k4[u], j, w1, t, keep, eq);
      int eq_rank, at;  // equal keys / kept keys of this block before this lane's
      const int eq_total = rank_4(eq, eq_rank);
      eq_rank += eq_seen;
#pragma unroll
      for (int e = 0; e < 4; ++e)
        if (((eq >> e) & 1) && eq_rank++ < t.take_eq) keep |= 1u << e;
      const int keep_total = rank_4(keep, at);
      at += slot;
#pragma unroll
      for (int e = 0; e < 4; ++e)
        if ((keep >> e) & 1) sel[at++] = j + e;
      slot += keep_total;
      eq_seen += eq_total;
    }
  }
}

// Run by one CTA per item (kThreads threads) once the item's keys and top-digit histogram are
// complete: sel[0, m) = the positions of the m < len largest keys, ascending. keys: global [len]
// (16-byte aligned, read at L2); item_hist: global [kRadixBins]; skeys: shared buffer of
// kSmemKeys words that caches the keys when len fits; hist: shared [kRadixBins], any contents.
template <int kThreads, int kSmemKeys>
__device__ __forceinline__ void select_item(const uint32_t* keys, const int* item_hist, int len,
                                            int m, uint32_t* skeys, int* hist, int* sel,
                                            SelectShared<kThreads>& sm) {
  constexpr int kBins = kRadixBins / kThreads;
  static_assert(kBins % 4 == 0 && kSmemKeys % 4 == 0, "16-byte loads of counts and keys");
  const int tid = threadIdx.x;
  int top[kBins];  // counts of digits 2047 - kBins * tid - e, loaded with the keys
  const int4* h4 = reinterpret_cast<const int4*>(item_hist + kRadixBins - kBins * (tid + 1));
#pragma unroll
  for (int i = 0; i < kBins / 4; ++i) {
    const int4 v = __ldcg(h4 + i);
    top[kBins - 1 - 4 * i] = v.x, top[kBins - 2 - 4 * i] = v.y;
    top[kBins - 3 - 4 * i] = v.z, top[kBins - 4 - 4 * i] = v.w;
  }
  for (int i = tid; i < kRadixBins; i += kThreads) hist[i] = 0;
  if (len <= kSmemKeys) {
    for (int base = 0; base < len; base += 4 * kThreads * kKeyLoads) {
      uint4 k4[kKeyLoads];
#pragma unroll
      for (int u = 0; u < kKeyLoads; ++u) {
        const int j = base + 4 * (tid + u * kThreads);
        k4[u] = j < len ? load_keys4<false>(keys, j) : make_uint4(0, 0, 0, 0);
      }
#pragma unroll
      for (int u = 0; u < kKeyLoads; ++u) {
        const int j = base + 4 * (tid + u * kThreads);
        if (j < len) *reinterpret_cast<uint4*>(skeys + j) = k4[u];
      }
    }
    __syncthreads();
    const Threshold t = find_threshold<kThreads, true>(skeys, len, m, top, hist, sm);
    compact<kThreads, true>(skeys, len, t, sel, sm);
  } else {  // long chunk: every pass reads the keys at L2
    __syncthreads();
    const Threshold t = find_threshold<kThreads, false>(keys, len, m, top, hist, sm);
    compact<kThreads, false>(keys, len, t, sel, sm);
  }
}

// ---------------------------------------------------------------------------- (3) gather
// grid (gather_tiles * items), CTA (item, tile) fills rows [i0, i0 + gather_rows) of the item's
// send buffer: kv[c, i, 0 / 1, b, h, :] = K / V row sel[i] of the chunk for i < m (sel[i] = i
// when the chunk keeps every row), zeros past m; indices[c, b, h, i] likewise, -1 past m.
// Thread = kGatherPairs (row, 8-column chunk) pairs, every K and V load in flight before any
// store. Items that select wait for the score grid (sel); the others start at once.
constexpr int kGatherThreads = 256;
constexpr int kGatherPairs = 4;

// Rows per gather CTA: one round of kGatherPairs pairs per thread (>= 16: cpr <= 64).
__host__ __device__ constexpr int gather_rows(int cpr) {
  return kGatherThreads * kGatherPairs / cpr > 0 ? kGatherThreads * kGatherPairs / cpr : 1;
}

template <typename T>
__global__ void __launch_bounds__(kGatherThreads) gather_kernel(const SelectPassingParams p) {
  const int item = blockIdx.x / p.gather_tiles, tile = blockIdx.x % p.gather_tiles;
  const int h = item % p.heads_kv, b = (item / p.heads_kv) % p.batch;
  const int c = item / (p.heads_kv * p.batch);
  const int len = p.chunk_len[c], m = min(p.passing_len, len), tid = threadIdx.x;
  const int cpr = p.head_dim / 8, i0 = tile * p.gather_rows;
  const int n = max(0, min(p.capacity - i0, p.gather_rows)) * cpr;  // pairs of this CTA
  const int64_t start = p.chunk_start[c];
  const int64_t plane = int64_t(p.batch) * p.heads_kv * p.head_dim;  // kv[c, i, 0] to kv[c, i, 1]
  const T* k = static_cast<const T*>(p.k) + b * p.k_batch_stride + h * p.k_head_stride;
  const T* v = static_cast<const T*>(p.v) + b * p.v_batch_stride + h * p.v_head_stride;
  T* kv = static_cast<T*>(p.kv) + int64_t(c) * p.capacity * 2 * plane +
          (int64_t(b) * p.heads_kv + h) * p.head_dim;
  int64_t* indices = p.indices + int64_t(item) * p.capacity;
  const int* sel = p.sel + int64_t(item) * p.capacity;
  const bool selects = m < len;
  if (selects) pdl_wait();  // the score grid has completed: sel is visible
  for (int f0 = tid; f0 < n; f0 += kGatherThreads * kGatherPairs) {
    int pos[kGatherPairs];
#pragma unroll
    for (int u = 0; u < kGatherPairs; ++u) {
      const int f = f0 + u * kGatherThreads, i = i0 + f / cpr;
      pos[u] = f < n && i < m ? (selects ? __ldcg(sel + i) : i) : -1;
    }
    uint4 rk[kGatherPairs], rv[kGatherPairs];
#pragma unroll
    for (int u = 0; u < kGatherPairs; ++u) {  // every load before any store
      const int e = (f0 + u * kGatherThreads) % cpr * 8;
      rk[u] = rv[u] = make_uint4(0, 0, 0, 0);
      if (pos[u] >= 0) {
        rk[u] = ldg_16(k + (start + pos[u]) * p.k_row_stride + e);
        rv[u] = ldg_16(v + (start + pos[u]) * p.v_row_stride + e);
      }
    }
#pragma unroll
    for (int u = 0; u < kGatherPairs; ++u) {
      const int f = f0 + u * kGatherThreads, i = i0 + f / cpr, e = f % cpr * 8;
      if (f < n) {
        *reinterpret_cast<uint4*>(kv + 2 * int64_t(i) * plane + e) = rk[u];
        *reinterpret_cast<uint4*>(kv + (2 * int64_t(i) + 1) * plane + e) = rv[u];
        if (e == 0) indices[i] = pos[u] < 0 ? -1 : start + pos[u];
      }
    }
  }
  pdl_wait();  // (returns at once when waited above) the grid never completes before the score grid
}

}  // namespace spava::select
