// attn_fwd for sm_90a, v6: persistent, warp-specialised, TMA loads, wgmma, consumers in turns
// (ping-pong); the source's intra-warpgroup overlap is undone by ptxas (see below).
//
// One launch computes every unit of a group of problems (scheduler.cuh); each CTA loops over
// its units. A unit = kBlockM query rows x one query head x one batch (x one split) of a
// problem; 1 + kConsumerWarpGroups warpgroups (Sm90WsConfig):
//   WG0 (producer): one thread, per unit: waits for the problem's ready flag (once per problem),
//       for the consumers to release Q (q_empty), TMA-loads Q, then every visible (segment, key
//       tile) pair's K and V into a kStages ring. Ring barriers per stage: k_full/v_full (1
//       arrival + TMA bytes), k_empty/v_empty (every consumer thread arrives when done reading);
//       the ring position runs on across units.
//   WG1.. (consumers): 64 query rows each. With Cfg::kQInRegs (D = 128) a consumer first copies
//       its Q rows into registers (the A operand of an RS wgmma) and releases Q at once; else
//       S reads Q from shared memory and Q is released after the last S. Step i (tile i):
//       wait K_i | my turn: issue S_i = Q K_i^T, rescale O, issue O += P_(i-1) V_(i-1) | pass turn
//       wait S_i, release K_i (and Q after the last S, SS only) | mask (partial tiles) +
//       online softmax of S_i (fp32, exp2) | wait P V, release V_(i-1) | P_i = T(S_i)
//   then one last O += P V, left in flight: the next unit's Q copy and first S are issued
//   before it is waited for, and the unit's epilogue runs while that S computes (not for
//   problems with a done flag, which are written at once). The softmax of tile i overlaps this warpgroup's own P V GEMM and, through the turns
//   (named barriers), the other warpgroups' GEMMs.
// Tile order, trip counts and masks come from SegmentMask: producer and consumers walk the same
// TileCursor. Rows past q_len and keys past a segment's end are zero-filled by TMA.
#pragma once

#include <cute/arch/copy_sm90_tma.hpp>
#include <cute/tensor.hpp>
#include <cutlass/arch/barrier.h>
#include <cutlass/arch/reg_reconfig.h>
#include <cutlass/array.h>
#include <cutlass/detail/helper_macros.hpp>
#include <cutlass/numeric_conversion.h>

#include "attn_fwd/config.h"
#include "attn_fwd/mask.cuh"
#include "attn_fwd/scheduler.cuh"
#include "attn_fwd/softmax.cuh"
#include "attn_fwd/tma_params.h"
#include "attn_fwd/tile_utils.cuh"
#include "common/device_utils.cuh"

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

// Loads of one unit (after its id is in smem.unit and Q's buffer is free). `t` is the CTA's
// ring position (tiles loaded before this unit).
template <class Cfg>
__device__ __forceinline__ void produce_unit(const AttnFwdTmaParams& tp,
                                             typename Cfg::SharedStorage& smem,
                                             const WorkUnit& w, int& t) {
  constexpr int kBlockN = Cfg::kBlockN, kStages = Cfg::kStages;
  const AttnFwdParams& p = tp.p;
  const AttnProblem& pr = p.problems[w.problem];
  Tensor sQ = make_tensor(make_smem_ptr(smem.q), typename Cfg::SmemLayoutQ{});
  Tensor sK = make_tensor(make_smem_ptr(smem.k), typename Cfg::SmemLayoutKV{});
  Tensor sV = make_tensor(make_smem_ptr(smem.v), typename Cfg::SmemLayoutKV{});
  Barrier::arrive_and_expect_tx(&smem.q_full, Cfg::kQBytes);  // publishes smem.unit too
  tma_load_tile<Cfg>(&tp.q[w.problem], &smem.q_full, sQ, w.hq, w.m0, w.b);
  TileCursor cur(pr);
  for (int i = 0; i < w.range.begin; ++i) cur.advance<kBlockN>(p, w.m0, w.m_last);
  for (int i = 0; i < w.range.count; ++i, ++t) {
    cur.advance<kBlockN>(p, w.m0, w.m_last);
    const int stage = t % kStages, n0 = cur.tile * kBlockN;
    if (t >= kStages) Barrier::wait(&smem.k_empty[stage], ((t / kStages) - 1) & 1);
    Barrier::arrive_and_expect_tx(&smem.k_full[stage], Cfg::kTileBytes);
    tma_load_tile<Cfg>(&tp.k[cur.seg], &smem.k_full[stage], sK(_, _, stage), w.hk, n0, w.b);
    if (t >= kStages) Barrier::wait(&smem.v_empty[stage], ((t / kStages) - 1) & 1);
    Barrier::arrive_and_expect_tx(&smem.v_full[stage], Cfg::kTileBytes);
    tma_load_tile<Cfg>(&tp.v[cur.seg], &smem.v_full[stage], sV(_, _, stage), w.hk, n0, w.b);
  }
}

// Named barrier of all consumer threads before a unit is counted done (0 is __syncthreads, the
// turns use 8 + warpgroup).
constexpr int kDoneBarrier = 1;

// Every unit of this CTA, for consumer warpgroup `wg`. The last O += P V of a unit is left in
// flight: the next unit's Q copy and first S = Q K^T are issued before it is waited for, and
// the unit's rows are written while that S runs (the pending unit), so the pipeline does not
// drain and refill at every unit boundary.
template <class Cfg>
__device__ __forceinline__ void consume_units(const AttnFwdTmaParams& tp,
                                              typename Cfg::SharedStorage& smem, int wg) {
  using T = typename Cfg::Element;
  constexpr int kBlockM = Cfg::kBlockM, kBlockN = Cfg::kBlockN, kHeadDim = Cfg::kHeadDim;
  constexpr int kStages = Cfg::kStages;
  constexpr int kTurnThreads = 256;  // a turn barrier: the warpgroup passing it + the taker
  constexpr int kWarpGroups = Cfg::kConsumerWarpGroups;
  const AttnFwdParams& p = tp.p;
  const int wtid = threadIdx.x % 128;

  Tensor sQ = make_tensor(make_smem_ptr(smem.q), typename Cfg::SmemLayoutQ{});
  Tensor sQw = local_tile(sQ, Shape<_64, Int<kHeadDim>>{}, make_coord(wg, 0));
  Tensor sK = make_tensor(make_smem_ptr(smem.k), typename Cfg::SmemLayoutKV{});
  Tensor sVt = make_tensor(make_smem_ptr(smem.v), typename Cfg::SmemLayoutVt{});

  typename Cfg::MmaQK mma_qk;
  typename Cfg::MmaPV mma_pv;
  auto thr_qk = mma_qk.get_thread_slice(wtid);
  auto thr_pv = mma_pv.get_thread_slice(wtid);
  Tensor tSrQ = thr_qk.partition_fragment_A(sQw);  // smem descriptors, or registers (kQInRegs)
  Tensor tSrK = thr_qk.partition_fragment_B(sK);
  Tensor tOrVt = thr_pv.partition_fragment_B(sVt);
  Tensor tSrS = partition_fragment_C(mma_qk, Shape<_64, Int<kBlockN>>{});
  Tensor tOrO = partition_fragment_C(mma_pv, Shape<_64, Int<kHeadDim>>{});
  Tensor S = make_tensor(tSrS.data(), acc_rowcol(tSrS.layout()));
  Tensor O = make_tensor(tOrO.data(), acc_rowcol(tOrO.layout()));
  Tensor tScS = thr_qk.partition_C(make_identity_tensor(Shape<_64, Int<kBlockN>>{}));
  Tensor cS = make_tensor(tScS.data(), acc_rowcol(tScS.layout()));
  Tensor tOcO = thr_pv.partition_C(make_identity_tensor(Shape<_64, Int<kHeadDim>>{}));
  Tensor cO = make_tensor(tOcO.data(), acc_rowcol(tOcO.layout()));
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
  auto mask_and_softmax = [&](const TileCursor& cur, int row0) {  // S -> exponentials
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

  // Epilogue of unit w (its last P V has completed): normalise, write out and lse (or this
  // split's partial state); count the unit where the problem has a done flag.
  auto write_unit = [&](const WorkUnit& w) CUTLASS_LAMBDA_FUNC_INLINE {
    const AttnProblem& pr = p.problems[w.problem];
    const int row0 = w.m0 + 64 * wg, b = w.b, hq = w.hq;
    const bool split_kv = w.splits > 1;
    void* out_ptr = pr.out;
    int64_t out_row_stride = pr.out_row_stride;
    int64_t out_base = b * pr.out_batch_stride + hq * pr.out_head_stride;
    float* lse_ptr = pr.lse;
    int64_t lse_base = b * pr.lse_batch_stride + hq * pr.lse_head_stride;
    int64_t lse_row_stride = pr.lse_row_stride;
    if (split_kv) {  // [split, b, split_len, h_q, d] and [split, b, h_q, split_len], fp32
      out_ptr = pr.split_out;
      out_row_stride = int64_t(p.heads_q) * kHeadDim;
      out_base =
          ((int64_t(w.split) * p.batch + b) * pr.split_len) * out_row_stride + hq * kHeadDim;
      lse_ptr = pr.split_lse;
      lse_base = ((int64_t(w.split) * p.batch + b) * p.heads_q + hq) * pr.split_len;
      lse_row_stride = 1;
    }
    const bool out_fp32 = split_kv || pr.out_fp32;
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      const float sum = quad_sum(softmax.row_sum[r]);
      const float inv = sum > 0.f ? 1.f / sum : 0.f;
      const int row = row0 + get<0>(cO(r, 0));
      if (row >= pr.q_len) continue;
      const int64_t row_off = out_base + int64_t(row) * out_row_stride;
#pragma unroll
      for (int j = 0; j < size<1>(O.shape()); j += 2) {  // (2j, 2j+1) are adjacent columns
        const int col = get<1>(cO(r, j));
        const float v0 = O(r, j) * inv, v1 = O(r, j + 1) * inv;
        if (out_fp32) {
          *reinterpret_cast<float2*>(static_cast<float*>(out_ptr) + row_off + col) =
              make_float2(v0, v1);
        } else {
          cutlass::Array<T, 2> pair;
          pair[0] = static_cast<T>(v0);
          pair[1] = static_cast<T>(v1);
          *reinterpret_cast<cutlass::Array<T, 2>*>(static_cast<T*>(out_ptr) + row_off + col) =
              pair;
        }
      }
      if (lse_ptr != nullptr && (wtid % 4) == 0) {
        lse_ptr[lse_base + int64_t(row) * lse_row_stride] =
            sum > 0.f ? softmax.row_max[r] * p.softmax_scale + logf(sum) : -INFINITY;
      }
    }
    if (pr.done != nullptr) {  // count the unit; the last one raises the problem's done flag
      __threadfence();         // this thread's stores are visible GPU-wide before the count
      cutlass::arch::NamedBarrier::sync(Cfg::kConsumerThreads, kDoneBarrier);
      if (wg == 0 && wtid == 0) {
        if (atomicAdd(pr.done, 1) + 1 == pr.units) {
          asm volatile("st.release.gpu.global.b32 [%0], %1;" ::"l"(pr.done + 1), "r"(1) : "memory");
        }
      }
    }
  };

  // Software pipeline (intra-warpgroup overlap): while the tensor cores compute S_i = Q K_i^T
  // and O += P_(i-1) V_(i-1), this warpgroup waits only for S_i, runs its softmax, and then
  // waits for the P V GEMM. In the SASS (ptxas 13.0) that wait sits just after the mask, since
  // ptxas fuses the P conversion into the softmax: the softmax overlaps only the other
  // warpgroups' GEMMs; forcing the overlap measured no faster (NOTES.md, session 4).
  // Turns on top (ping-pong for two warpgroups, round robin for more):
  // warpgroup w issues both GEMMs of a step in its turn, so the others' softmax overlaps them.
  // Turn barriers 8 + w: w syncs on its own, then hands over to w + 1. Each warpgroup takes
  // range.count turns per unit; the last warpgroup opens the first turn of warpgroup 0 and
  // skips its own last hand-over (nobody waits for it).
  // Unit boundaries (kQInRegs only, where the next unit's Q is already in shared memory): the
  // last O += P V of a unit is issued together with the next unit's S_0, in that warpgroup
  // turn, and the unit's rows are written while S_0 computes. Every wgmma is issued and waited
  // for in one straight stretch of code (a group left in flight across a branch or a loop back
  // edge makes ptxas serialise all wgmma: C7514 / C7518).
  const bool last_wg = wg == kWarpGroups - 1;
  const int my_turn = 8 + wg, their_turn = 8 + (last_wg ? 0 : wg + 1);
  const bool release_q = !Cfg::kQInRegs;  // Q is released after the last S (else at its copy)
  int t = 0;                              // ring position: key tiles of this CTA's earlier units
  int k = 0;                              // units taken (q_full phase)
  int prev_stage = 0, prev_phase = 0;     // ring slot of the last tile (its V is read last)

  // The next unit's id (-1: the end); with kQInRegs, also its Q in registers (Q released).
  auto next_unit = [&]() CUTLASS_LAMBDA_FUNC_INLINE {
    Barrier::wait(&smem.q_full, k & 1);
    ++k;
    const int u = smem.unit;
    if constexpr (Cfg::kQInRegs) {
      if (u >= 0) {
        auto q_copy = make_tiled_copy_A(Copy_Atom<SM75_U32x4_LDSM_N, T>{}, mma_qk);
        auto thr_q_copy = q_copy.get_thread_slice(wtid);
        cute::copy(q_copy, thr_q_copy.partition_S(sQw), thr_q_copy.retile_D(tSrQ));
        Barrier::arrive(&smem.q_empty);
      }
    }
    return u;
  };
  // From unit u on, units with no visible key (out 0, lse -inf) are written at once; returns
  // the first unit with key tiles (decoded into w), or -1.
  auto skip_empty = [&](int u, WorkUnit& w) CUTLASS_LAMBDA_FUNC_INLINE {
    for (; u >= 0; u = next_unit()) {
      w = decode_unit<kBlockM, kBlockN>(p, u);
      if (w.range.count > 0) break;
      if (release_q) Barrier::arrive(&smem.q_empty);
      softmax = OnlineSoftmax<kRows>();
      clear(tOrO);
      write_unit(w);
    }
    return u;
  };
  // The last O += P V of unit w (V of ring slot prev_stage), waited for, and w's rows.
  auto last_pv_and_write = [&](const WorkUnit& w) CUTLASS_LAMBDA_FUNC_INLINE {
    Barrier::wait(&smem.v_full[prev_stage], prev_phase);
    issue_pv(prev_stage);
    warpgroup_wait<0>();
    warpgroup_fence_operand(tOrO);
    warpgroup_fence_operand(tOrP);
    Barrier::arrive(&smem.v_empty[prev_stage]);
    write_unit(w);
  };
  // Step 0 of unit w: S_0 in this warpgroup's turn, then the softmax of S_0. With a previous
  // unit `done` (kMerge): its last P V is issued first in the same turn, and its rows are
  // written while S_0 runs.
  auto first_step = [&](const WorkUnit& w, TileCursor& cur, auto merge,
                        const WorkUnit& done) CUTLASS_LAMBDA_FUNC_INLINE {
    constexpr bool kMerge = decltype(merge)::value;
    const int done_stage = prev_stage, done_phase = prev_phase;
    if (last_wg) cutlass::arch::NamedBarrier::arrive(kTurnThreads, their_turn);
    for (int i = 0; i < w.range.begin; ++i) cur.advance<kBlockN>(p, w.m0, w.m_last);
    cur.advance<kBlockN>(p, w.m0, w.m_last);
    const int n = w.range.count;
    prev_stage = t % kStages;
    prev_phase = (t / kStages) & 1;
    Barrier::wait(&smem.k_full[prev_stage], prev_phase);  // tile 0: S only
    if constexpr (kMerge) Barrier::wait(&smem.v_full[done_stage], done_phase);
    cutlass::arch::NamedBarrier::sync(kTurnThreads, my_turn);
    if constexpr (kMerge) issue_pv(done_stage);
    issue_qk(prev_stage);
    if (!last_wg || n > 1) cutlass::arch::NamedBarrier::arrive(kTurnThreads, their_turn);
    if constexpr (kMerge) {
      warpgroup_wait<1>();  // the P V (committed first) has completed; S_0 may still run
      warpgroup_fence_operand(tOrO);
      warpgroup_fence_operand(tOrP);
      Barrier::arrive(&smem.v_empty[done_stage]);
      write_unit(done);
    }
    softmax = OnlineSoftmax<kRows>();
    clear(tOrO);
    warpgroup_wait<0>();
    warpgroup_fence_operand(tSrS);
    Barrier::arrive(&smem.k_empty[prev_stage]);
    if (n == 1 && release_q) Barrier::arrive(&smem.q_empty);  // Q's last use
    mask_and_softmax(cur, w.m0 + 64 * wg);
    p_frag = to_t(*reinterpret_cast<const cutlass::Array<float, kN>*>(tSrS.data()));
    ++t;
  };

  WorkUnit w;
  if (skip_empty(next_unit(), w) < 0) return;
  TileCursor cur(p.problems[w.problem]);
  first_step(w, cur, cute::false_type{}, w);
  for (;;) {  // w has had its first step
    const int n = w.range.count, row0 = w.m0 + 64 * wg;
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
      Barrier::arrive(&smem.k_empty[stage]);
      if (i + 1 == n && release_q) Barrier::arrive(&smem.q_empty);  // Q's last use
      mask_and_softmax(cur, row0);
      warpgroup_wait<0>();
      warpgroup_fence_operand(tOrO);
      // P's registers were an operand of the finished GEMM: pin them before overwriting
      warpgroup_fence_operand(tOrP);
      Barrier::arrive(&smem.v_empty[prev_stage]);
      p_frag = to_t(*reinterpret_cast<const cutlass::Array<float, kN>*>(tSrS.data()));
      prev_stage = stage;
      prev_phase = phase;
    }
    softmax.rescale(O);  // to the maxima of the last tile, before its P V is added
    // A unit whose problem has a done flag is written at once: the flag is never delayed
    // behind the next unit's loads, which may wait on a ready flag.
    int u;
    if constexpr (Cfg::kQInRegs) {
      const bool has_done_flag = p.problems[w.problem].done != nullptr;
      if (has_done_flag) last_pv_and_write(w);
      u = next_unit();
      if (!has_done_flag) {
        WorkUnit next;
        if (u >= 0) next = decode_unit<kBlockM, kBlockN>(p, u);
        if (u >= 0 && next.range.count > 0) {
          const WorkUnit done = w;
          w = next;
          cur = TileCursor(p.problems[w.problem]);
          first_step(w, cur, cute::true_type{}, done);
          continue;
        }
        last_pv_and_write(w);
      }
    } else {
      last_pv_and_write(w);
      u = next_unit();
    }
    if (skip_empty(u, w) < 0) return;
    cur = TileCursor(p.problems[w.problem]);
    first_step(w, cur, cute::false_type{}, w);
  }
}

template <class Cfg>
__global__ void __launch_bounds__(Cfg::kThreads, 1)
    attn_fwd_sm90_ws_kernel(const __grid_constant__ AttnFwdTmaParams tp) {
  extern __shared__ __align__(1024) char smem_raw[];
  auto& smem = *reinterpret_cast<typename Cfg::SharedStorage*>(smem_raw);
  const AttnFwdParams& p = tp.p;
  const int warp_group = threadIdx.x / 128;

  if (threadIdx.x == 0) {
    Barrier::init(&smem.q_full, 1);
    Barrier::init(&smem.q_empty, Cfg::kConsumerThreads);
    for (int s = 0; s < Cfg::kStages; ++s) {
      Barrier::init(&smem.k_full[s], 1);
      Barrier::init(&smem.v_full[s], 1);
      Barrier::init(&smem.k_empty[s], Cfg::kConsumerThreads);
      Barrier::init(&smem.v_empty[s], Cfg::kConsumerThreads);
    }
    cutlass::arch::fence_barrier_init();
  }
  __syncthreads();

  if (warp_group == 0) {
    cutlass::arch::warpgroup_reg_dealloc<Cfg::kProducerRegs>();
    if (threadIdx.x != 0) return;
    int t = 0;  // ring position: key tiles of this CTA's earlier units
    UnitPicker picker;
    for (int k = 0;; ++k) {
      const int u = picker.next(p, k);
      if (k > 0) Barrier::wait(&smem.q_empty, (k - 1) & 1);  // consumers are done with Q and
      smem.unit = u;                                         // have read the previous id
      if (u < 0) {
        Barrier::arrive(&smem.q_full);  // the end, without a load
        break;
      }
      produce_unit<Cfg>(tp, smem, decode_unit<Cfg::kBlockM, Cfg::kBlockN>(p, u), t);
    }
  } else {
    cutlass::arch::warpgroup_reg_alloc<Cfg::kConsumerRegs>();
    consume_units<Cfg>(tp, smem, warp_group - 1);
  }
}

}  // namespace spava::attn
