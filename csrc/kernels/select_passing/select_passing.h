// select_passing: query-aware choice of the passing block of each chunk, gathered into the
// packed K/V send buffer (docs/design.md "Selection").
#pragma once

#include <cuda_runtime_api.h>

#include "spava/params.h"

namespace spava {

constexpr int kMaxQsumSplits = 16;  // partial sums of q per (b, h_kv) written by kernel 1
constexpr int kRadixBins = 2048;    // 11-bit radix digits (top digit: sign, exponent, 2 bits)

// One instantiation per element type: instantiations/select_passing_*.cu.
template <typename T>
void run_select_passing_(SelectPassingParams params, cudaStream_t stream, const char* trace_file);

// Fills the launch-shape fields of params (see params.h), then runs the kernels on `stream`.
// When some chunk selects (passing_len < chunk_len), params.qsum, hist and keys must point at
// workspaces of the sizes in params.h; they need no initial contents. Never synchronises the
// host (but see trace_file), so it may be captured in a CUDA graph. Kernels 2 and 3 are chained
// with programmatic dependent launch where their binaries support it (sm_90+). trace_file
// (trace builds, common/trace.cuh; nullptr or "": none): the call first waits for the stream
// and writes the stamps of the previous call of its dtype there.
void run_select_passing(const SelectPassingParams& params, cudaStream_t stream,
                        const char* trace_file);

}  // namespace spava
