// quantize_fp8: per-block e4m3 quantisation of Q, K or V for the FP8 attention path, optionally
// Hadamard-rotated and (for V) transposed to [batch, heads, head_dim, len_pad].
#pragma once

#include <cuda_runtime_api.h>

#include "spava/quantize_params.h"

namespace spava {

constexpr int kQuantizeMaxRotateDim = 256;  // rotate: head_dim <= 8 elements x 32 lanes

// One instantiation per 16-bit element type: instantiations/quantize_fp8_*.cu.
template <typename T>
void run_quantize_fp8_(const QuantizeFp8Params& params, cudaStream_t stream);

// Launches the quantisation on `stream` (no host synchronisation; graph-capturable). Throws
// std::runtime_error on a launch failure.
void run_quantize_fp8(const QuantizeFp8Params& params, cudaStream_t stream);

}  // namespace spava
