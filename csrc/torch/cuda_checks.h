// Checks that only the CUDA implementations need.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "checks.h"

namespace spava {

// The sm90 kernels need a compute capability 9.x device.
inline void check_sm90(const char* op, const Tensor& t) {
  int major = 0, minor = 0;
  const int dev = t.device().index();
  cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
  cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev);
  SPAVA_CHECK_NOT_IMPLEMENTED(major == 9, op, "the CUDA kernels are built for sm_90a"
                              " (H100/H200); this GPU is sm_", major, minor);
}

// 16-byte vector loads: the base pointer and every stride but the last must be multiples of
// 8 elements (16 bytes of bf16/fp16).
inline void check_rows_aligned(const char* op, const char* name, const Tensor& t) {
  bool ok = reinterpret_cast<uintptr_t>(t.const_data_ptr()) % 16 == 0;
  for (int64_t i = 0; i + 1 < t.dim(); ++i) ok = ok && (t.size(i) == 1 || t.stride(i) % 8 == 0);
  SPAVA_CHECK_VALUE(ok, op, name, " must be 16-byte aligned with strides that "
                    "are multiples of 8 elements, got strides ", dims_str(t.strides()));
}

}  // namespace spava
