// select_passing: query-aware choice of the passing block of each chunk, gathered into the
// packed K/V send buffer (DESIGN.md §1 "Selection").
#pragma once

#include <cuda_runtime_api.h>

#include "spava/params.h"

namespace spava {

constexpr int kMaxQsumSplits = 16;  // partial sums of q per (b, h_kv) written by kernel 1
constexpr int kRadixBins = 2048;    // 11-bit radix digits (top digit: sign, exponent, 2 bits)

// Fills the launch-shape fields of params (see params.h), then runs the kernels on `stream`.
// When some chunk selects (passing_len < chunk_len), params.qsum, hist and keys must point at
// workspaces of the sizes in params.h; they need no initial contents. Never
// synchronises the host, so it may be captured in a CUDA graph. Kernels 2 and 3 are chained
// with programmatic dependent launch unless the environment has SPAVA_SELECT_PDL=0 (read once).
void run_select_passing(SelectPassingParams params, cudaStream_t stream);

}  // namespace spava
