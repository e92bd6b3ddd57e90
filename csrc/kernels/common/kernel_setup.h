// Host-side, once-per-device kernel setup shared by the launchers (torch-free).
#pragma once

#include <cuda_runtime_api.h>

#include <atomic>
#include <cstdint>

#include "spava/check.h"

namespace spava {

// Runs setup(device) once per device (d < 64; others every call) for the call site owning
// `done` (bit d: done on device d).
template <class Setup>
void once_per_device(std::atomic<uint64_t>& done, Setup&& setup) {
  int device = 0;
  SPAVA_CUDA_CHECK(cudaGetDevice(&device));
  const uint64_t bit = device < 64 ? uint64_t(1) << device : 0;
  if (done.load(std::memory_order_relaxed) & bit) return;
  setup(device);
  done.fetch_or(bit, std::memory_order_relaxed);
}

// Lets kKernel use up to `bytes` of dynamic shared memory on the current device, once per
// device: the attribute belongs to the function on a device. It also loads the kernel there,
// which CUDA's lazy module loading would otherwise do at the first launch, when loading may
// wait for the whole context (see prepare_attn_fwd in attn_fwd.h).
template <auto kKernel>
void set_max_dynamic_smem(int bytes) {
  static std::atomic<uint64_t> done{0};
  once_per_device(done, [bytes](int) {
    SPAVA_CUDA_CHECK(
        cudaFuncSetAttribute(kKernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
  });
}

}  // namespace spava
