// select_passing: query-aware choice of the passing block of each chunk, gathered into the
// packed K/V send buffer (DESIGN.md §1 "Selection").
#pragma once

#include <cuda_runtime_api.h>

#include "spava/params.h"

namespace spava {

// Fills params.gather_splits / smem_scores if they are 0, then runs the three kernels on
// `stream`. params.qsum and params.scores must point at workspaces of the sizes in params.h.
void run_select_passing(SelectPassingParams params, cudaStream_t stream);

}  // namespace spava
