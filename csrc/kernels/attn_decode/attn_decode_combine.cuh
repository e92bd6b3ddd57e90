// attn_decode's second launch (docs/kernels/attn_decode.md, Merge): the LSE merge (lse.h) of
// the splits' partial states in the workspace into out / lse.
#pragma once

#include <cutlass/numeric_types.h>

#include "attn_decode/attn_decode.h"
#include "attn_decode/config.h"
#include "spava/lse.h"

namespace spava {
namespace decode {

// The LSE merge of the splits (lse.h), one CTA per output row item = (b * q_len + t) * heads_q
// + h: the total lse by a tree of lse_combine, the weights, then each thread sums the splits
// pg, pg + kGroups, ... of four columns, and the groups' sums are added.
template <typename T, int kHeadDim>
__global__ void __launch_bounds__(kCombineThreads)
    attn_decode_combine_kernel(const __grid_constant__ AttnDecodeParams p) {
  constexpr int kQuads = kHeadDim / 4;              // float4 columns
  constexpr int kGroups = kCombineThreads / kQuads;  // split groups
  constexpr int kWarpsC = kCombineThreads / 32;
  __shared__ float s_w[kMaxSplits];
  __shared__ float s_warp[kWarpsC];
  __shared__ __align__(16) float s_acc[kGroups][kHeadDim];
  const AttnProblemArgs& pr = p.args.problems[0];
  const int n = p.plan.num_splits;
  const int64_t item = blockIdx.x;
  const int tid = threadIdx.x, lane = tid % 32;
  const float* lses = p.split_lse + item * n;

  float x = -INFINITY;
  for (int i = tid; i < n; i += kCombineThreads) x = lse_combine(x, lses[i]);
#pragma unroll
  for (int off = 16; off > 0; off /= 2) x = lse_combine(x, __shfl_xor_sync(0xffffffffu, x, off));
  if (lane == 0) s_warp[tid / 32] = x;
  __syncthreads();
  float total = -INFINITY;
#pragma unroll
  for (int w = 0; w < kWarpsC; ++w) total = lse_combine(total, s_warp[w]);
  for (int i = tid; i < n; i += kCombineThreads) s_w[i] = lse_weight(lses[i], total);
  __syncthreads();

  const int c = tid % kQuads, pg = tid / kQuads;
  if (pg < kGroups) {
    const float4* outs = reinterpret_cast<const float4*>(p.split_out + item * n * kHeadDim) + c;
    float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll 4
    for (int i = pg; i < n; i += kGroups) {
      const float w = s_w[i];
      const float4 v = outs[int64_t(i) * kQuads];
      acc.x += w * v.x;
      acc.y += w * v.y;
      acc.z += w * v.z;
      acc.w += w * v.w;
    }
    *reinterpret_cast<float4*>(&s_acc[pg][4 * c]) = acc;
  }
  __syncthreads();
  const int h = int(item % p.args.heads_q);
  const int q_row = int((item / p.args.heads_q) % pr.q_len);
  const int64_t b = item / (int64_t(p.args.heads_q) * pr.q_len);
  const int64_t o = b * pr.out_batch_stride + q_row * pr.out_row_stride + h * pr.out_head_stride;
  for (int d = tid; d < kHeadDim; d += kCombineThreads) {
    float sum = 0.f;
#pragma unroll
    for (int k = 0; k < kGroups; ++k) sum += s_acc[k][d];
    if (pr.out_fp32) {
      static_cast<float*>(pr.out)[o + d] = sum;
    } else {
      static_cast<T*>(pr.out)[o + d] = static_cast<T>(sum);
    }
  }
  if (tid == 0 && pr.lse != nullptr) {
    pr.lse[b * pr.lse_batch_stride + h * pr.lse_head_stride + q_row * pr.lse_row_stride] = total;
  }
}

}  // namespace decode
}  // namespace spava
