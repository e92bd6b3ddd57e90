// merge_states kernel: one warp per (batch, row, head) item; lanes stride over head_dim.
#pragma once

#include "spava/lse.h"
#include "spava/params.h"

namespace spava {

template <typename TIn, typename TOut>
__global__ void merge_states_kernel(const MergeStatesParams p) {
  constexpr int kWarp = 32;
  const int64_t item = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / kWarp;
  const int lane = threadIdx.x % kWarp;
  const int64_t num_items = int64_t(p.batch) * p.rows * p.heads;
  if (item >= num_items) return;
  const int h = int(item % p.heads);
  const int r = int((item / p.heads) % p.rows);
  const int b = int(item / (int64_t(p.heads) * p.rows));

  const float* lses = p.lses + b * p.lses_batch_stride + h * p.lses_head_stride +
                      r * p.lses_row_stride;
  float total = -INFINITY;
  for (int n = 0; n < p.num_parts; ++n) total = lse_combine(total, lses[n * p.lses_part_stride]);

  const TIn* outs = static_cast<const TIn*>(p.outs) + b * p.outs_batch_stride +
                    r * p.outs_row_stride + h * p.outs_head_stride;
  TOut* out = static_cast<TOut*>(p.out) + b * p.out_batch_stride + r * p.out_row_stride +
              h * p.out_head_stride;
  for (int d = lane; d < p.head_dim; d += kWarp) {
    float acc = 0.f;
    for (int n = 0; n < p.num_parts; ++n) {
      acc += lse_weight(lses[n * p.lses_part_stride], total) *
             static_cast<float>(outs[n * p.outs_part_stride + d]);
    }
    out[d] = static_cast<TOut>(acc);
  }
  if (lane == 0 && p.lse != nullptr) {
    p.lse[b * p.lse_batch_stride + h * p.lse_head_stride + r * p.lse_row_stride] = total;
  }
}

}  // namespace spava
