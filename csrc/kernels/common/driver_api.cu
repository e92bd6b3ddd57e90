// driver_entry_point: cudaGetDriverEntryPointByVersion with the project's error handling.
#include "common/driver_api.h"

#include <cuda_runtime_api.h>

#include <stdexcept>
#include <string>

#include "spava/check.h"

namespace spava {

void* driver_entry_point(const char* name, int version) {
  void* ptr = nullptr;
  cudaDriverEntryPointQueryResult status{};
  SPAVA_CUDA_CHECK(
      cudaGetDriverEntryPointByVersion(name, &ptr, version, cudaEnableDefault, &status));
  if (status != cudaDriverEntryPointSuccess || ptr == nullptr)
    throw std::runtime_error(std::string("spava: the CUDA driver lacks ") + name);
  return ptr;
}

}  // namespace spava
