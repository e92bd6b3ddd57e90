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

// if (p) *addr += v (shared / global memory), written as one predicated PTX reduction. Under a
// plain `if` nvcc gives each atomic its own divergent region (BSSY / BSYNC); from this form
// ptxas emits a short forward branch per atomic and one region for an unrolled group (the score
// kernel's count and histogram flush: 1600 -> 1410 cycles in the trace). For many
// atomics in a row a branch-free form is better still (count_digit in select_block.cuh).
__device__ __forceinline__ void shared_add_if(bool p, int* addr, int v) {
  const unsigned a = static_cast<unsigned>(__cvta_generic_to_shared(addr));
  asm volatile(
      "{\n .reg .pred q;\n setp.ne.b32 q, %0, 0;\n @q red.shared.add.u32 [%1], %2;\n}\n" ::"r"(
          int(p)),
      "r"(a), "r"(v)
      : "memory");
}

__device__ __forceinline__ void global_add_if(bool p, int* addr, int v) {
  asm volatile(
      "{\n .reg .pred q;\n setp.ne.b32 q, %0, 0;\n @q red.global.add.u32 [%1], %2;\n}\n" ::"r"(
          int(p)),
      "l"(addr), "r"(v)
      : "memory");
}

// Order-preserving map float -> uint32 (larger float, larger key). Every NaN, whatever its sign
// and payload, maps to 0xFFFFFFFF, above +inf (docs/design.md "Non-finite inputs": NaN ranks
// above every number, NaNs among themselves by position). Scores are never -0 (sums start at
// +0), so equal keys are exactly equal scores.
__device__ __forceinline__ uint32_t order_key(float f) {
  if (f != f) return 0xFFFFFFFFu;
  const uint32_t u = __float_as_uint(f);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// 16-byte load through the read-only path: only for inputs no kernel of the chain writes.
__device__ __forceinline__ uint4 ldg_16(const void* src) {
  return __ldg(reinterpret_cast<const uint4*>(src));
}

}  // namespace spava::select
