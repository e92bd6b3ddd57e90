// select_passing: device helpers shared by the three kernels.
#pragma once

#include <cstdint>

namespace spava::select {

// Blocks until the preceding grid on the stream has completed and its writes are visible; a
// no-op when the kernel was launched without programmatic stream serialization.
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}

// Lets the next grid on the stream (launched with PDL) be scheduled before this one ends.
__device__ __forceinline__ void pdl_launch_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}

// Order-preserving map float -> uint32 (larger float, larger key). Scores are never NaN or -0
// (sums start at +0), so equal keys are exactly equal scores.
__device__ __forceinline__ uint32_t order_key(float f) {
  const uint32_t u = __float_as_uint(f);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// 16-byte load through the read-only path: only for inputs no kernel of the chain writes.
__device__ __forceinline__ uint4 ldg_16(const void* src) {
  return __ldg(reinterpret_cast<const uint4*>(src));
}

}  // namespace spava::select
