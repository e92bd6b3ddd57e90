// Host launcher of merge_states for every (input, output) dtype pair.
#include "merge_states.h"

#include "merge_states_kernel.cuh"
#include "spava/check.h"
#include "spava/static_switch.h"

namespace spava {

void run_merge_states(const MergeStatesParams& params, cudaStream_t stream) {
  const int64_t items = int64_t(params.batch) * params.rows * params.heads;
  if (items == 0 || params.head_dim == 0) return;
  constexpr int kThreads = 256;  // 8 items per block
  const int64_t blocks = (items * 32 + kThreads - 1) / kThreads;
  SPAVA_DTYPE_SWITCH(params.in_dtype, TIn, [&] {
    SPAVA_DTYPE_SWITCH(params.out_dtype, TOut, [&] {
      merge_states_kernel<TIn, TOut><<<dim3(unsigned(blocks)), kThreads, 0, stream>>>(params);
    });
  });
  SPAVA_CUDA_CHECK(cudaGetLastError());
}

}  // namespace spava
