// select_passing kernel (2c), sm_90: scores, exact selection and gather of one item in one
// thread-block cluster. Replaces kernels (2) and (3) where the item fits (select_passing.cu).
//
// Cluster = C CTAs (1..16) of one item (chunk c, batch b, kv head h); CTA r owns the chunk rows
// [r R, r R + R), R = ceil(len / C) <= kMaxCtaRows, and the send-buffer slots [r S, r S + S),
// S = ceil(capacity / C) <= kMaxCtaSlots. Steps (cluster barriers marked |):
//   1. stream its rows plus the pool halo through a kStages ring (a stage = one TMA box of
//      rs rows x D, <= 32 KB, row-major, completing on the stage's mbarrier; the first stages
//      are issued before pdl_wait, since K does not depend on kernel 1; one bulk copy per row
//      instead was measured at ~30 ns a copy, and cp.async at ~21 GB/s per SM),
//      raw score of a row = sum over its 8-column chunks, in order, of dot_8(chunk, qsum) (the
//      arithmetic of kernel 2, so the keys are the same bits);
//   2. max-pool -> uint32 keys (row t + 512 e by thread t, conflict-free), then 16 consecutive
//      keys per thread in registers; count their top digits;
//   3. radix select as in kernel 3 (digits 11/11/10 bits, early exit) over the cluster's counts:
//      every CTA adds its nonzero bins into the leader's (rank 0) shared memory | the leader
//      picks the digit and writes it into every CTA | (remote reads of the whole histogram by
//      every CTA were measured 5 us a pass: they queue at the leader's SM);
//   4. compaction: each CTA publishes its (above, equal) counts to every CTA | each places its
//      kept keys (position order, the lowest equal positions first) and writes their positions
//      into the shared memory of the CTA that owns their slots |
//   5. gather: each CTA copies the K/V rows of its slots (zeros and index -1 past m).
// Every count is an integer and every sum has a fixed order, so the output is the same bytes
// as kernels (2) + (3) and as the reference. Items that keep every row skip 1-4 (no barrier).
// No thread leaves before the last barrier, after which no CTA touches another's memory.
#pragma once

#include <cooperative_groups.h>
#include <cuda.h>
#include <cute/arch/copy_sm90_tma.hpp>
#include <cutlass/arch/barrier.h>

#include <cstdint>

#include "select_passing/select_block.cuh"
#include "select_passing/select_passing.h"
#include "select_passing/select_passing_kernel.cuh"
#include "select_passing/select_utils.cuh"
#include "spava/params.h"

namespace spava::select {

using TxBarrier = cutlass::arch::ClusterTransactionBarrier;

constexpr int kClusterThreads = kSelectThreads;  // 512: pick_digit's scan
constexpr int kCtaKeys = 16;                     // keys of a thread (registers)
constexpr int kMaxCtaRows = kClusterThreads * kCtaKeys;  // 8192 chunk rows per CTA
constexpr int kMaxCtaSlots = 1024;                       // send-buffer rows per CTA
constexpr int kMaxCluster = 16;
constexpr int kMaxPoolHalf = 64;  // pool_kernel <= 129
constexpr int kStagePairs = 4 * kClusterThreads;  // (row, 8-column chunk) pairs: 32 KB a stage
constexpr int kStages = 4;
constexpr int kMaxClusterHeadDim = 256;  // a stage is one TMA box (<= 256 columns)

// Rows of a ring stage at head_dim d (<= 256: a TMA box dimension).
__host__ __device__ constexpr int cluster_stage_rows(int d) {
  return kStagePairs / (d / 8) < 256 ? kStagePairs / (d / 8) : 256;
}

struct ClusterShared {
  uint4 ring[kStages][kStagePairs];  // K rows of a stage, row-major; then the keys (swizzled)
  float part[2][kStagePairs + kStagePairs / 32];  // dot products of a stage (padded)
  float raw[kMaxCtaRows + 2 * kMaxPoolHalf];      // raw scores of rows [lo, hi)
  float qs[512];
  int hist[kRadixBins];               // this CTA's counts of the current digit (zero between)
  int item_hist[3][kRadixBins];       // the leader's: the cluster's counts of digits 1, 2, 3
  int pos[kMaxCtaSlots];              // kept positions of this CTA's slots
  int2 counts[kMaxCluster];           // (above, equal) keys of each rank
  uint64_t full[kStages];             // mbarriers: a stage's bytes have landed
  int4 digit;                         // the leader's pick: prefix, remaining, done
  PickShared pick;
};

#ifdef SPAVA_SELECT_TRACE  // phase timestamps of every CTA, printed at its end (probes only)
#define SPAVA_STAMP(i) asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(stamp[i]))
#else
#define SPAVA_STAMP(i)
#endif

// grid (C * items), cluster (C), kClusterThreads threads, sizeof(ClusterShared) dynamic smem.
// kmap: K as [b, rows, h_kv, d] with boxes of cluster_stage_rows(d) rows x d, no swizzle.
template <typename T>
__global__ void __launch_bounds__(kClusterThreads, 1) cluster_select_kernel(
    const SelectPassingParams p, const __grid_constant__ CUtensorMap kmap) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  namespace cg = cooperative_groups;
  extern __shared__ __align__(128) char smem_raw[];
  auto& sm = *reinterpret_cast<ClusterShared*>(smem_raw);
  const cg::cluster_group cluster = cg::this_cluster();
  const int C = int(cluster.num_blocks()), r = int(cluster.block_rank()), tid = threadIdx.x;
  const int item = blockIdx.x / C;
  const int h = item % p.heads_kv, b = (item / p.heads_kv) % p.batch;
  const int c = item / (p.heads_kv * p.batch);
  const int len = p.chunk_len[c], m = min(p.passing_len, len), cpr = p.head_dim / 8;
  const int64_t start = p.chunk_start[c];
  const int S = (p.capacity + C - 1) / C, g0 = r * S, g1 = min(p.capacity, g0 + S);
  const bool selects = m < len;  // cluster-uniform
#ifdef SPAVA_SELECT_TRACE
  uint64_t stamp[24] = {};
#endif
  SPAVA_STAMP(0);

  if (selects) {
    if (tid == 0) {
      for (int i = 0; i < kStages; ++i) TxBarrier::init(&sm.full[i], 1);
      cutlass::arch::fence_barrier_init();
    }
    for (int i = tid; i < 3 * kRadixBins; i += kClusterThreads) (&sm.item_hist[0][0])[i] = 0;
    for (int i = tid; i < kRadixBins; i += kClusterThreads) sm.hist[i] = 0;
    auto zeroed = cluster.barrier_arrive();  // waited for before the first add to the leader

    // ---- 1. raw scores of rows [lo, hi): row lo + s * rs + f / cpr of stage s is pair f
    const int R = (len + C - 1) / C, half = p.pool_kernel / 2;
    const int row0 = min(len, r * R), row1 = min(len, row0 + R);
    const int lo = max(0, row0 - half), hi = row0 < row1 ? min(len, row1 + half) : lo;
    const int rs = cluster_stage_rows(p.head_dim), stages = (hi - lo + rs - 1) / rs;
    const int stage_bytes = rs * p.head_dim * int(sizeof(T));  // a whole box, zeros included
    auto issue = [&](int s) {  // one thread: stage s's box into its slot
      if (tid == 0 && s < stages) {
        uint64_t* bar = &sm.full[s % kStages];
        TxBarrier::arrive_and_expect_tx(bar, stage_bytes);
        cute::SM90_TMA_LOAD_4D::copy(&kmap, bar, uint64_t(cute::TMA::CacheHintSm90::EVICT_NORMAL),
                                     &sm.ring[s % kStages][0], 0, h,
                                     int(start) + lo + s * rs, b);
      }
    };
    __syncthreads();  // the barriers are initialised
#pragma unroll
    for (int s = 0; s < kStages - 1; ++s) issue(s);
    SPAVA_STAMP(1);
    pdl_wait();  // kernel 1 has completed: its qsum partials are visible
    SPAVA_STAMP(2);
    for (int d = tid; d < p.head_dim; d += kClusterThreads) {  // the partials in order
      const float* part = p.qsum + (int64_t(b) * p.heads_kv + h) * p.head_dim + d;
      const int64_t split_stride = int64_t(p.batch) * p.heads_kv * p.head_dim;
      float sum = 0.f;
      for (int i = 0; i < p.qsum_splits; ++i) sum += __ldcg(part + i * split_stride);
      sm.qs[d] = sum;
    }
    __syncthreads();
    SPAVA_STAMP(3);
    for (int s = 0; s < stages; ++s) {
      issue(s + kStages - 1);  // into the slot every thread finished reading at step s - 1
      TxBarrier::wait(&sm.full[s % kStages], (s / kStages) & 1);
      const int pairs = min(rs, hi - lo - s * rs) * cpr;
      float* part = sm.part[s & 1];
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        const int f = tid + u * kClusterThreads;
        if (f < pairs) {
          const float4* q4 = reinterpret_cast<const float4*>(sm.qs + (f % cpr) * 8);
          const float4 a = q4[0], e = q4[1];
          const float q8[8] = {a.x, a.y, a.z, a.w, e.x, e.y, e.z, e.w};
          part[padded(f)] = dot_8<T>(sm.ring[s % kStages][f], q8);
        }
      }
      __syncthreads();  // (one barrier a stage: the parts alternate between two buffers)
      for (int j = tid; j * cpr < pairs; j += kClusterThreads) {
        float sum = 0.f;
        for (int i = 0; i < cpr; ++i) sum += part[padded(j * cpr + i)];
        sm.raw[s * rs + j] = sum;
      }
    }
    __syncthreads();  // every raw score
    SPAVA_STAMP(4);

    // ---- 2. keys: row row0 + i is key i; computed by thread i % 512 (consecutive raw scores
    // across a warp), stored swizzled (cache_slot) over the ring, then thread t takes keys
    // [16 t, 16 t + 16) into registers
    uint32_t* keys_s = reinterpret_cast<uint32_t*>(&sm.ring[0][0]);
    for (int i = tid; i < row1 - row0; i += kClusterThreads) {
      const int j = row0 + i;
      float mx = -INFINITY;
      for (int x = max(lo, j - half); x <= min(hi - 1, j + half); ++x) mx = fmaxf(mx, sm.raw[x - lo]);
      keys_s[4 * cache_slot(i / 4) + i % 4] = order_key(mx);
    }
    __syncthreads();
    uint32_t key[kCtaKeys];
    const int j0 = row0 + kCtaKeys * tid;
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      const uint4 x = reinterpret_cast<const uint4*>(keys_s)[cache_slot(4 * tid + u)];
      key[4 * u] = x.x, key[4 * u + 1] = x.y, key[4 * u + 2] = x.z, key[4 * u + 3] = x.w;
    }
#pragma unroll
    for (int e = 0; e < kCtaKeys; ++e) count_bin(sm.hist, j0 + e < row1, int(key[e] >> 21));

    // ---- 3. the threshold, digit by digit, from the cluster's counts
    SPAVA_STAMP(5);
    cluster.barrier_wait(std::move(zeroed));
    SPAVA_STAMP(6);
    uint32_t prefix = 0, mask = 0;
    int remaining = m;
#pragma unroll 1
    for (int pass = 0; pass < 3; ++pass) {
      const int shift = pass == 0 ? 21 : pass == 1 ? 10 : 0;
      const int bins = pass == 2 ? kRadixBins / 2 : kRadixBins;
      if (pass > 0) {
#pragma unroll
        for (int e = 0; e < kCtaKeys; ++e)
          if (j0 + e < row1 && (key[e] & mask) == prefix)
            atomicAdd(sm.hist + ((key[e] >> shift) & (bins - 1)), 1);
      }
      __syncthreads();  // this CTA's counts are complete
      SPAVA_STAMP(11 + 4 * pass);
      int* leader = cluster.map_shared_rank(&sm.item_hist[pass][0], 0);  // leader's counts
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int d = 4 * tid + e;
        if (d < bins && sm.hist[d] != 0) {
          atomicAdd(leader + d, sm.hist[d]);
          sm.hist[d] = 0;
        }
      }
      SPAVA_STAMP(12 + 4 * pass);
      cluster.sync();  // the leader holds the cluster's counts
      SPAVA_STAMP(13 + 4 * pass);
      if (r == 0) {  // CTA-uniform
        int cnt[4];
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int digit = bins - 1 - 4 * tid - e;
          cnt[e] = digit >= 0 ? sm.item_hist[pass][digit] : 0;
        }
        const bool done = pick_digit(cnt, bins - 1, shift, prefix, remaining, sm.pick);
        if (tid < C)
          *cluster.map_shared_rank(&sm.digit, tid) = make_int4(int(prefix), remaining, done, 0);
      }
      cluster.sync();  // every CTA holds the leader's pick
      SPAVA_STAMP(14 + 4 * pass);
      const int4 pick = sm.digit;
      prefix = uint32_t(pick.x);
      remaining = pick.y;
      mask |= uint32_t(bins - 1) << shift;
      if (pick.z) break;  // cluster-uniform
    }
    SPAVA_STAMP(7);
    const int take_eq = remaining;  // the lowest take_eq positions equal to the prefix are kept

    // ---- 4. slots of the kept keys (position order over the cluster's ranks, then threads)
    unsigned gt = 0, eq = 0;  // bit e: key e above / equal to the threshold
#pragma unroll
    for (int e = 0; e < kCtaKeys; ++e) {
      const uint32_t kk = key[e] & mask;
      gt |= unsigned(j0 + e < row1 && kk > prefix) << e;
      eq |= unsigned(j0 + e < row1 && kk == prefix) << e;
    }
    int before, total;  // packed (above << 16 | equal), <= kMaxCtaRows each
    BlockScan(sm.pick.scan).ExclusiveSum((__popc(gt) << 16) | __popc(eq), before, total);
    if (tid < C)
      cluster.map_shared_rank(sm.counts, tid)[r] = make_int2(total >> 16, total & 0xFFFF);
    cluster.sync();  // every rank's counts
    SPAVA_STAMP(8);
    int gt_seen = 0, eq_seen = 0;
    for (int q = 0; q < r; ++q) gt_seen += sm.counts[q].x, eq_seen += sm.counts[q].y;
    const int eq_before = eq_seen + (before & 0xFFFF);
    int slot = gt_seen + (before >> 16) + min(eq_before, take_eq);
    unsigned keep = gt;  // plus this thread's equal keys still taken, lowest first
    for (int n = min(__popc(eq), take_eq - eq_before); n > 0; --n) {
      keep |= eq & (0u - eq);
      eq &= eq - 1;
    }
    for (; keep != 0; ++slot) {  // slot < m for every kept key
      cluster.map_shared_rank(sm.pos, slot / S)[slot % S] = j0 + __ffs(keep) - 1;
      keep &= keep - 1;
    }
    cluster.sync();  // every slot's position; the last access to another CTA's memory
    SPAVA_STAMP(9);
  } else {
    pdl_wait();  // (no-op without kernel 1) the grid never completes before kernel 1
  }

  // ---- 5. gather: slots [g0, g1); pair f = slot g0 + f / cpr, columns 8 * (f % cpr)
  const int64_t plane = int64_t(p.batch) * p.heads_kv * p.head_dim;  // kv[c, i, 0] to kv[c, i, 1]
  const T* kb = static_cast<const T*>(p.k) + b * p.k_batch_stride + h * p.k_head_stride;
  const T* vb = static_cast<const T*>(p.v) + b * p.v_batch_stride + h * p.v_head_stride;
  T* kv = static_cast<T*>(p.kv) + int64_t(c) * p.capacity * 2 * plane +
          (int64_t(b) * p.heads_kv + h) * p.head_dim;
  int64_t* indices = p.indices + int64_t(item) * p.capacity;
  const int pairs = max(0, g1 - g0) * cpr;
  for (int f0 = 0; f0 < pairs; f0 += 4 * kClusterThreads) {
    int slot[4], pos[4];
    uint4 rk[4], rv[4];
#pragma unroll
    for (int u = 0; u < 4; ++u) {  // every load of the round before any store
      const int f = f0 + tid + u * kClusterThreads;
      slot[u] = f < pairs ? g0 + f / cpr : -1;
      pos[u] = slot[u] >= 0 && slot[u] < m ? (selects ? sm.pos[slot[u] - g0] : slot[u]) : -1;
      rk[u] = rv[u] = make_uint4(0, 0, 0, 0);
      if (pos[u] >= 0) {
        rk[u] = ldg_16(kb + (start + pos[u]) * p.k_row_stride + (f % cpr) * 8);
        rv[u] = ldg_16(vb + (start + pos[u]) * p.v_row_stride + (f % cpr) * 8);
      }
    }
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      if (slot[u] < 0) continue;
      const int f = f0 + tid + u * kClusterThreads, col = (f % cpr) * 8;
      const int64_t i = slot[u];
      *reinterpret_cast<uint4*>(kv + 2 * i * plane + col) = rk[u];
      *reinterpret_cast<uint4*>(kv + (2 * i + 1) * plane + col) = rv[u];
      if (col == 0) indices[i] = pos[u] < 0 ? -1 : start + pos[u];
    }
  }
  SPAVA_STAMP(10);
#ifdef SPAVA_SELECT_TRACE
  if (tid == 0) {
    long long d[24];
    for (int i = 1; i < 24; ++i) d[i] = stamp[i] ? (long long)(stamp[i] - stamp[0]) : -1ll;
    printf("trace cta %d rank %d t0 %llu: %lld %lld %lld %lld %lld %lld %lld %lld %lld %lld "
           "%lld %lld %lld %lld %lld %lld %lld %lld %lld %lld %lld %lld %lld\n",
           int(blockIdx.x), r, stamp[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7], d[8], d[9],
           d[10], d[11], d[12], d[13], d[14], d[15], d[16], d[17], d[18], d[19], d[20], d[21],
           d[22], d[23]);
  }
#endif
#else
  __trap();  // launched only where the sm_90 binary exists (select_passing.cu)
#endif
}

}  // namespace spava::select
