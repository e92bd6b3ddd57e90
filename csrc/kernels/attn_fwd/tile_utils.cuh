// Register-level helpers of the attn_fwd kernel: the tile walk, views of wgmma accumulators,
// quad reductions.
#pragma once

#include <cute/tensor.hpp>

#include "attn_fwd/mask.cuh"
#include "spava/params.h"

namespace spava::attn {

using namespace cute;

// Walks the visible (segment, key tile) pairs of one query tile, in segment order; `shape` is
// the current segment's visibility (valid once advance() returned true).
struct TileCursor {
  int seg, seg_end, tile = 0, n_tiles = 0;
  SegShape shape;

  __device__ __forceinline__ explicit TileCursor(const AttnProblem& pr)
      : seg(pr.seg_begin - 1), seg_end(pr.seg_begin + pr.num_segments) {}

  template <int kBlockN>
  __device__ __forceinline__ bool advance(const AttnFwdParams& p, int m0, int m_last) {
    if (++tile < n_tiles) return true;
    while (++seg < seg_end) {
      const KvSegment& s = p.segments[seg];
      shape = {s.len, s.row_begin, s.diag};
      n_tiles = SegmentMask::trip_count<kBlockN>(shape, m0, m_last);
      if (n_tiles > 0) {
        tile = 0;
        return true;
      }
    }
    return false;
  }
};

// wgmma accumulator ((2, 2, N/8), MMA_M, MMA_N) viewed as (row = (2, MMA_M), col = (2, N/8, MMA_N)).
template <class Layout>
__device__ __forceinline__ auto acc_rowcol(Layout l) {
  return make_layout(make_layout(get<0, 1>(l), get<1>(l)),
                     make_layout(get<0, 0>(l), get<0, 2>(l), get<2>(l)));
}

// The same registers viewed as the A operand of an RS wgmma with K = 16:
// ((2, 2, N/8), MMA_M, MMA_N) -> ((2, 2, 2), MMA_M, (N/16, MMA_N)).
template <class Layout>
__device__ __forceinline__ auto acc_as_a_operand(Layout l) {
  auto m0 = logical_divide(get<0>(l), Shape<Underscore, Underscore, _2>{});  // (2, 2, (2, N/16))
  return make_layout(make_layout(get<0>(m0), get<1>(m0), get<2, 0>(m0)), get<1>(l),
                     make_layout(get<2, 1>(m0), get<2>(l)));
}

// Max / sum over the 4 threads of a quad (they hold the same accumulator row).
__device__ __forceinline__ float quad_max(float x) {
  x = fmaxf(x, __shfl_xor_sync(0xffffffff, x, 1));
  return fmaxf(x, __shfl_xor_sync(0xffffffff, x, 2));
}
__device__ __forceinline__ float quad_sum(float x) {
  x += __shfl_xor_sync(0xffffffff, x, 1);
  return x + __shfl_xor_sync(0xffffffff, x, 2);
}

}  // namespace spava::attn
