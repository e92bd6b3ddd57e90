// Online softmax of one consumer thread's accumulator rows (fp32, base-2 exponentials).
//
// A thread holds kRows rows of the (64 x kBlockN) score tile S in the row/column view of the
// wgmma accumulator (acc_rowcol); the 4 threads of a quad share each row. Invariants after
// step(S) for every row r:
//   row_max[r]    = max over every key seen so far (quad-reduced, unscaled), -inf if none;
//   S(r, j)       = exp2(S(r, j) * scale_log2 - row_max[r] * scale_log2)  (0 for masked keys);
//   row_sum[r]    = this thread's partial sum of those exponentials (quad-summed at the end);
//   correction[r] = exp2((previous row_max - row_max) * scale_log2): the factor that brings an
//                   output accumulated against the previous maximum to the new one (0 while no
//                   key has been visible, never NaN: a row with no visible key keeps max -inf
//                   and uses 0 as its exponent offset).
#pragma once

#include <cute/tensor.hpp>

#include "attn_fwd/tile_utils.cuh"
#include "common/device_utils.cuh"

namespace spava::attn {

template <int kRows>
struct OnlineSoftmax {
  float row_max[kRows], row_sum[kRows], correction[kRows];

  __device__ __forceinline__ OnlineSoftmax() {
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      row_max[r] = -INFINITY;
      row_sum[r] = 0.f;
      correction[r] = 1.f;
    }
  }

  // S (row, col view) := its exponentials; updates row_max, row_sum and correction.
  template <class TensorS>
  __device__ __forceinline__ void step(TensorS& S, float scale_log2) {
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      float mx = row_max[r];
#pragma unroll
      for (int j = 0; j < cute::size<1>(S.shape()); ++j) mx = fmaxf(mx, S(r, j));
      mx = quad_max(mx);
      const float m_scaled = mx == -INFINITY ? 0.f : mx * scale_log2;
      correction[r] = fast_exp2(row_max[r] * scale_log2 - m_scaled);
      row_max[r] = mx;
      float sum = 0.f;
#pragma unroll
      for (int j = 0; j < cute::size<1>(S.shape()); ++j) {
        const float e = fast_exp2(S(r, j) * scale_log2 - m_scaled);
        S(r, j) = e;
        sum += e;
      }
      row_sum[r] = row_sum[r] * correction[r] + sum;
    }
  }

  // O (row, col view) *= correction: rescales the output to the latest row maxima.
  template <class TensorO>
  __device__ __forceinline__ void rescale(TensorO& O) const {
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
#pragma unroll
      for (int j = 0; j < cute::size<1>(O.shape()); ++j) O(r, j) *= correction[r];
    }
  }
};

}  // namespace spava::attn
