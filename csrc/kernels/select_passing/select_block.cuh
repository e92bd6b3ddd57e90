// select_passing, the selection inside kernel (3): one CTA finds the exact threshold of its item
// on its own (radix select over the item's keys) and the kept positions that fill its range of
// send-buffer rows (compaction in position order). Every CTA of an item runs this on the same
// data with the same fixed-order integer arithmetic, so all of them agree on the threshold and
// on the slot of every kept key.
//
// Latency is what counts: this runs once per CTA on the critical path after the score grid, in a
// CTA that has the SM mostly to itself. So each thread owns few keys (16 per tile of 8192, kept in
// shared memory in a bank-conflict-free layout), scans are warp scans with one barrier, and the
// three radix passes share one loop (one copy of the code, warm after the first pass).
#pragma once

#include <cub/block/block_scan.cuh>
#include <cstdint>

#include "select_passing/select_passing.h"

namespace spava::select {

constexpr int kSelectThreads = 512;
constexpr int kTileKeys = 16;                      // keys of a thread per tile: 4 x 16 bytes
constexpr int kTile = kSelectThreads * kTileKeys;  // keys per tile (8192)
constexpr int kMaxCachedKeys = 2 * kTile;  // longest chunk whose keys a CTA caches (64 KB smem)
static_assert(kRadixBins == 4 * kSelectThreads, "each thread holds the counts of 4 digits");

// Warp scans + one barrier: shorter than the default raking scan, which is what counts here.
using BlockScan = cub::BlockScan<int, kSelectThreads, cub::BLOCK_SCAN_WARP_SCANS>;

struct SelectShared {
  typename BlockScan::TempStorage scan;
  int hist2[kRadixBins];      // counts of digit 2 (key bits 20..10), zero on entry
  int hist3[kRadixBins / 2];  // counts of digit 3 (key bits 9..0), zero on entry
  uint32_t prefix;
  int remaining, done;
};

// The kept keys: (key & mask) > prefix, plus the take_eq lowest positions with (key & mask) ==
// prefix (the tie rule).
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

// Shared-memory slot of the 16-byte key group q. A thread reads 4 consecutive groups (its 16
// keys of a tile); rotating each thread's 4 groups by (q >> 3) & 3 puts the 8 threads of a
// quarter warp on distinct banks. The slot stays in q's aligned group of 4.
__device__ __forceinline__ int cache_slot(int q) { return q ^ ((q >> 3) & 3); }

// cache[cache_slot(q)] = keys[4q, 4q + 4) for every group q < ceil(len / 4), coalesced, 4 loads
// per thread in flight. The cache holds at least ceil(len / 16) * 4 groups.
__device__ __forceinline__ void fill_cache(const uint32_t* keys, int len, uint4* cache) {
  const int groups = (len + 3) / 4;
  const uint4* src = reinterpret_cast<const uint4*>(keys);
  for (int q0 = threadIdx.x; q0 < groups; q0 += 4 * kSelectThreads) {
    uint4 x[4];
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      const int q = q0 + u * kSelectThreads;
      x[u] = q < groups ? __ldcg(src + q) : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      const int q = q0 + u * kSelectThreads;
      if (q < groups) cache[cache_slot(q)] = x[u];
    }
  }
}

// This thread's keys of a tile: key[e] is position j0 + e, j0 = tile * kTile + kTileKeys * tid.
// Keys at positions >= len are garbage: every caller masks them.
__device__ __forceinline__ void load_tile(const ItemKeys& ks, int tile,
                                          uint32_t (&key)[kTileKeys]) {
  const int q0 = tile * (kTile / 4) + 4 * int(threadIdx.x), groups = (ks.len + 3) / 4;
#pragma unroll
  for (int u = 0; u < 4; ++u) {
    const int q = q0 + u;
    uint4 x = make_uint4(0, 0, 0, 0);
    if (q < groups)
      x = ks.cache ? ks.cache[cache_slot(q)]
                   : __ldcg(reinterpret_cast<const uint4*>(ks.global) + q);
    key[4 * u] = x.x, key[4 * u + 1] = x.y, key[4 * u + 2] = x.z, key[4 * u + 3] = x.w;
  }
}

// hist[(key >> shift) & (bins - 1)] += 1 for every key with (key & mask) == prefix. After the
// first digit the matching keys spread over many bins, and a run of equal keys (a max-pool
// plateau) lies in one thread's tile, so the shared atomics rarely contend.
__device__ __forceinline__ void count_digit(const ItemKeys& ks, uint32_t mask, uint32_t prefix,
                                            int shift, int bins, int* hist) {
  for (int tile = 0; tile < num_tiles(ks.len); ++tile) {
    uint32_t key[kTileKeys];
    load_tile(ks, tile, key);
    const int j0 = tile * kTile + kTileKeys * int(threadIdx.x);
#pragma unroll
    for (int e = 0; e < kTileKeys; ++e)
      if (j0 + e < ks.len && (key[e] & mask) == prefix)
        atomicAdd(hist + ((key[e] >> shift) & (bins - 1)), 1);
  }
}

// One radix step. Invariant: the m-th largest key has `prefix` in the bits already resolved and
// is the remaining-th largest of the keys that do. Thread t holds the counts of digits
// top - 4t - e (cnt[e], 0 below digit 0). Picks the digit of the wanted key and returns true
// when every key with the extended prefix is kept (no more bits needed). Block-wide; the
// barrier at its end also frees sm.scan.
__device__ __forceinline__ bool pick_digit(const int (&cnt)[4], int top, int shift,
                                           uint32_t& prefix, int& remaining, SelectShared& sm) {
  int above = 0;  // counted keys in the digits above this thread's
  BlockScan(sm.scan).ExclusiveSum(cnt[0] + cnt[1] + cnt[2] + cnt[3], above);
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

// The threshold of the m kept keys, 1 <= m < len: digit 1 (key bits 31..21) from the item's
// histogram built by the score grid (top4 = its bins 2044 - 4t .. 2047 - 4t), digits 2 (20..10)
// and 3 (9..0) counted here unless already decided. sm.hist2 and sm.hist3 are zero on entry.
__device__ __forceinline__ Threshold find_threshold(const ItemKeys& ks, int m, const int4& top4,
                                                    SelectShared& sm) {
  uint32_t prefix = 0, mask = 0;
  int remaining = m;
  int cnt[4] = {top4.w, top4.z, top4.y, top4.x};  // digits 2047 - 4t - e
#pragma unroll 1
  for (int pass = 0; pass < 3; ++pass) {  // one copy of the scan for the three digits
    const int shift = pass == 0 ? 21 : pass == 1 ? 10 : 0;
    const int bins = pass == 2 ? kRadixBins / 2 : kRadixBins;
    if (pass > 0) {  // every thread read sm.prefix / remaining / done before this barrier
      int* hist = pass == 1 ? sm.hist2 : sm.hist3;
      count_digit(ks, mask, prefix, shift, bins, hist);
      __syncthreads();
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int digit = bins - 1 - 4 * int(threadIdx.x) - e;
        cnt[e] = digit >= 0 ? hist[digit] : 0;
      }
    }
    const bool done = pick_digit(cnt, bins - 1, shift, prefix, remaining, sm);  // block-uniform
    mask |= uint32_t(bins - 1) << shift;
    if (done) break;
  }
  return {prefix, mask, remaining};
}

// pos[s - i0] = the position of the kept key of slot s, for every slot s in [i0, i1), i1 <= m
// (slots number the kept keys in position order). Per tile: each thread flags its 16 keys, one
// block scan of its packed (above << 16 | equal) counts places it (<= kTile each: no carry), and
// it writes its kept keys whose slots fall in the range. Stops once the range is filled. Ends
// with a barrier, after which pos is complete.
__device__ __forceinline__ void kept_positions(const ItemKeys& ks, const Threshold& t, int i0,
                                               int i1, int* pos, SelectShared& sm) {
  int gt_seen = 0, eq_seen = 0;  // keys above / equal to the threshold in the tiles before
  for (int tile = 0; tile < num_tiles(ks.len); ++tile) {
    if (gt_seen + min(eq_seen, t.take_eq) >= i1) break;  // block-uniform
    uint32_t key[kTileKeys];
    load_tile(ks, tile, key);
    const int j0 = tile * kTile + kTileKeys * int(threadIdx.x);
    unsigned gt = 0, eq = 0;  // bit e: key e is above / equal to the threshold
#pragma unroll
    for (int e = 0; e < kTileKeys; ++e) {
      const uint32_t k = key[e] & t.mask;
      gt |= unsigned(j0 + e < ks.len && k > t.prefix) << e;
      eq |= unsigned(j0 + e < ks.len && k == t.prefix) << e;
    }
    int before, total;
    BlockScan(sm.scan).ExclusiveSum((__popc(gt) << 16) | __popc(eq), before, total);
    const int eq_before = eq_seen + (before & 0xFFFF);
    int slot = gt_seen + (before >> 16) + min(eq_before, t.take_eq);
    unsigned keep = gt;  // plus this thread's equal keys that are still taken, lowest first
    for (int n = min(__popc(eq), t.take_eq - eq_before); n > 0; --n) {
      keep |= eq & (0u - eq);
      eq &= eq - 1;
    }
    if (slot + __popc(keep) <= i0) keep = 0;  // all of them before the range
    for (; keep != 0 && slot < i1; ++slot) {
      if (slot >= i0) pos[slot - i0] = j0 + __ffs(keep) - 1;
      keep &= keep - 1;
    }
    gt_seen += total >> 16;
    eq_seen += total & 0xFFFF;
    __syncthreads();  // sm.scan is reused by the next tile
  }
}

}  // namespace spava::select
