// attn_fwd for sm_90a: persistent, warp-specialised, TMA loads and stores, wgmma, consumers
// in turns (ping-pong); the source's intra-warpgroup overlap is undone by ptxas (see below).
//
// One launch computes every unit of a group of problems (scheduler.cuh); each CTA loops over
// its units. A unit = kBlockM query rows x one query head x one batch (x one split) of a
// problem; 1 + kConsumerWarpGroups warpgroups (Sm90WsConfig):
//   WG0 (producer): one thread (run_producer). Per unit: decodes it into a shared-memory slot
//       (work_unit.h) and TMA-loads its Q once the consumers have released the previous Q
//       (q_empty), then every visible (segment, key tile) pair's K and V into a kStages ring;
//       waits for a problem's ready flag before its first K / V load (once per problem). Ring
//       barriers per stage: k_full/v_full (1 arrival + TMA bytes), k_empty/v_empty (one
//       arrival per consumer warpgroup when done reading, of both CTAs of a pair: pair.cuh);
//       the ring position runs on across units.
//   WG1.. (consumers): 64 query rows each. With Cfg::kQInRegs (D = 128) a consumer first copies
//       its Q rows into registers (the A operand of an RS wgmma) and releases Q at once (the
//       producer then loads the next unit's Q); else S reads Q from shared memory and Q is
//       released after the last S. Step i (tile i):
//       wait K_i | my turn: issue S_i = Q K_i^T, rescale O, issue O += P_(i-1) V_(i-1) | pass turn
//       wait S_i, release K_i (and Q after the last S, SS only) | mask (partial tiles) +
//       online softmax of S_i (fp32, exp2) | wait P V, release V_(i-1) | P_i = T(S_i)
//   then one last O += P V and the epilogue (epilogue.cuh: stmatrix + one TMA store per
//   warpgroup for 16-bit rows), which overlaps the producer's loads for the next unit. The
//   softmax of tile i overlaps this warpgroup's own P V GEMM and, through the turns (named
//   barriers), the other warpgroups' GEMMs.
// Tile order, trip counts and masks come from SegmentMask: producer and consumers walk the same
// TileCursor. Rows past q_len and keys past a segment's end are zero-filled by TMA.
#pragma once

#include <cute/arch/copy_sm90_tma.hpp>
#include <cute/tensor.hpp>
#include <cutlass/arch/barrier.h>
#include <cutlass/arch/reg_reconfig.h>
#include <cutlass/array.h>
#include <cutlass/numeric_conversion.h>

#include "attn_fwd/config.h"
#include "attn_fwd/epilogue.cuh"
#include "attn_fwd/mask.cuh"
#include "attn_fwd/scheduler.cuh"
#include "attn_fwd/softmax.cuh"
#include "attn_fwd/tma_params.h"
#include "attn_fwd/tile_utils.cuh"
#include "common/device_utils.cuh"
#include "common/trace.cuh"

namespace spava::attn {

using namespace cute;
using Barrier = cutlass::arch::ClusterTransactionBarrier;

// TMA-load a (rows x kHeadDim) tile as kBoxes column boxes into the swizzled smem tile `s`.
template <class Cfg, class SmemTile>
__device__ __forceinline__ void tma_load_tile(const CUtensorMap* map, uint64_t* bar, SmemTile s,
                                              int head, int row0, int batch) {
#pragma unroll
  for (int c = 0; c < Cfg::kBoxes; ++c) {
    SM90_TMA_LOAD_4D::copy(map, bar, uint64_t(TMA::CacheHintSm90::EVICT_NORMAL),
                           &s(0, c * Cfg::kBoxCols), c * Cfg::kBoxCols, head, row0, batch);
  }
}

// CTA pairs (pair.cuh): K / V tile `s` (kBlockN rows from row0) through tensor maps of
// kHalfRows-row boxes. Multicast: this CTA's half (rows [kHalfRows * rank, + kHalfRows)) into
// the same stage of both CTAs; else both halves into this CTA's stage.
template <class Cfg, class SmemTile>
__device__ __forceinline__ void tma_load_tile_pair(const CUtensorMap* map, uint64_t* bar,
                                                   SmemTile s, int head, int row0, int batch,
                                                   bool multicast, int rank) {
  constexpr int kHalf = Cfg::kHalfRows;
  const uint64_t hint = uint64_t(TMA::CacheHintSm90::EVICT_NORMAL);
  if (multicast) {
#pragma unroll
    for (int c = 0; c < Cfg::kBoxes; ++c) {
      SM90_TMA_LOAD_MULTICAST_4D::copy(map, bar, uint16_t(0b11), hint,
                                       &s(kHalf * rank, c * Cfg::kBoxCols), c * Cfg::kBoxCols,
                                       head, row0 + kHalf * rank, batch);
    }
    return;
  }
#pragma unroll
  for (int h = 0; h < 2; ++h) {
#pragma unroll
    for (int c = 0; c < Cfg::kBoxes; ++c) {
      SM90_TMA_LOAD_4D::copy(map, bar, hint, &s(kHalf * h, c * Cfg::kBoxCols), c * Cfg::kBoxCols,
                             head, row0 + kHalf * h, batch);
    }
  }
}

// K or V tile `s` (kBlockN key rows from row0) into its stage: whole-tile boxes, or with CTA
// pairs half-tile boxes (tma_load_tile_pair).
template <class Cfg, class SmemTile>
__device__ __forceinline__ void load_kv_tile(const AttnFwdParams& p, const CUtensorMap* map,
                                             uint64_t* bar, SmemTile s, int head, int row0,
                                             int batch, bool multicast, int rank) {
  if (p.pairs) {
    tma_load_tile_pair<Cfg>(map, bar, s, head, row0, batch, multicast, rank);
  } else {
    tma_load_tile<Cfg>(map, bar, s, head, row0, batch);
  }
}

// A consumer warpgroup's release of a K / V stage: one arrival on the stage's empty barrier in
// each CTA that writes into this CTA's stage (`ctas`: 1, or 2 in a pair), by lane 0 of warp r
// for CTA r. One thread suffices: the wgmma that read the stage has completed for the whole
// warpgroup once any of its threads has waited for it.
__device__ __forceinline__ void release_stage(const uint64_t* bar, int wtid, int ctas) {
  if (wtid % 32 == 0 && wtid / 32 < ctas) arrive_cluster_stage(bar, uint32_t(wtid / 32));
}

// Hands unit u (-1: the end) to the consumers as the k-th unit of this CTA: fills slot k % 2
// and loads its Q (Q's buffer is free: the consumers arrived on q_empty for unit k - 1).
template <class Cfg>
__device__ __forceinline__ void publish_unit(const AttnFwdTmaParams& tp,
                                             typename Cfg::SharedStorage& smem, int k, int u) {
  UnitSlot& slot = smem.slots[k & 1];
  slot.unit = u;
  if (u < 0) {
    Barrier::arrive(&smem.q_full);  // the end, without a load
    return;
  }
  const WorkUnit w = decode_unit<Cfg::kBlockM, Cfg::kBlockN>(tp.p, u);
  slot.w = w;
  slot.out = make_out_args(tp, w, Cfg::kHeadDim);
  Tensor sQ = make_tensor(make_smem_ptr(smem.q), typename Cfg::SmemLayoutQ{});
  Barrier::arrive_and_expect_tx(&smem.q_full, Cfg::kQBytes);  // publishes the slot too
  tma_load_tile<Cfg>(&tp.q[w.problem], &smem.q_full, sQ, w.hq, w.m0, w.b);
}

// The producer thread: picks the CTA's units, hands each to the consumers (publish_unit) and
// loads its K / V tiles into the ring. The next unit is picked and its Q loaded as soon as the
// consumers hold this unit's Q in registers (Cfg::kQInRegs: after this unit's first kStages
// tiles, where the ring makes the producer wait anyway), so that it has landed when they
// finish this unit; with Q read from shared memory, or under the atomic counter (p.sched),
// after this unit's last tile is issued: the counter then hands out units in finish order (a
// unit claimed a whole unit ahead made the greedy schedule claim-time based: 97.3 % busy
// instead of 98.9 % on a 3B-model call, docs/kernels/attn_fwd.md). A next unit whose ready
// flag is still unknown is handed over only after this unit's tiles, so a flag wait never holds
// up the current unit.
template <class Cfg>
__device__ __forceinline__ void run_producer(const AttnFwdTmaParams& tp,
                                             typename Cfg::SharedStorage& smem) {
  constexpr int kBlockN = Cfg::kBlockN, kStages = Cfg::kStages;
  const AttnFwdParams& p = tp.p;
  Tensor sK = make_tensor(make_smem_ptr(smem.k), typename Cfg::SmemLayoutKV{});
  Tensor sV = make_tensor(make_smem_ptr(smem.v), typename Cfg::SmemLayoutKV{});
  UnitPicker picker(p, smem.mail);
  int u = picker.claim(p, 0);
  if (u >= 0 && !picker.keys_ready(p, u)) u = -1;
  publish_unit<Cfg>(tp, smem, 0, u);
  const int group = p.heads_q / p.heads_kv;
  int t = 0;  // ring position: key tiles loaded before
  for (int k = 0; u >= 0; ++k) {
    const WorkUnit w = smem.slots[k & 1].w;
    const int count = w.range.count;
    const int early =
        Cfg::kQInRegs && p.sched == nullptr ? (count < kStages ? count : kStages) : count;
    int next = -1;
    bool published = false;
    SPAVA_TRACE(stamp(0, k, kEvQFull));
    auto look_ahead = [&] {
      Barrier::wait(&smem.q_empty, k & 1);  // the consumers are done with unit k's Q
      SPAVA_TRACE(stamp(0, k, kEvQInRegs));
      next = picker.claim(p, k + 1);
      if (next < 0 || picker.ready_known(p, next)) {
        publish_unit<Cfg>(tp, smem, k + 1, next);
        published = true;
      }
    };
    if (early == 0) look_ahead();
    // a pair whose two query heads read one kv head shares every K / V tile (multicast)
    const bool multicast = p.pairs && (w.hq ^ 1) / group == w.hk;
    TileCursor cur(p.problems[w.problem]);
    for (int i = 0; i < w.range.begin; ++i) cur.advance<kBlockN>(p, w.m0, w.m_last);
    for (int i = 0; i < count; ++i, ++t) {
      cur.advance<kBlockN>(p, w.m0, w.m_last);
      const int stage = t % kStages, n0 = cur.tile * kBlockN;
      if (t >= kStages) Barrier::wait(&smem.k_empty[stage], ((t / kStages) - 1) & 1);
      Barrier::arrive_and_expect_tx(&smem.k_full[stage], Cfg::kTileBytes);
      load_kv_tile<Cfg>(p, &tp.k[cur.seg], &smem.k_full[stage], sK(_, _, stage), w.hk, n0, w.b,
                        multicast, picker.rank);
      if (t >= kStages) Barrier::wait(&smem.v_empty[stage], ((t / kStages) - 1) & 1);
      Barrier::arrive_and_expect_tx(&smem.v_full[stage], Cfg::kTileBytes);
      load_kv_tile<Cfg>(p, &tp.v[cur.seg], &smem.v_full[stage], sV(_, _, stage), w.hk, n0, w.b,
                        multicast, picker.rank);
      if (i + 1 == early) look_ahead();
    }
    SPAVA_TRACE(stamp(0, k, kEvFirstTurn));
    if (!published) {
      if (!picker.keys_ready(p, next)) next = -1;
      publish_unit<Cfg>(tp, smem, k + 1, next);
    }
    u = next;
  }
  if (p.pairs) {  // stay until both CTAs released every stage this one filled (pair.cuh)
    for (int j = t > kStages ? t - kStages : 0; j < t; ++j) {
      Barrier::wait(&smem.k_empty[j % kStages], (j / kStages) & 1);
      Barrier::wait(&smem.v_empty[j % kStages], (j / kStages) & 1);
    }
    picker.finish();
  }
}

// Unit k of this CTA for consumer warpgroup `wg`; `t` is the CTA's ring position (tiles
// consumed before). `out` lives in the unit's shared-memory slot (read in the epilogue only).
template <class Cfg>
__device__ __forceinline__ void consume_unit(const AttnFwdTmaParams& tp,
                                             typename Cfg::SharedStorage& smem, int wg,
                                             const WorkUnit& w, const OutArgs& out, int& t,
                                             int k) {
  using T = typename Cfg::Element;
  constexpr int kBlockN = Cfg::kBlockN, kHeadDim = Cfg::kHeadDim, kStages = Cfg::kStages;
  constexpr int kTurnThreads = 256;  // a turn barrier: the warpgroup passing it + the taker
  constexpr int kWarpGroups = Cfg::kConsumerWarpGroups;
  const AttnFwdParams& p = tp.p;
  const AttnProblem& pr = p.problems[w.problem];
  const int wtid = threadIdx.x % 128;
  const int row0 = w.m0 + 64 * wg;  // first query row of this warpgroup
  const int kv_ctas = p.pairs ? 2 : 1;  // CTAs whose producers write this CTA's K / V stages

  Tensor sQ = make_tensor(make_smem_ptr(smem.q), typename Cfg::SmemLayoutQ{});
  Tensor sQw = local_tile(sQ, Shape<_64, Int<kHeadDim>>{}, make_coord(wg, 0));
  Tensor sK = make_tensor(make_smem_ptr(smem.k), typename Cfg::SmemLayoutKV{});
  Tensor sVt = make_tensor(make_smem_ptr(smem.v), typename Cfg::SmemLayoutVt{});

  typename Cfg::MmaQK mma_qk;
  typename Cfg::MmaPV mma_pv;
  auto thr_qk = mma_qk.get_thread_slice(wtid);
  auto thr_pv = mma_pv.get_thread_slice(wtid);
  Tensor tSrQ = thr_qk.partition_fragment_A(sQw);  // smem descriptors, or registers (kQInRegs)
  if constexpr (Cfg::kQInRegs) {  // Q has landed (the caller waited for q_full): load, release
    auto q_copy = make_tiled_copy_A(Copy_Atom<SM75_U32x4_LDSM_N, T>{}, mma_qk);
    auto thr_q_copy = q_copy.get_thread_slice(wtid);
    cute::copy(q_copy, thr_q_copy.partition_S(sQw), thr_q_copy.retile_D(tSrQ));
    Barrier::arrive(&smem.q_empty);
  }
  SPAVA_TRACE(stamp(wg + 1, k, kEvQInRegs));
  SPAVA_TRACE(stamp_value(wg + 1, k, kEvTiles, w.range.count));
  Tensor tSrK = thr_qk.partition_fragment_B(sK);
  Tensor tOrVt = thr_pv.partition_fragment_B(sVt);
  Tensor tSrS = partition_fragment_C(mma_qk, Shape<_64, Int<kBlockN>>{});
  Tensor tOrO = partition_fragment_C(mma_pv, Shape<_64, Int<kHeadDim>>{});
  clear(tOrO);
  Tensor S = make_tensor(tSrS.data(), acc_rowcol(tSrS.layout()));
  Tensor O = make_tensor(tOrO.data(), acc_rowcol(tOrO.layout()));
  Tensor tScS = thr_qk.partition_C(make_identity_tensor(Shape<_64, Int<kBlockN>>{}));
  Tensor cS = make_tensor(tScS.data(), acc_rowcol(tScS.layout()));
  constexpr int kRows = size<0>(S.shape());

  OnlineSoftmax<kRows> softmax;
  const float scale_log2 = p.softmax_scale_log2;

  // P = the exponentials of the previous tile in T, the A operand of O += P V (registers).
  constexpr int kN = decltype(size(tSrS))::value;
  cutlass::NumericArrayConverter<T, float, kN> to_t;
  cutlass::Array<T, kN> p_frag;
  Tensor tOrP = make_tensor(make_rmem_ptr<T>(p_frag.data()), acc_as_a_operand(tSrS.layout()));

  auto issue_qk = [&](int stage) {  // S = Q K^T, asynchronous
    mma_qk.accumulate_ = GMMA::ScaleOut::Zero;
    if constexpr (Cfg::kQInRegs) warpgroup_fence_operand(tSrQ);
    warpgroup_fence_operand(tSrS);
    warpgroup_arrive();
#pragma unroll
    for (int kb = 0; kb < size<2>(tSrQ); ++kb) {
      cute::gemm(mma_qk, tSrQ(_, _, kb), tSrK(_, _, kb, stage), tSrS);
      mma_qk.accumulate_ = GMMA::ScaleOut::One;
    }
    warpgroup_commit_batch();
  };
  auto issue_pv = [&](int stage) {  // O += P V, asynchronous
    warpgroup_fence_operand(tOrO);
    warpgroup_arrive();
#pragma unroll
    for (int kb = 0; kb < size<2>(tOrP); ++kb) {
      cute::gemm(mma_pv, tOrP(_, _, kb), tOrVt(_, _, kb, stage), tOrO);
    }
    warpgroup_commit_batch();
  };
  auto mask_and_softmax = [&](const TileCursor& cur) {  // S -> exponentials, masked keys -> 0
    const SegShape& seg = cur.shape;  // registers, not an indexed constant-bank load
    const int n0 = cur.tile * kBlockN;
    if (!SegmentMask::tile_is_full<64, kBlockN>(seg, row0, n0)) {
#pragma unroll
      for (int r = 0; r < kRows; ++r) {  // keys of this row past `last` are hidden
        const int last = SegmentMask::last_visible_key(seg, row0 + get<0>(cS(r, 0))) - n0;
#pragma unroll
        for (int j = 0; j < size<1>(S.shape()); ++j) {
          if (get<1>(cS(r, j)) > last) S(r, j) = -INFINITY;
        }
      }
    }
    softmax.step(S, scale_log2);
  };

  // Software pipeline (intra-warpgroup overlap): while the tensor cores compute S_i = Q K_i^T
  // and O += P_(i-1) V_(i-1), this warpgroup waits only for S_i, runs its softmax, and then
  // waits for the P V GEMM. In the SASS (ptxas 13.0) that wait sits just after the mask, since
  // ptxas fuses the P conversion into the softmax: the softmax overlaps only the other
  // warpgroups' GEMMs; forcing the overlap measured no faster (docs/kernels/attn_fwd.md).
  // Turns on top (ping-pong for two warpgroups, round robin for more):
  // warpgroup w issues both GEMMs of a step in its turn, so the others' softmax overlaps them.
  // Turn barriers 8 + w: w syncs on its own, then hands over to w + 1. Each warpgroup takes
  // range.count turns per unit; the last warpgroup opens the first turn of warpgroup 0 and
  // skips its own last hand-over (nobody waits for it).
  const bool last_wg = wg == kWarpGroups - 1;
  const int my_turn = kTurnBarrier0 + wg, their_turn = kTurnBarrier0 + (last_wg ? 0 : wg + 1);
  const int n = w.range.count;  // Q has landed (the caller waited for q_full)
  const bool release_q = !Cfg::kQInRegs;  // (else released above)
  if (n == 0 && release_q) Barrier::arrive(&smem.q_empty);
  if (n > 0) {
    if (last_wg) cutlass::arch::NamedBarrier::arrive(kTurnThreads, their_turn);
    TileCursor cur(pr);
    for (int i = 0; i < w.range.begin; ++i) cur.advance<kBlockN>(p, w.m0, w.m_last);
    cur.advance<kBlockN>(p, w.m0, w.m_last);

    int prev_stage = t % kStages, prev_phase = (t / kStages) & 1;
    Barrier::wait(&smem.k_full[prev_stage], prev_phase);  // tile 0: S only
    cutlass::arch::NamedBarrier::sync(kTurnThreads, my_turn);
    SPAVA_TRACE(stamp(wg + 1, k, kEvFirstTurn));
    issue_qk(prev_stage);
    if (!last_wg || n > 1) cutlass::arch::NamedBarrier::arrive(kTurnThreads, their_turn);
    warpgroup_wait<0>();
    warpgroup_fence_operand(tSrS);
    SPAVA_TRACE(stamp(wg + 1, k, kEvFirstS));
    release_stage(&smem.k_empty[prev_stage], wtid, kv_ctas);
    if (n == 1 && release_q) Barrier::arrive(&smem.q_empty);  // Q's last use
    mask_and_softmax(cur);
    p_frag = to_t(*reinterpret_cast<const cutlass::Array<float, kN>*>(tSrS.data()));
    ++t;

    for (int i = 1; i < n; ++i, ++t) {
      cur.advance<kBlockN>(p, w.m0, w.m_last);
      const int stage = t % kStages, phase = (t / kStages) & 1;
      Barrier::wait(&smem.k_full[stage], phase);
      cutlass::arch::NamedBarrier::sync(kTurnThreads, my_turn);
      issue_qk(stage);
      softmax.rescale(O);  // to the maxima of tile i-1, before P_(i-1) V_(i-1) is added
      Barrier::wait(&smem.v_full[prev_stage], prev_phase);
      issue_pv(prev_stage);
      if (!last_wg || i + 1 < n) cutlass::arch::NamedBarrier::arrive(kTurnThreads, their_turn);
      warpgroup_wait<1>();  // S_i is ready; P V may still run
      warpgroup_fence_operand(tSrS);
      release_stage(&smem.k_empty[stage], wtid, kv_ctas);
      if (i + 1 == n && release_q) Barrier::arrive(&smem.q_empty);  // Q's last use
      mask_and_softmax(cur);
      warpgroup_wait<0>();
      warpgroup_fence_operand(tOrO);
      // P's registers were an operand of the finished GEMM: pin them before overwriting
      warpgroup_fence_operand(tOrP);
      release_stage(&smem.v_empty[prev_stage], wtid, kv_ctas);
      p_frag = to_t(*reinterpret_cast<const cutlass::Array<float, kN>*>(tSrS.data()));
      prev_stage = stage;
      prev_phase = phase;
    }
    SPAVA_TRACE(stamp(wg + 1, k, kEvLoopEnd));
    softmax.rescale(O);  // the last P V, outside the turns
    Barrier::wait(&smem.v_full[prev_stage], prev_phase);
    issue_pv(prev_stage);
    warpgroup_wait<0>();
    warpgroup_fence_operand(tOrO);
    release_stage(&smem.v_empty[prev_stage], wtid, kv_ctas);
    SPAVA_TRACE(stamp(wg + 1, k, kEvLastPv));
  }

  // epilogue: normalise, write out and lse (or this split's partial state)
  Tensor tOcO = thr_pv.partition_C(make_identity_tensor(Shape<_64, Int<kHeadDim>>{}));
  Tensor cO = make_tensor(tOcO.data(), acc_rowcol(tOcO.layout()));
  write_rows<Cfg>(tp, smem, out, w, wg, wtid, mma_pv, tOrO, O, cO, softmax, k);
  SPAVA_TRACE(stamp(wg + 1, k, kEvUnitEnd));
}

template <class Cfg>
__global__ void __launch_bounds__(Cfg::kThreads, 1)
    attn_fwd_sm90_ws_kernel(const __grid_constant__ AttnFwdTmaParams tp) {
  extern __shared__ __align__(1024) char smem_raw[];
  auto& smem = *reinterpret_cast<typename Cfg::SharedStorage*>(smem_raw);
  const int warp_group = threadIdx.x / 128;

  if (threadIdx.x == 0) {
    // a stage's empty barrier: one arrival per consumer warpgroup of each CTA loading into it
    const int releases = Cfg::kConsumerWarpGroups * (tp.p.pairs ? 2 : 1);
    Barrier::init(&smem.q_full, 1);
    Barrier::init(&smem.q_empty, Cfg::kConsumerThreads);
    for (int s = 0; s < Cfg::kStages; ++s) {
      Barrier::init(&smem.k_full[s], 1);
      Barrier::init(&smem.v_full[s], 1);
      Barrier::init(&smem.k_empty[s], releases);
      Barrier::init(&smem.v_empty[s], releases);
    }
    if (tp.p.pairs) smem.mail.init();
    cutlass::arch::fence_barrier_init();
  }
  if (tp.p.pairs) {
    cluster_sync_all();  // the partner's barriers are initialised before any remote use
  } else {
    __syncthreads();
  }
  SPAVA_TRACE(span_start());

  if (warp_group == 0) {
    cutlass::arch::warpgroup_reg_dealloc<Cfg::kProducerRegs>();
    if (threadIdx.x != 0) return;
    run_producer<Cfg>(tp, smem);
  } else {
    cutlass::arch::warpgroup_reg_alloc<Cfg::kConsumerRegs>();
    int t = 0;  // ring position: key tiles of this CTA's earlier units
    for (int k = 0;; ++k) {
      Barrier::wait(&smem.q_full, k & 1);
      SPAVA_TRACE(stamp(warp_group, k, kEvQFull));
      const UnitSlot& slot = smem.slots[k & 1];  // decoded by the producer
      if (slot.unit < 0) {
        SPAVA_TRACE(span_end(warp_group - 1, k, t));
        break;
      }
      const WorkUnit w = slot.w;  // registers; the epilogue reads slot.out in place
      consume_unit<Cfg>(tp, smem, warp_group - 1, w, slot.out, t, k);
    }
    if constexpr (Cfg::kTmaStoreO) {  // the CTA's last output store has landed
      if (threadIdx.x % 128 == 0) wait_tma_store_done();
    }
  }
}

}  // namespace spava::attn
