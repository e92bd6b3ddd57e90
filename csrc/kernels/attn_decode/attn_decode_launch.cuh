// Launch template of attn_decode: the main kernel over (split, kv head, batch entry), then with
// several splits their merge, one CTA per output row.
#pragma once

#include "attn_decode/attn_decode.h"
#include "attn_decode/attn_decode_combine.cuh"
#include "attn_decode/attn_decode_kernel.cuh"
#include "attn_decode/config.h"
#include "common/kernel_setup.h"
#include "spava/check.h"

namespace spava {

template <typename T, int kHeadDim>
void launch_attn_decode(const AttnDecodeParams& params, cudaStream_t stream) {
  constexpr int kSmem = decode::Smem<kHeadDim>::kBytes;
  set_max_dynamic_smem<decode::attn_decode_kernel<T, kHeadDim>>(kSmem);  // and load it
  const AttnDecodePlan& plan = params.plan;
  const dim3 grid(unsigned(plan.num_splits), unsigned(params.args.heads_kv),
                  unsigned(params.args.batch));
  decode::attn_decode_kernel<T, kHeadDim><<<grid, decode::kThreads, kSmem, stream>>>(params);
  SPAVA_CUDA_CHECK(cudaGetLastError());
  if (plan.num_splits == 1) return;  // the kernel wrote out / lse itself
  const int64_t items = int64_t(params.args.batch) * params.args.problems[0].q_len *
                        params.args.heads_q;
  decode::attn_decode_combine_kernel<T, kHeadDim>
      <<<dim3(unsigned(items)), decode::kCombineThreads, 0, stream>>>(params);
  SPAVA_CUDA_CHECK(cudaGetLastError());
}

}  // namespace spava
