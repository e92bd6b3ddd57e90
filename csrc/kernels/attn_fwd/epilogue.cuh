// The end of a unit in attn_fwd (sm90): where its rows go (producer side) and the consumer
// warpgroup's epilogue: normalise O, write the 64 rows and their lse.
//
// Two ways to write the rows:
//   TMA store (16-bit rows of a problem with a tensor map, Cfg::kTmaStoreO): O is normalised in
//     registers, converted, written with stmatrix into this warpgroup's 64 rows of smem.o (the
//     Q-shaped swizzled tile), and one thread issues the TMA store of the boxes; rows past
//     q_len are clipped by the tensor map. The warpgroup goes back to its GEMMs at once: the
//     issuing thread waits for the store to have read smem.o only before the next unit's
//     stmatrix. Measured with the clock64 trace: the plain stores below took ~2500 of the
//     epilogue's ~4000 cycles (4-byte stores, half-filled sectors, 8 rows per instruction).
//   plain stores (fp32 rows, split partials, problems with a done counter, D = 80): each thread
//     writes its accumulator pairs straight to global memory.
#pragma once

#include <cute/arch/copy_sm90_tma.hpp>
#include <cute/tensor.hpp>
#include <cutlass/arch/barrier.h>
#include <cutlass/numeric_conversion.h>

#include "attn_fwd/softmax.cuh"
#include "attn_fwd/tile_utils.cuh"
#include "attn_fwd/tma_params.h"
#include "attn_fwd/work_unit.h"
#include "common/trace.cuh"

namespace spava::attn {

using namespace cute;

// Named barriers: 0 is __syncthreads; kDoneBarrier: all consumer threads before a unit is
// counted done; kEpilogueBarrier0 + w: consumer warpgroup w around its stmatrix tile; the turns
// (attn_fwd_kernel_sm90.cuh) use kTurnBarrier0 + w.
constexpr int kDoneBarrier = 1;
constexpr int kEpilogueBarrier0 = 2;
constexpr int kTurnBarrier0 = 8;

// Where the rows of unit `w` go (the producer fills the unit's slot with it). A split-KV unit
// writes its fp32 partial state to [split, b, split_len, h_q, d] / [split, b, h_q, split_len].
__device__ __forceinline__ OutArgs make_out_args(const AttnFwdTmaParams& tp, const WorkUnit& w,
                                                 int head_dim) {
  const AttnFwdParams& p = tp.p;
  const AttnProblem& pr = p.problems[w.problem];
  OutArgs a;
  a.q_len = pr.q_len;
  a.done = pr.done;
  a.done_units = pr.units;
  if (w.splits > 1) {
    const int64_t row_stride = int64_t(p.heads_q) * head_dim;
    a.out = pr.split_out + ((int64_t(w.split) * p.batch + w.b) * pr.split_len) * row_stride +
            int64_t(w.hq) * head_dim;
    a.out_row_stride = row_stride;
    a.lse = pr.split_lse + ((int64_t(w.split) * p.batch + w.b) * p.heads_q + w.hq) * pr.split_len;
    a.lse_row_stride = 1;
    a.out_fp32 = true;
  } else {
    const int64_t el = pr.out_fp32 ? 4 : 2;
    a.out = static_cast<char*>(pr.out) +
            (w.b * pr.out_batch_stride + w.hq * pr.out_head_stride) * el;
    a.out_row_stride = pr.out_row_stride;
    a.lse = pr.lse == nullptr ? nullptr
                              : pr.lse + w.b * pr.lse_batch_stride + w.hq * pr.lse_head_stride;
    a.lse_row_stride = pr.lse_row_stride;
    a.out_fp32 = pr.out_fp32;
  }
  // the done counter needs the rows written before the count: plain stores only
  a.tma_store = w.splits == 1 && pr.done == nullptr && ((tp.o_tma_mask >> w.problem) & 1u);
  return a;
}

// The issuing thread of a warpgroup: its TMA stores have read shared memory (smem.o is free).
__device__ __forceinline__ void wait_tma_store_read() {
  asm volatile("cp.async.bulk.wait_group.read 0;" ::: "memory");
}
// ... and have completed (before the CTA exits).
__device__ __forceinline__ void wait_tma_store_done() {
  asm volatile("cp.async.bulk.wait_group 0;" ::: "memory");
}

// Consumer warpgroup `wg` (thread wtid of 128) writes its 64 rows of unit `w` (the CTA's unit
// k): O (the accumulator tOrO, row/col view O with coordinates cO) divided by the row sums, and
// the lse.
template <class Cfg, class MmaPV, class TensorAcc, class TensorO, class TensorC, int kRows>
__device__ __forceinline__ void write_rows(const AttnFwdTmaParams& tp,
                                           typename Cfg::SharedStorage& smem, const OutArgs& out,
                                           const WorkUnit& w, int wg, int wtid, MmaPV& mma_pv,
                                           TensorAcc& tOrO, TensorO& O, const TensorC& cO,
                                           const OnlineSoftmax<kRows>& softmax, int k) {
  using T = typename Cfg::Element;
  constexpr int kHeadDim = Cfg::kHeadDim, kWgThreads = 128;
  const int row0 = w.m0 + 64 * wg;  // first query row of this warpgroup
  float sums[kRows];
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    sums[r] = quad_sum(softmax.row_sum[r]);
    const float inv = sums[r] > 0.f ? __fdividef(1.f, sums[r]) : 0.f;  // sums[r] >= 1 or 0
#pragma unroll
    for (int j = 0; j < size<1>(O.shape()); ++j) O(r, j) *= inv;
  }
  // the lse first: its MUFU.LG2 and 4-byte stores then overlap the barriers and stores below
  // (after the stores they were ~400-530 cycles of a ~2000-cycle epilogue, by the trace)
  SPAVA_TRACE(stamp(wg + 1, k, kEvEpiLse));
  if (out.lse != nullptr && (wtid % 4) == 0) {
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      const int row = row0 + get<0>(cO(r, 0));
      if (row < out.q_len) {
        out.lse[int64_t(row) * out.lse_row_stride] =
            sums[r] > 0.f ? softmax.row_max[r] * tp.p.softmax_scale + __logf(sums[r])
                          : -INFINITY;
      }
    }
  }
  bool stored = false;
  if constexpr (Cfg::kTmaStoreO) {
    if (out.tma_store) {  // unit-uniform
      Tensor sO = make_tensor(make_smem_ptr(smem.o), typename Cfg::SmemLayoutO{});
      Tensor sOw = local_tile(sO, Shape<_64, Int<kHeadDim>>{}, make_coord(wg, 0));
      if (wtid == 0) wait_tma_store_read();  // the previous unit's store has left sOw
      cutlass::arch::NamedBarrier::sync(kWgThreads, kEpilogueBarrier0 + wg);
      SPAVA_TRACE(stamp(wg + 1, k, kEvEpiBarrier1));
      constexpr int kO = decltype(size(tOrO))::value;
      cutlass::NumericArrayConverter<T, float, kO> to_t;
      cutlass::Array<T, kO> o_frag =
          to_t(*reinterpret_cast<const cutlass::Array<float, kO>*>(tOrO.data()));
      Tensor rO = make_tensor(make_rmem_ptr<T>(o_frag.data()), tOrO.layout());
      auto o_copy = make_tiled_copy_C(Copy_Atom<SM90_U32x4_STSM_N, T>{}, mma_pv);
      auto thr_o_copy = o_copy.get_thread_slice(wtid);
      cute::copy(o_copy, thr_o_copy.retile_S(rO), thr_o_copy.partition_D(sOw));
      tma_store_fence();  // this thread's stmatrix writes, visible to the TMA (async proxy)
      SPAVA_TRACE(stamp(wg + 1, k, kEvEpiStsm));
      cutlass::arch::NamedBarrier::sync(kWgThreads, kEpilogueBarrier0 + wg);
      SPAVA_TRACE(stamp(wg + 1, k, kEvEpiBarrier2));
      if (wtid == 0) {
#pragma unroll
        for (int c = 0; c < Cfg::kBoxes; ++c) {
          SM90_TMA_STORE_4D::copy(&tp.o[w.problem], &sOw(0, c * Cfg::kBoxCols),
                                  c * Cfg::kBoxCols, w.hq, row0, w.b);
        }
        tma_store_arrive();
        SPAVA_TRACE(stamp(wg + 1, k, kEvEpiTma));
      }
      stored = true;
    }
  }
  if (!stored) {
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      const int row = row0 + get<0>(cO(r, 0));
      if (row >= out.q_len) continue;
#pragma unroll
      for (int j = 0; j < size<1>(O.shape()); j += 2) {  // (2j, 2j+1) are adjacent columns
        const int64_t off = int64_t(row) * out.out_row_stride + get<1>(cO(r, j));
        if (out.out_fp32) {
          *reinterpret_cast<float2*>(static_cast<float*>(out.out) + off) =
              make_float2(O(r, j), O(r, j + 1));
        } else {
          cutlass::Array<T, 2> pair;
          pair[0] = static_cast<T>(O(r, j));
          pair[1] = static_cast<T>(O(r, j + 1));
          *reinterpret_cast<cutlass::Array<T, 2>*>(static_cast<T*>(out.out) + off) = pair;
        }
      }
    }
  }
  SPAVA_TRACE(stamp(wg + 1, k, kEvEpiEnd));
  if (out.done != nullptr) {  // count the unit; the last one raises the problem's done flag
    __threadfence();          // this thread's stores are visible GPU-wide before the count
    cutlass::arch::NamedBarrier::sync(Cfg::kConsumerThreads, kDoneBarrier);
    if (wg == 0 && wtid == 0) {
      if (atomicAdd(out.done, 1) + 1 == out.done_units) {
        asm volatile("st.release.gpu.global.b32 [%0], %1;" ::"l"(out.done + 1), "r"(1) : "memory");
      }
    }
  }
}

}  // namespace spava::attn
