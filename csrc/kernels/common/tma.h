// Host-side TMA descriptors (torch-free). The driver entry point is looked up through the
// runtime, so nothing links against libcuda.
#pragma once

#include <cuda.h>

#include <cstdint>

#include "spava/dtype.h"

namespace spava {

// A 4-D tiled tensor map over [batch, rows, heads, dim] (strides in elements; dim contiguous)
// reading boxes of (box_cols x 1 head x box_rows x 1 batch) into shared memory with the given
// swizzle (32, 64 or 128 bytes). Rows past `rows` read as zeros. Throws on failure.
CUtensorMap make_rows_tensor_map(const void* ptr, DType dtype, int64_t batch, int64_t rows,
                                 int64_t heads, int64_t dim, int64_t batch_stride,
                                 int64_t row_stride, int64_t head_stride, int box_cols,
                                 int box_rows, int swizzle_bytes);

}  // namespace spava
