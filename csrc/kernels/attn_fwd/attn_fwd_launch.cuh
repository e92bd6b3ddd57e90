// Launch template of attn_fwd on sm90: config -> tensor maps -> kernel attributes -> launch.
//   kernel_variant 0: warp-specialised TMA kernel (attn_fwd_kernel_sm90.cuh, the default)
//   kernel_variant 1: cp.async kernel (attn_fwd_kernel_sm90_cpasync.cuh)
#pragma once

#include "attn_fwd/attn_fwd.h"
#include "attn_fwd/attn_fwd_kernel_sm90.cuh"
#include "attn_fwd/attn_fwd_kernel_sm90_cpasync.cuh"
#include "attn_fwd/config.h"
#include "attn_fwd/tma_params.h"
#include "common/tma.h"
#include "spava/check.h"

namespace spava {

template <typename T, int kHeadDim>
void launch_attn_fwd_sm90(const AttnFwdParams& params, cudaStream_t stream) {
  if (params.q_len == 0 || params.batch == 0 || params.heads_q == 0) return;
  if (params.kernel_variant == 1) {
    using Cfg = attn::Sm90Config<T, kHeadDim>;
    auto kernel = attn::attn_fwd_sm90_kernel<Cfg>;
    SPAVA_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                          Cfg::kSmemBytes));
    const dim3 grid((params.q_len + Cfg::kBlockM - 1) / Cfg::kBlockM, params.heads_q,
                    params.batch);
    kernel<<<grid, Cfg::kThreads, Cfg::kSmemBytes, stream>>>(params);
    SPAVA_CUDA_CHECK(cudaGetLastError());
    return;
  }
  using Cfg = attn::Sm90WsConfig<T, kHeadDim>;
  AttnFwdTmaParams tp;
  tp.p = params;
  tp.q = make_rows_tensor_map(params.q, params.dtype, params.batch, params.q_len, params.heads_q,
                              kHeadDim, params.q_batch_stride, params.q_row_stride,
                              params.q_head_stride, Cfg::kBoxCols, Cfg::kBlockM,
                              Cfg::kSwizzleBytes);
  for (int s = 0; s < params.num_segments; ++s) {
    const KvSegment& seg = params.segments[s];
    tp.k[s] = make_rows_tensor_map(seg.k, params.dtype, params.batch, seg.len, params.heads_kv,
                                   kHeadDim, seg.k_batch_stride, seg.k_row_stride,
                                   seg.k_head_stride, Cfg::kBoxCols, Cfg::kBlockN,
                                   Cfg::kSwizzleBytes);
    tp.v[s] = make_rows_tensor_map(seg.v, params.dtype, params.batch, seg.len, params.heads_kv,
                                   kHeadDim, seg.v_batch_stride, seg.v_row_stride,
                                   seg.v_head_stride, Cfg::kBoxCols, Cfg::kBlockN,
                                   Cfg::kSwizzleBytes);
  }
  auto kernel = attn::attn_fwd_sm90_ws_kernel<Cfg>;
  SPAVA_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        Cfg::kSmemBytes));
  const dim3 grid((params.q_len + Cfg::kBlockM - 1) / Cfg::kBlockM, params.heads_q, params.batch);
  kernel<<<grid, Cfg::kThreads, Cfg::kSmemBytes, stream>>>(tp);
  SPAVA_CUDA_CHECK(cudaGetLastError());
}

}  // namespace spava
