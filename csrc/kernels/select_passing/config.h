// Launch shapes of select_passing's three kernels: threads, loads in flight per thread and rows
// per CTA. They are reasoned from bytes in flight at the key shape (2 chunks x 8064 rows x 4 kv
// heads, D = 128, 132 SMs); select_passing_launch.cuh derives the grids from them.
#pragma once

namespace spava::select {

// ---- kernel 1 (qsum): thread = (row group, 8-column chunk), kQsumLoads 16-byte loads in flight.
constexpr int kQsumThreads = 128;
constexpr int kQsumLoads = 4;

// ---- kernel 2 (scores): a tile plus its pool halo fills one round of kScoreLoads 16-byte loads
// per thread (64 KB: 252 rows at D = 128, 256 CTAs at the key shape, one wave at 2 CTAs per SM),
// unless the halo leaves fewer than kMinScoreRows rows.
constexpr int kScoreThreads = 256;
constexpr int kScoreLoads = 16;
constexpr int kMinScoreRows = 32;

// Rows of one round of loads for rows of cpr 8-column chunks (4096 / cpr when cpr divides 256).
__host__ __device__ constexpr int score_round_rows(int cpr) {
  return kScoreThreads / cpr * kScoreLoads;
}

// ---- kernel 3 (select + gather): kSelectThreads threads select with kTileKeys keys each per
// tile (4 x 16 bytes), then gather kGatherPairs (row, 8-column chunk) pairs each, every K and V
// load in flight at once (64 rows per CTA at D = 128: 128 CTAs, 32 KB of loads per SM at the
// key shape).
constexpr int kSelectThreads = 512;
constexpr int kTileKeys = 16;
constexpr int kGatherPairs = 2;
// Longest chunk whose keys a CTA caches in shared memory (64 KB); longer chunks read their keys
// at L2 in every pass.
constexpr int kMaxCachedKeys = 2 * kSelectThreads * kTileKeys;

// Send-buffer rows per gather CTA: one round of kGatherPairs pairs per thread (>= 16: cpr <= 64).
__host__ __device__ constexpr int gather_rows(int cpr) {
  return kSelectThreads * kGatherPairs / cpr > 0 ? kSelectThreads * kGatherPairs / cpr : 1;
}

}  // namespace spava::select
