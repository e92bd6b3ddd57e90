// select_passing, the selection inside kernel (3): one CTA finds the exact threshold of its item
// on its own and the kept positions that fill its range of send-buffer rows (compaction in
// position order). Every CTA of an item runs this on the same data with the same integer
// arithmetic, so all of them agree on the threshold and on the slot of every kept key.
//
// Latency is what counts: this is the critical path after the score grid. Three radix passes over
// every key with cub block scans ran ~1.8K instructions per warp at ~10 cycles each (ncu): 3.8 us
// for the threshold and 1.8 us for the compaction (docs/kernels/select_passing.md). So here
//  * digit 1 (key bits 31..21) comes from the score grid's counts; digit 2 (bits 20..10) is
//    counted over the keys with digit 1 in one pass; the keys with both (usually a handful) are
//    listed and ranked by one warp, which gives the exact m-th key. Only when more than 32 keys
//    share those 22 bits (ties, plateaus) does a third pass count bits 9..0;
//  * the compaction counts first (two compares per key) and only the few threads whose kept
//    keys fall in this CTA's range walk their keys again;
//  * block scans have one barrier and ~15 instructions per warp.
// Keys past the chunk's end read as 0 (load_tile): no real key is 0 (order_key of any score,
// NaN included, is >= 0x007FFFFF), and every threshold below has prefix >= 3 << 21, so 0 is
// never kept.
#pragma once

#include <cstdint>

#include "common/trace.cuh"
#include "select_passing/config.h"
#include "select_passing/select_passing.h"

namespace spava::select {

constexpr int kSelectWarps = kSelectThreads / 32;
constexpr int kTileGroups = kTileKeys / 4;         // 16-byte key groups of a thread per tile
constexpr int kTile = kSelectThreads * kTileKeys;  // keys per tile (8192)
constexpr int kLowBins = 1024;                     // digit 3: key bits 9..0
constexpr int kMaxRanked = 32;             // keys ranked by one warp after digit 2
static_assert(kRadixBins == 4 * kSelectThreads, "each thread holds the counts of 4 digits");

struct SelectShared {
  int warp_sums[kSelectWarps];
  int hist2[kRadixBins + 32];  // counts of digit 2 (key bits 20..10), zero on entry; a pad
  int hist3[kLowBins + 32];    // counts of digit 3 (key bits 9..0), zero on entry; a pad
  uint32_t ranked[kMaxRanked];
  uint32_t prefix;
  int remaining, done, bin_count;  // a pick's result; bin_count: keys in the chosen bin
  int num_ranked;                  // zero on entry
};

// The kept keys: key > prefix | ~mask (above), plus the take_eq lowest positions with
// (key & mask) == prefix (equal: the tie rule).
struct Threshold {
  uint32_t prefix, mask;
  int take_eq;
};

// The keys of one item: global [len] (16-byte aligned; written by the previous grid, so read at
// L2), and their copy in shared memory, or cache = nullptr when the chunk is too long for it.
struct ItemKeys {
  const uint32_t* global;
  const uint4* cache;
  int len;
};

__device__ __forceinline__ int num_tiles(int len) {
  return int((unsigned(len) + kTile - 1) / kTile);
}

// Inclusive sum of x over the lanes of a warp (every lane calls it).
__device__ __forceinline__ int warp_inclusive_sum(int x) {
  const int lane = int(threadIdx.x % 32);
#pragma unroll
  for (int off = 1; off < 32; off *= 2) {
    const int y = __shfl_up_sync(0xffffffffu, x, off);
    if (lane >= off) x += y;
  }
  return x;
}

// Exclusive sum of x over the CTA in thread order, and the total: warp scans, one barrier, then
// every warp scans the warp totals itself (two shuffle scans; cub's warp-scan BlockScan adds them
// in a ~100-instruction chain per warp). The caller puts a barrier between two calls.
__device__ __forceinline__ int block_exclusive_sum(int x, int& total, SelectShared& sm) {
  const int lane = int(threadIdx.x % 32), warp = int(threadIdx.x / 32);
  const int incl = warp_inclusive_sum(x);
  if (lane == 31) sm.warp_sums[warp] = incl;
  __syncthreads();
  const int w = lane < kSelectWarps ? sm.warp_sums[lane] : 0;
  const int wi = warp_inclusive_sum(w);
  total = __shfl_sync(0xffffffffu, wi, kSelectWarps - 1);
  const int before = __shfl_sync(0xffffffffu, wi - w, warp);
  return before + incl - x;
}

// Shared-memory slot of the 16-byte key group q. A thread reads 4 consecutive groups (its 16
// keys of a tile); rotating each thread's 4 groups by (q >> 3) & 3 puts the 8 threads of a
// quarter warp on distinct banks. The slot stays in q's aligned group of 4.
__device__ __forceinline__ int cache_slot(int q) { return q ^ ((q >> 3) & 3); }

// cache[cache_slot(q)] = keys[4q, 4q + 4) for every group q < ceil(len / 16) * 4, coalesced, 4
// loads per thread in flight; keys past len are written as 0. The cache holds that many groups.
__device__ __forceinline__ void fill_cache(const uint32_t* keys, int len, uint4* cache) {
  const int groups = (len + 3) / 4, padded = (len + kTileKeys - 1) / kTileKeys * kTileGroups;
  const uint4* src = reinterpret_cast<const uint4*>(keys);
  for (int q0 = threadIdx.x; q0 < padded; q0 += 4 * kSelectThreads) {
    uint4 x[4];
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      const int q = q0 + u * kSelectThreads;
      x[u] = q < groups ? __ldcg(src + q) : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      const int q = q0 + u * kSelectThreads;
      if (q == groups - 1) {  // positions 4q + 1.. may lie past len
        if (4 * q + 1 >= len) x[u].y = 0;
        if (4 * q + 2 >= len) x[u].z = 0;
        if (4 * q + 3 >= len) x[u].w = 0;
      }
      if (q < padded) cache[cache_slot(q)] = x[u];
    }
  }
}

// This thread's keys of a tile: key[e] is position j0 + e, j0 = tile * kTile + kTileKeys * tid;
// 0 past len.
__device__ __forceinline__ void load_tile(const ItemKeys& ks, int tile,
                                          uint32_t (&key)[kTileKeys]) {
  const int j0 = tile * kTile + kTileKeys * int(threadIdx.x);
  uint4 x[kTileGroups];
  if (ks.cache) {  // zero-filled to a multiple of kTileKeys: no per-group bounds
    const bool in = j0 < ks.len;
#pragma unroll
    for (int u = 0; u < kTileGroups; ++u)
      x[u] = in ? ks.cache[cache_slot(j0 / 4 + u)] : make_uint4(0, 0, 0, 0);
  } else {
    const int groups = (ks.len + 3) / 4;
#pragma unroll
    for (int u = 0; u < kTileGroups; ++u) {
      const int q = j0 / 4 + u;
      x[u] = q < groups ? __ldcg(reinterpret_cast<const uint4*>(ks.global) + q)
                        : make_uint4(0, 0, 0, 0);
    }
  }
#pragma unroll
  for (int u = 0; u < kTileGroups; ++u)
    key[4 * u] = x[u].x, key[4 * u + 1] = x[u].y, key[4 * u + 2] = x[u].z, key[4 * u + 3] = x[u].w;
  if (!ks.cache && j0 + kTileKeys > ks.len) {  // the global rows past len hold anything
#pragma unroll
    for (int e = 0; e < kTileKeys; ++e)
      if (j0 + e >= ks.len) key[e] = 0;
  }
}

// One radix step. Invariant: the m-th largest key has `prefix` in the bits already resolved and
// is the remaining-th largest of the keys that do. Thread t holds the counts of digits
// top - 4t - e (cnt[e], 0 below digit 0). Picks the digit of the wanted key (sm.bin_count: its
// count) and returns true when every key with the extended prefix is kept (no more bits needed).
// Ends with a barrier, after which every thread has the pick.
__device__ __forceinline__ bool pick_digit(const int (&cnt)[4], int top, int shift,
                                           uint32_t& prefix, int& remaining, SelectShared& sm) {
  int total;
  int above = block_exclusive_sum(cnt[0] + cnt[1] + cnt[2] + cnt[3], total, sm);
#pragma unroll
  for (int e = 0; e < 4; ++e) {
    if (above < remaining && above + cnt[e] >= remaining) {  // exactly one (thread, e)
      sm.prefix = prefix | (uint32_t(top - 4 * int(threadIdx.x) - e) << shift);
      sm.remaining = remaining - above;
      sm.done = cnt[e] == remaining - above;
      sm.bin_count = cnt[e];
    }
    above += cnt[e];
  }
  __syncthreads();
  prefix = sm.prefix;
  remaining = sm.remaining;
  return sm.done;
}

// hist[(key >> shift) & (bins - 1)] += 1 for every key with (key & mask) == prefix. Every key
// adds, without a branch: a key that does not match adds 0 to its lane's pad bin hist[bins +
// lane] (a 32-word pad after the bins). Under `if (match) atomicAdd(...)` ptxas puts each of the
// 16 unrolled atomics in its own divergent branch (~100 cycles apiece in the trace).
__device__ __forceinline__ void count_digit(const ItemKeys& ks, uint32_t mask, uint32_t prefix,
                                            int shift, int bins, int* hist) {
  const int pad = bins + int(threadIdx.x % 32);
  for (int tile = 0; tile < num_tiles(ks.len); ++tile) {
    uint32_t key[kTileKeys];
    load_tile(ks, tile, key);
#pragma unroll
    for (int e = 0; e < kTileKeys; ++e) {
      const bool match = (key[e] & mask) == prefix;
      atomicAdd(hist + (match ? int((key[e] >> shift) & (bins - 1)) : pad), int(match));
    }
  }
}

// Thread t's counts of digits top - 4t - e of hist (0 below digit 0).
__device__ __forceinline__ void read_counts(const int* hist, int top, int (&cnt)[4]) {
#pragma unroll
  for (int e = 0; e < 4; ++e) {
    const int digit = top - 4 * int(threadIdx.x) - e;
    cnt[e] = digit >= 0 ? hist[digit] : 0;
  }
}

// The exact remaining-th largest of the n <= kMaxRanked keys with (key & mask) == prefix, by
// listing them (any order) and ranking them in warp 0. Publishes sm.prefix (the key) and
// sm.remaining (how many keys equal to it are kept); ends with a barrier.
__device__ __forceinline__ void rank_listed(const ItemKeys& ks, uint32_t mask, uint32_t prefix,
                                            int n, int remaining, SelectShared& sm) {
  const int lane = int(threadIdx.x % 32);
  for (int tile = 0; tile < num_tiles(ks.len); ++tile) {
    uint32_t key[kTileKeys];
    load_tile(ks, tile, key);
    unsigned hit = 0;
#pragma unroll
    for (int e = 0; e < kTileKeys; ++e) hit |= unsigned((key[e] & mask) == prefix) << e;
    if (__any_sync(0xffffffffu, hit != 0)) {  // rare: at most kMaxRanked keys in all
      const int c = __popc(hit), incl = warp_inclusive_sum(c);
      int base = 0;
      if (lane == 31) base = atomicAdd(&sm.num_ranked, incl);
      base = __shfl_sync(0xffffffffu, base, 31) + incl - c;
#pragma unroll
      for (int e = 0; e < kTileKeys; ++e)
        if (((hit >> e) & 1u) && base < kMaxRanked) sm.ranked[base++] = key[e];
    }
  }
  __syncthreads();
  if (threadIdx.x < 32) {
    const uint32_t v = lane < n ? sm.ranked[lane] : 0;
    int greater = 0, equal = 0;
#pragma unroll
    for (int j = 0; j < kMaxRanked; ++j) {  // every load in flight; entries past n ignored
      const uint32_t u = sm.ranked[j];
      greater += j < n && u > v;
      equal += j < n && u == v;
    }
    if (lane < n && greater < remaining && greater + equal >= remaining) {  // one value
      sm.prefix = v;  // lanes holding copies of v write the same words
      sm.remaining = remaining - greater;
    }
  }
  __syncthreads();
}

// The threshold of the m kept keys, 1 <= m < len: digit 1 (key bits 31..21) from the item's
// counts built by the score grid (top4 = its bins 2044 - 4t .. 2047 - 4t), digit 2 (bits 20..10)
// counted here, then the listed keys ranked, or digit 3 (bits 9..0) counted when more than
// kMaxRanked keys share the 22 bits. sm.hist2, hist3 and num_ranked are zero on entry.
__device__ __forceinline__ Threshold find_threshold(const ItemKeys& ks, int m, const int4& top4,
                                                    SelectShared& sm) {
  uint32_t prefix = 0;
  int remaining = m;
  int cnt[4] = {top4.w, top4.z, top4.y, top4.x};  // digits 2047 - 4t - e
  if (pick_digit(cnt, kRadixBins - 1, 21, prefix, remaining, sm))
    return {prefix, 0xFFE00000u, remaining};
  SPAVA_TRACE(sel_stamp(kSelTraceGather, 8));
  count_digit(ks, 0xFFE00000u, prefix, 10, kRadixBins, sm.hist2);
  SPAVA_TRACE(sel_stamp(kSelTraceGather, 9));
  __syncthreads();
  SPAVA_TRACE(sel_stamp(kSelTraceGather, 10));
  read_counts(sm.hist2, kRadixBins - 1, cnt);
  if (pick_digit(cnt, kRadixBins - 1, 10, prefix, remaining, sm))
    return {prefix, 0xFFFFFC00u, remaining};
  SPAVA_TRACE(sel_stamp(kSelTraceGather, 11));
  const int n = sm.bin_count;  // block-uniform, >= 2
  if (n <= kMaxRanked) {
    rank_listed(ks, 0xFFFFFC00u, prefix, n, remaining, sm);
    return {sm.prefix, 0xFFFFFFFFu, sm.remaining};
  }
  count_digit(ks, 0xFFFFFC00u, prefix, 0, kLowBins, sm.hist3);
  __syncthreads();
  read_counts(sm.hist3, kLowBins - 1, cnt);
  pick_digit(cnt, kLowBins - 1, 0, prefix, remaining, sm);
  return {prefix, 0xFFFFFFFFu, remaining};
}

// pos[s - i0] = the position of the kept key of slot s, for every slot s in [i0, i1), i1 <= m
// (slots number the kept keys in position order). Per tile: each thread counts its keys above /
// equal to the threshold, one block scan of the packed (above << 16 | equal) counts (<= kTile
// each: no carry) places them, and only a thread whose kept keys reach into the range walks
// them again to write their positions. Stops once the range is filled. Ends with a barrier,
// after which pos is complete.
__device__ __forceinline__ void kept_positions(const ItemKeys& ks, const Threshold& t, int i0,
                                               int i1, int* pos, SelectShared& sm) {
  const uint32_t hi = t.prefix | ~t.mask;  // above: key > hi; equal: prefix <= key <= hi
  int gt_seen = 0, eq_seen = 0;            // keys above / equal in the tiles before
  for (int tile = 0; tile < num_tiles(ks.len); ++tile) {
    if (gt_seen + min(eq_seen, t.take_eq) >= i1) break;  // block-uniform
    uint32_t key[kTileKeys];
    load_tile(ks, tile, key);
    SPAVA_TRACE(if (tile == 0) sel_stamp(kSelTraceGather, 12));
    unsigned gt_bits = 0, ge_bits = 0;
#pragma unroll
    for (int e = 0; e < kTileKeys; ++e) {
      gt_bits |= unsigned(key[e] > hi) << e;
      ge_bits |= unsigned(key[e] >= t.prefix) << e;
    }
    const int gt = __popc(gt_bits), ge = __popc(ge_bits);
    int total;
    SPAVA_TRACE(if (tile == 0) sel_stamp(kSelTraceGather, 13));
    const int before = block_exclusive_sum((gt << 16) | (ge - gt), total, sm);
    SPAVA_TRACE(if (tile == 0) sel_stamp(kSelTraceGather, 14));
    const int eq_before = eq_seen + (before & 0xFFFF);
    int slot = gt_seen + (before >> 16) + min(eq_before, t.take_eq);
    const int kept = gt + max(0, min(ge - gt, t.take_eq - eq_before));
    if (kept > 0 && slot < i1 && slot + kept > i0) {  // a few threads per CTA
      const int j0 = tile * kTile + kTileKeys * int(threadIdx.x);
      unsigned keep = gt_bits, eq = ge_bits & ~gt_bits;  // bit e: key e above / equal
      for (int n = min(ge - gt, t.take_eq - eq_before); n > 0; --n) {  // lowest equal first
        keep |= eq & (0u - eq);
        eq &= eq - 1;
      }
      for (; keep != 0 && slot < i1; ++slot) {
        if (slot >= i0) pos[slot - i0] = j0 + __ffs(keep) - 1;
        keep &= keep - 1;
      }
    }
    SPAVA_TRACE(if (tile == 0) sel_stamp(kSelTraceGather, 6));
    gt_seen += total >> 16;
    eq_seen += total & 0xFFFF;
    __syncthreads();  // sm.warp_sums is reused by the next tile; pos is complete
  }
}

}  // namespace spava::select
