// Host launcher of select_passing: qsum -> scores -> select + gather.
#include "select_passing/select_passing.h"

#include <algorithm>

#include "select_passing/select_passing_kernel.cuh"
#include "spava/check.h"
#include "spava/static_switch.h"

namespace spava {

void run_select_passing(SelectPassingParams p, cudaStream_t stream) {
  using namespace select;
  const int items = p.num_chunks * p.batch * p.heads_kv;
  if (items == 0) return;
  int max_len = 0;
  for (int c = 0; c < p.num_chunks; ++c) max_len = std::max(max_len, p.chunk_len[c]);
  if (p.gather_splits == 0) p.gather_splits = std::clamp((p.capacity + 127) / 128, 1, 32);
  // Shared memory of kernel 3: positions, then (when they fit) the smoothed scores.
  constexpr int kSmemBudget = 200 * 1024;
  const int sel_bytes = int(sizeof(int)) * p.capacity;
  const int fit = std::max(0, (kSmemBudget - sel_bytes) / int(sizeof(float)));
  p.smem_scores = std::min(max_len, fit);
  const int smem = sel_bytes + int(sizeof(float)) * p.smem_scores;

  SPAVA_HALF_DTYPE_SWITCH(p.dtype, T, [&] {
    qsum_kernel<T><<<dim3(p.heads_kv, p.batch), kQsumThreads, 0, stream>>>(p);
    SPAVA_CUDA_CHECK(cudaGetLastError());
    if (max_len > 0) {
      const dim3 grid((max_len + kScoreRowsPerBlock - 1) / kScoreRowsPerBlock, items);
      score_kernel<T><<<grid, kScoreThreads, 0, stream>>>(p);
      SPAVA_CUDA_CHECK(cudaGetLastError());
    }
    auto kernel = select_gather_kernel<T>;
    static int smem_limit_set = 48 * 1024;  // raise the opt-in limit once, to the largest seen
    if (smem > smem_limit_set) {
      SPAVA_CUDA_CHECK(
          cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmemBudget));
      smem_limit_set = kSmemBudget;
    }
    kernel<<<dim3(p.gather_splits, items), kSelectThreads, smem, stream>>>(p);
    SPAVA_CUDA_CHECK(cudaGetLastError());
  });
}

}  // namespace spava
