// Launch template of attn_fwd (sm90 v1): config -> kernel attributes -> grid -> launch.
#pragma once

#include "attn_fwd/attn_fwd.h"
#include "attn_fwd/attn_fwd_kernel_sm90.cuh"
#include "attn_fwd/config.h"
#include "spava/check.h"

namespace spava {

template <typename T, int kHeadDim>
void launch_attn_fwd_sm90(const AttnFwdParams& params, cudaStream_t stream) {
  using Cfg = attn::Sm90Config<T, kHeadDim>;
  if (params.q_len == 0 || params.batch == 0 || params.heads_q == 0) return;
  auto kernel = attn::attn_fwd_sm90_kernel<Cfg>;
  SPAVA_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        Cfg::kSmemBytes));
  const dim3 grid((params.q_len + Cfg::kBlockM - 1) / Cfg::kBlockM, params.heads_q, params.batch);
  kernel<<<grid, Cfg::kThreads, Cfg::kSmemBytes, stream>>>(params);
  SPAVA_CUDA_CHECK(cudaGetLastError());
}

}  // namespace spava
