// make_rows_tensor_map: cuTensorMapEncodeTiled through the runtime's driver entry point.
#include "common/tma.h"

#include <cudaTypedefs.h>

#include <stdexcept>
#include <string>

#include "common/driver_api.h"

namespace spava {
namespace {

PFN_cuTensorMapEncodeTiled_v12000 encode_fn() {
  static const auto fn =
      driver_function<PFN_cuTensorMapEncodeTiled_v12000>("cuTensorMapEncodeTiled", 12000);
  return fn;
}

}  // namespace

CUtensorMap make_rows_tensor_map(const void* ptr, DType dtype, int64_t batch, int64_t rows,
                                 int64_t heads, int64_t dim, int64_t batch_stride,
                                 int64_t row_stride, int64_t head_stride, int box_cols,
                                 int box_rows, int swizzle_bytes) {
  const int64_t el = dtype == DType::kFloat32 ? 4 : 2;
  // dims innermost first: (dim, heads, rows, batch); a stride of a size-1 dim is never used,
  // so any multiple of 16 will do there.
  auto stride_bytes = [&](int64_t size, int64_t stride) {
    return cuuint64_t(size == 1 ? 16 : stride * el);
  };
  cuuint64_t gdim[4] = {cuuint64_t(dim), cuuint64_t(heads), cuuint64_t(rows > 0 ? rows : 1),
                        cuuint64_t(batch)};
  cuuint64_t gstride[3] = {stride_bytes(heads, head_stride), stride_bytes(rows, row_stride),
                           stride_bytes(batch, batch_stride)};
  cuuint32_t box[4] = {cuuint32_t(box_cols), 1, cuuint32_t(box_rows), 1};
  cuuint32_t estride[4] = {1, 1, 1, 1};
  CUtensorMapSwizzle swizzle = swizzle_bytes == 128  ? CU_TENSOR_MAP_SWIZZLE_128B
                               : swizzle_bytes == 64 ? CU_TENSOR_MAP_SWIZZLE_64B
                                                     : CU_TENSOR_MAP_SWIZZLE_32B;
  CUtensorMapDataType type = dtype == DType::kBFloat16  ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16
                             : dtype == DType::kFloat16 ? CU_TENSOR_MAP_DATA_TYPE_FLOAT16
                                                        : CU_TENSOR_MAP_DATA_TYPE_FLOAT32;
  CUtensorMap map;
  const CUresult rc = encode_fn()(&map, type, 4, const_cast<void*>(ptr), gdim, gstride, box,
                                  estride, CU_TENSOR_MAP_INTERLEAVE_NONE, swizzle,
                                  CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                                  CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (rc != CUDA_SUCCESS) {
    throw std::invalid_argument(
        "spava: cuTensorMapEncodeTiled failed (error " + std::to_string(int(rc)) + ") for dims [" +
        std::to_string(batch) + ", " + std::to_string(rows) + ", " + std::to_string(heads) +
        ", " + std::to_string(dim) + "], strides [" + std::to_string(batch_stride) + ", " +
        std::to_string(row_stride) + ", " + std::to_string(head_stride) + "]");
  }
  return map;
}

}  // namespace spava
