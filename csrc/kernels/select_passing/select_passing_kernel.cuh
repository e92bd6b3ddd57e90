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

// hist[bin] += 1 for each lane with `counts`: one atomic per distinct bin of the warp (keys
// crowd into few bins; hist in shared or global memory). Every lane of the warp must call it.
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
// are then summed in a fixed order. All gridDim.x >= qsum_splits CTAs also zero hist for
// kernel 2 (their share of the items (c, b, h): the top-digit counts of every chunk c, the
// top-16-bit counts of the selecting ones, 256 KB per item); CTAs s >= qsum_splits only zero.
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
  const int zero_stride = int(gridDim.x) * kQsumThreads;
  for (int i = s * kQsumThreads + tid; i < hist4; i += zero_stride) {
    const int c = i / (kRadixBins / 4), e = i % (kRadixBins / 4);
    const int64_t item = (int64_t(c) * p.batch + b) * p.heads_kv + h;
    reinterpret_cast<int4*>(p.hist + item * kRadixBins)[e] = make_int4(0, 0, 0, 0);
  }
  for (int c = 0; c < p.num_chunks; ++c) {  // top-16-bit counts of the selecting chunks only
    if (p.passing_len >= p.chunk_len[c]) continue;
    const int64_t item = (int64_t(c) * p.batch + b) * p.heads_kv + h;
    int4* row = reinterpret_cast<int4*>(fine_counts(p, item));
    for (int i = s * kQsumThreads + tid; i < kFineBins / 4; i += zero_stride)
      row[i] = make_int4(0, 0, 0, 0);
  }
  if (s >= p.qsum_splits) return;  // a zeroing CTA (no rows: acc is 0); CTA-uniform
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
// k_j . qsum. A row's cpr 8-column chunks lie on kLanes lanes of one warp (ScoreShape); thread
// t holds kScoreLoads 16-byte loads, all in flight together: rows t / kLanes + i * kRowsStep,
// chunks t % kLanes + j * kLanes. Each half of them (rows of one half-round, so the first half
// is reduced while the second is still landing) is summed across the row's lanes by a
// transpose-reduce butterfly, which leaves every row sum on one lane: raw[] in shared memory.
// Every row sum is the same tree (per chunk: 8 products in order from +0; chunks: a butterfly
// over the row's lanes, a + b commutative), whatever the row's slot: fixed, deterministic. The
// max-pool of the raw scores gives the keys of the CTA's rows (p.keys), their top-digit counts
// (shared, then added to p.hist) and their top-16-bit counts (warp-aggregated global atomics
// into the fine part of p.hist). The launcher sizes a tile with its halo to one round of loads.
constexpr int kScoreThreads = 256;
constexpr int kScoreLoads = 16;
constexpr int kMinScoreRows = 32;
constexpr int kMaxTileRows = 512;  // tile + halo rows: max(round rows, kMinScoreRows + 126)
constexpr int kQsumBatch = 8;      // qsum partial loads of a thread in flight together

// cpr (8-column chunks of a row, <= 64) rounded up to a power of two, at least 8.
__host__ __device__ constexpr int row_chunks(int cpr) {
  return cpr <= 8 ? 8 : cpr <= 16 ? 16 : cpr <= 32 ? 32 : 64;
}

template <int kRowChunks>
struct ScoreShape {
  static constexpr int kLanes = kRowChunks < 32 ? kRowChunks : 32;  // lanes of a row
  static constexpr int kJ = kRowChunks / kLanes;                    // chunks of a row per lane
  static constexpr int kRowsStep = kScoreThreads / kLanes;          // rows of one load slot
  static constexpr int kHalfRows = kScoreLoads / 2 / kJ;  // rows per thread per half-round
  static constexpr int kRoundRows = kRowsStep * 2 * kHalfRows;
  static_assert(kHalfRows <= kLanes && kRoundRows <= kMaxTileRows, "one row sum per lane");
};

// Rows of one round of loads (512 at D <= 64, 256 at D 72..128, 128 to 256, 64 to 512).
__host__ __device__ constexpr int score_round_rows(int cpr) {
  return kScoreThreads / (row_chunks(cpr) < 32 ? row_chunks(cpr) : 32) * kScoreLoads /
         (row_chunks(cpr) / 32 > 1 ? 2 : 1);
}

// v[i] (i < kN) are this lane's values of kN rows; the kLanes lanes of a row group (lane bits
// below kLanes) hold the parts of the same rows. Butterfly: at mask s the lane keeps one half of
// its rows and adds the partner's part of them (kN / 2 shuffles), down to one row, then plain
// xor-adds. Returns the full sum of row (lane % kLanes) >> (log2 kLanes - log2 kN).
template <int kN, int kLanes>
__device__ __forceinline__ float transpose_reduce(float (&v)[kN], int lane) {
  int n = kN;
#pragma unroll
  for (int s = kLanes / 2; s >= 1; s /= 2) {
    if (n > 1) {
      const bool upper = (lane & s) != 0;
#pragma unroll
      for (int i = 0; i < n / 2; ++i) {
        const float send = upper ? v[i] : v[i + n / 2];
        const float keep = upper ? v[i + n / 2] : v[i];
        v[i] = keep + __shfl_xor_sync(0xffffffffu, send, s);
      }
      n /= 2;
    } else {
      v[0] += __shfl_xor_sync(0xffffffffu, v[0], s);
    }
  }
  return v[0];
}

struct ScoreShared {
  __align__(16) float qs[512];
  float raw[kMaxTileRows];  // raw scores of rows [lo, hi); before them, the qsum partials
  int hist[kRadixBins];
};

template <typename T, int kRowChunks>
__global__ void __launch_bounds__(kScoreThreads, 2) score_kernel(const SelectPassingParams p) {
  using S = ScoreShape<kRowChunks>;
  __shared__ ScoreShared sm;
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
  const int cl = tid % S::kLanes, r_first = tid / S::kLanes;
  const int lo = max(0, row0 - half), hi = min(len, row0 + p.score_rows + half);
  const T* k = static_cast<const T*>(p.k) + b * p.k_batch_stride + h * p.k_head_stride +
               (int64_t(p.chunk_start[c]) + lo + r_first) * p.k_row_stride + cl * 8;
  const int64_t step = int64_t(S::kRowsStep) * p.k_row_stride;
  bool has[S::kJ];  // chunk cl + j * kLanes exists
#pragma unroll
  for (int j = 0; j < S::kJ; ++j) has[j] = cl + j * S::kLanes < cpr;
  uint4 x[kScoreLoads];  // slot u: row r_first + (u / kJ) * kRowsStep, chunk j = u % kJ
  auto load_round = [&](int r0) {  // tile rows [r0, r0 + kRoundRows) of [0, hi - lo)
    const int rows = min(S::kRoundRows, hi - lo - r0) - r_first;  // of this thread
    const T* src = k + int64_t(r0) * p.k_row_stride;
#pragma unroll
    for (int u = 0; u < kScoreLoads; ++u) {
      const int i = u / S::kJ, j = u % S::kJ;
      x[u] = has[j] && i * S::kRowsStep < rows ? ldg_16(src + i * step + j * S::kLanes * 8)
                                               : make_uint4(0, 0, 0, 0);
    }
  };
  load_round(0);  // K rows do not depend on kernel 1
  for (int i = tid; i < kRadixBins; i += kScoreThreads) sm.hist[i] = 0;
  pdl_wait();  // kernel 1 has completed: qsum partials and zeroed p.hist visible
  {  // qs = sum of the qsum_splits partials: groups of threads sum disjoint split ranges, every
     // load of a thread in flight at once (one L2 round trip at D <= 128), then the groups in order
    const int D = p.head_dim, groups = max(1, kScoreThreads / D);
    const int per = (p.qsum_splits + groups - 1) / groups;
    const int64_t split_stride = int64_t(p.batch) * p.heads_kv * D;
    for (int f = tid; f < groups * D; f += kScoreThreads) {  // f = g * D + d
      const int g = f / D, d = f % D, s1 = min(p.qsum_splits, (g + 1) * per);
      const float* part = p.qsum + (int64_t(b) * p.heads_kv + h) * D + d;
      float sum = 0.f;
      for (int s0 = g * per; s0 < s1; s0 += kQsumBatch) {
        float y[kQsumBatch];
#pragma unroll
        for (int i = 0; i < kQsumBatch; ++i)
          y[i] = s0 + i < s1 ? __ldcg(part + (s0 + i) * split_stride) : 0.f;
#pragma unroll
        for (int i = 0; i < kQsumBatch; ++i)
          if (s0 + i < s1) sum += y[i];
      }
      if (groups == 1) {
        sm.qs[d] = sum;
      } else {
        sm.raw[f] = sum;  // groups * D <= kScoreThreads <= kMaxTileRows
      }
    }
    if (groups > 1) {
      __syncthreads();
      for (int d = tid; d < D; d += kScoreThreads) {
        float sum = 0.f;
        for (int g = 0; g < groups; ++g) sum += sm.raw[g * D + d];
        sm.qs[d] = sum;
      }
    }
  }
  __syncthreads();
  float q8[S::kJ][8];
#pragma unroll
  for (int j = 0; j < S::kJ; ++j)
#pragma unroll
    for (int i = 0; i < 8; ++i) q8[j][i] = has[j] ? sm.qs[(cl + j * S::kLanes) * 8 + i] : 0.f;
  constexpr int kShift = __builtin_ctz(S::kLanes) - __builtin_ctz(S::kHalfRows);
  for (int r0 = 0;;) {  // x holds the loads of round r0
#pragma unroll
    for (int hr = 0; hr < 2; ++hr) {  // half-rounds: rows i = hr * kHalfRows + e of the thread
      float v[S::kHalfRows];
#pragma unroll
      for (int e = 0; e < S::kHalfRows; ++e) {
        v[e] = 0.f;
#pragma unroll
        for (int j = 0; j < S::kJ; ++j)
          if (has[j]) v[e] += dot_8<T>(x[(hr * S::kHalfRows + e) * S::kJ + j], q8[j]);
      }
      const float sum = transpose_reduce<S::kHalfRows, S::kLanes>(v, cl);
      const int row = r0 + r_first + (hr * S::kHalfRows + (cl >> kShift)) * S::kRowsStep;
      if ((cl & ((1 << kShift) - 1)) == 0 && row < hi - lo) sm.raw[row] = sum;
    }
    r0 += S::kRoundRows;
    if (r0 >= hi - lo) break;
    load_round(r0);  // only when the halo or head_dim makes a tile exceed a round
  }
  __syncthreads();
  uint32_t* keys = p.keys + int64_t(item) * p.key_stride;
  int* fine = fine_counts(p, item);
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
    count_bin(fine, j < row_end, int(key >> 16));  // global, warp-aggregated
  }
  __syncthreads();
  int* item_hist = p.hist + int64_t(item) * kRadixBins;
  for (int i = tid; i < kRadixBins; i += kScoreThreads)
    if (sm.hist[i] != 0) atomicAdd(item_hist + i, sm.hist[i]);
}

}  // namespace spava::select
