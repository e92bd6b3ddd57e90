// Small PTX helpers shared by the kernels (sm_80+ unless noted).
#pragma once

#include <cstdint>

namespace spava {

// 16-byte global -> shared async copy; when `valid` is false the 16 bytes are zero-filled
// (src-size 0), so tails past the end of a segment hold finite values.
__device__ __forceinline__ void cp_async_16(void* smem, const void* gmem, bool valid) {
  const uint32_t dst = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  const int src_size = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(gmem),
               "r"(src_size));
}

__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }

// Wait until at most N committed groups of this thread are still in flight.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

// Make this thread's generic-proxy shared-memory writes (cp.async, st.shared) visible to the
// async proxy (wgmma, TMA). Must precede the barrier that publishes the data. sm_90.
__device__ __forceinline__ void fence_proxy_async_shared() {
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}

// 2^x with the hardware approximation (ex2.approx: 2 ulp; exp2(-inf) = 0).
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

}  // namespace spava
