// attn_fwd: segment-masked flash attention with natural-log LSE (see params.h for the rule).
#pragma once

#include <cuda_runtime_api.h>

#include "spava/params.h"

namespace spava {

// One instantiation per (element type, head dim): instantiations/attn_fwd_hdim*_sm90.cu.
template <typename T, int kHeadDim>
void run_attn_fwd_sm90_(const AttnFwdParams& params, cudaStream_t stream);

// Dispatches on params.dtype and params.head_dim. Throws std::invalid_argument for a head dim
// that was not compiled and std::runtime_error on a launch failure.
void run_attn_fwd(const AttnFwdParams& params, cudaStream_t stream);

// Split-KV factor for params (1 = none): > 1 only when the grid would leave SMs idle and every
// query tile has enough key tiles to share out. Uses the kernel's tile sizes.
int attn_fwd_num_splits(const AttnFwdParams& params, int num_sms);

// Head dims compiled into this build, ascending, and their count.
extern const int kAttnFwdHeadDims[];
extern const int kNumAttnFwdHeadDims;

}  // namespace spava
