// select_passing kernel (3): select + gather. Each CTA owns rows [i0, i0 + gather_rows) of one
// item's send buffer, finds by itself (select_block.cuh) which kept positions fill them, and
// copies those K/V rows. Rule and protocol: select_passing_kernel.cuh.
#pragma once

#include <cstdint>

#include "common/trace.cuh"
#include "select_passing/config.h"
#include "select_passing/select_block.cuh"
#include "select_passing/select_passing.h"
#include "select_passing/select_utils.cuh"
#include "spava/params.h"

namespace spava::select {

// grid (gather_tiles * items), kSelectThreads threads, dynamic shared memory: smem_keys keys.
// CTA (item, tile) fills rows i in [i0, i0 + gather_rows) of the send buffer: kv[c, i, 0 / 1,
// b, h, :] = K / V row of the i-th kept position of the chunk (i < m; the i-th row itself when
// the chunk keeps every row), zeros past m; indices[c, b, h, i] likewise, -1 past m. Only CTAs
// that hold kept rows of a selecting chunk wait for the score grid (keys, top-digit counts);
// the others copy at once. Thread = kGatherPairs (row, 8-column chunk) pairs, every K and V load
// in flight before any store; the index arithmetic comes before pdl_wait (off the critical path).

template <typename T>
__global__ void __launch_bounds__(kSelectThreads, 2) gather_kernel(const SelectPassingParams p) {
  __shared__ SelectShared sm;
  __shared__ int kept[kSelectThreads * kGatherPairs];  // positions of rows [i0, i1)
  extern __shared__ uint4 key_cache[];                 // [smem_keys / 4]
  SPAVA_TRACE(sel_stamp(kSelTraceGather, 0));
  const int item = blockIdx.x / p.gather_tiles, tile = blockIdx.x % p.gather_tiles;
  const int h = item % p.heads_kv, b = (item / p.heads_kv) % p.batch;
  const int c = item / (p.heads_kv * p.batch);
  const int len = p.chunk_len[c], m = min(p.passing_len, len), tid = threadIdx.x;
  const int i0 = tile * p.gather_rows, i1 = min(i0 + p.gather_rows, m);
  // Pair f = tid + u * kSelectThreads is row i0 + f / cpr, columns 8 * (f % cpr): one round
  // covers the CTA (gather_rows * cpr <= kSelectThreads * kGatherPairs).
  const int cpr = p.head_dim / 8, n = max(0, min(p.capacity - i0, p.gather_rows)) * cpr;
  int row[kGatherPairs], col[kGatherPairs];  // row - i0 (-1: no pair), first column
#pragma unroll
  for (int u = 0; u < kGatherPairs; ++u) {
    const int f = tid + u * kSelectThreads;
    row[u] = f < n ? f / cpr : -1;
    col[u] = f % cpr * 8;
  }
  const bool selects = m < len && i0 < m;  // some rows of this CTA are chosen by the select
  if (selects) {
#pragma unroll
    for (int u = 0; u < kRadixBins / kSelectThreads; ++u) sm.hist2[tid + u * kSelectThreads] = 0;
#pragma unroll
    for (int u = 0; u < kLowBins / kSelectThreads; ++u) sm.hist3[tid + u * kSelectThreads] = 0;
    if (tid == 0) sm.num_ranked = 0;
    pdl_wait();  // the score grid has completed: p.keys and p.hist are visible
    SPAVA_TRACE(sel_stamp(kSelTraceGather, 1));
    const uint32_t* keys = p.keys + int64_t(item) * p.key_stride;
    const int4 top4 =  // in flight with the key copy
        __ldcg(reinterpret_cast<const int4*>(p.hist + int64_t(item) * kRadixBins) +
               (kSelectThreads - 1 - tid));
    const bool cached = len <= p.smem_keys;
    if (cached) fill_cache(keys, len, key_cache);
    __syncthreads();  // the cache and the zeroed counts are visible
    SPAVA_TRACE(sel_stamp(kSelTraceGather, 2));
    const ItemKeys ks{keys, cached ? key_cache : nullptr, len};
    const Threshold th = find_threshold(ks, m, top4, sm);
    SPAVA_TRACE(sel_stamp(kSelTraceGather, 3));
    kept_positions(ks, th, i0, i1, kept, sm);
    SPAVA_TRACE(sel_stamp(kSelTraceGather, 4));
  }

  const int64_t start = p.chunk_start[c];
  const int64_t plane = int64_t(p.batch) * p.heads_kv * p.head_dim;  // kv[c, i, 0] to kv[c, i, 1]
  const T* k = static_cast<const T*>(p.k) + b * p.k_batch_stride + h * p.k_head_stride;
  const T* v = static_cast<const T*>(p.v) + b * p.v_batch_stride + h * p.v_head_stride;
  T* kv = static_cast<T*>(p.kv) + int64_t(c) * p.capacity * 2 * plane +
          (int64_t(b) * p.heads_kv + h) * p.head_dim;
  int64_t* indices = p.indices + int64_t(item) * p.capacity;
  int pos[kGatherPairs];  // kept position of the pair's row, -1 past m
#pragma unroll
  for (int u = 0; u < kGatherPairs; ++u) {  // i < m and !selects: the chunk keeps every row
    const int i = i0 + row[u];
    pos[u] = row[u] >= 0 && i < m ? (selects ? kept[row[u]] : i) : -1;
  }
  uint4 rk[kGatherPairs], rv[kGatherPairs];
#pragma unroll
  for (int u = 0; u < kGatherPairs; ++u) {  // every load before any store
    rk[u] = rv[u] = make_uint4(0, 0, 0, 0);
    if (pos[u] >= 0) {
      rk[u] = ldg_16(k + (start + pos[u]) * p.k_row_stride + col[u]);
      rv[u] = ldg_16(v + (start + pos[u]) * p.v_row_stride + col[u]);
    }
  }
#pragma unroll
  for (int u = 0; u < kGatherPairs; ++u) {
    if (row[u] >= 0) {
      const int64_t i = i0 + row[u];
      *reinterpret_cast<uint4*>(kv + 2 * i * plane + col[u]) = rk[u];
      *reinterpret_cast<uint4*>(kv + (2 * i + 1) * plane + col[u]) = rv[u];
      if (col[u] == 0) indices[i] = pos[u] < 0 ? -1 : start + pos[u];
    }
  }
  SPAVA_TRACE(sel_stamp(kSelTraceGather, 5));
  pdl_wait();  // (returns at once when waited above) the grid never completes before the score grid
}

}  // namespace spava::select
