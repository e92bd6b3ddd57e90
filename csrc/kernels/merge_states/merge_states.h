// LSE merge of partial attention states (e.g. the W question partials of Spava).
#pragma once

#include <cuda_runtime_api.h>

#include "spava/params.h"

namespace spava {

// One instantiation per (input, output) element type: instantiations/merge_states_*.cu.
template <typename TIn, typename TOut>
void run_merge_states_(const MergeStatesParams& params, cudaStream_t stream);

// Launches the merge on `stream`. Throws std::runtime_error on a launch failure.
void run_merge_states(const MergeStatesParams& params, cudaStream_t stream);

}  // namespace spava
