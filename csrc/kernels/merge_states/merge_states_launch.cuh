// Launch template of merge_states: one warp per (batch, row, head) item.
#pragma once

#include <cutlass/numeric_types.h>

#include "merge_states/config.h"
#include "merge_states/merge_states.h"
#include "merge_states/merge_states_kernel.cuh"
#include "spava/check.h"

namespace spava {

template <typename TIn, typename TOut>
void launch_merge_states(const MergeStatesParams& params, cudaStream_t stream) {
  const int64_t items = int64_t(params.batch) * params.rows * params.heads;
  const int64_t blocks = (items * 32 + kMergeThreads - 1) / kMergeThreads;
  merge_states_kernel<TIn, TOut><<<dim3(unsigned(blocks)), kMergeThreads, 0, stream>>>(params);
  SPAVA_CUDA_CHECK(cudaGetLastError());
}

}  // namespace spava
