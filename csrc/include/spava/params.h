// Plain-old-data parameter structs: the whole interface between the torch glue and the kernels.
// Strides are in elements; the innermost (head_dim) dimension is always contiguous.
#pragma once

#include <cstdint>

#include "spava/dtype.h"

namespace spava {

// LSE merge of n partial attention states into one (see lse.h for the math).
struct MergeStatesParams {
  const void* outs;  // [n, b, rows, h, d] normalised partial outputs, dtype in_dtype
  int64_t outs_part_stride, outs_batch_stride, outs_row_stride, outs_head_stride;
  const float* lses;  // [n, b, h, rows] natural-log LSE of each partial, fp32
  int64_t lses_part_stride, lses_batch_stride, lses_head_stride, lses_row_stride;
  void* out;  // [b, rows, h, d] merged output, dtype out_dtype (may alias nothing above)
  int64_t out_batch_stride, out_row_stride, out_head_stride;
  float* lse;  // [b, h, rows] merged LSE, fp32; may be nullptr
  int64_t lse_batch_stride, lse_head_stride, lse_row_stride;
  int num_parts, batch, rows, heads, head_dim;
  DType in_dtype, out_dtype;
};

}  // namespace spava
