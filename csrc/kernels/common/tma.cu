// make_rows_tensor_map: cuTensorMapEncodeTiled through the runtime's driver entry point, behind a
// per-thread cache of encoded maps.
#include "common/tma.h"

#include <cudaTypedefs.h>

#include <array>
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

CUtensorMap encode_rows_tensor_map(const void* ptr, DType dtype, int64_t batch, int64_t rows,
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


// Every argument of make_rows_tensor_map: a tensor map is a pure function of them.
using MapKey = std::array<int64_t, 12>;

// A direct-mapped cache of encoded maps, one per host thread (no locks). A launch of a rank's
// layer encodes ~30 maps and the same buffers recur call after call (the caching allocator
// hands the same addresses back), so most launches find all of them here.
struct MapCache {
  static constexpr int kSlots = 256;
  std::array<MapKey, kSlots> keys{};
  std::array<CUtensorMap, kSlots> maps{};
  std::array<bool, kSlots> used{};

  static int slot(const MapKey& key) {
    uint64_t h = 1469598103934665603ull;  // FNV-1a over the words
    for (const int64_t w : key) h = (h ^ uint64_t(w)) * 1099511628211ull;
    return int((h ^ (h >> 32)) % kSlots);
  }
};

}  // namespace

CUtensorMap make_rows_tensor_map(const void* ptr, DType dtype, int64_t batch, int64_t rows,
                                 int64_t heads, int64_t dim, int64_t batch_stride,
                                 int64_t row_stride, int64_t head_stride, int box_cols,
                                 int box_rows, int swizzle_bytes) {
  thread_local MapCache cache;
  const MapKey key{int64_t(reinterpret_cast<uintptr_t>(ptr)), int64_t(dtype), batch, rows, heads,
                   dim, batch_stride, row_stride, head_stride, box_cols, box_rows,
                   swizzle_bytes};
  const int s = MapCache::slot(key);
  if (!cache.used[s] || cache.keys[s] != key) {
    cache.maps[s] = encode_rows_tensor_map(ptr, dtype, batch, rows, heads, dim, batch_stride,
                                           row_stride, head_stride, box_cols, box_rows,
                                           swizzle_bytes);
    cache.keys[s] = key;
    cache.used[s] = true;
  }
  return cache.maps[s];
}

}  // namespace spava
