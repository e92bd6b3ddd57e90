// stream_wait_flag: cuStreamWaitValue32 through cudaGetDriverEntryPointByVersion (no libcuda link).
#include "common/stream_ops.h"

#include <cuda.h>
#include <cudaTypedefs.h>

#include <stdexcept>
#include <string>

#include "spava/check.h"

namespace spava {
namespace {

PFN_cuStreamWaitValue32_v11070 wait_value_fn() {
  static PFN_cuStreamWaitValue32_v11070 fn = [] {
    void* ptr = nullptr;
    cudaDriverEntryPointQueryResult status{};
    SPAVA_CUDA_CHECK(cudaGetDriverEntryPointByVersion("cuStreamWaitValue32", &ptr, 11070,
                                                      cudaEnableDefault, &status));
    if (status != cudaDriverEntryPointSuccess || ptr == nullptr)
      throw std::runtime_error("spava: cuStreamWaitValue32 is not available");
    return reinterpret_cast<PFN_cuStreamWaitValue32_v11070>(ptr);
  }();
  return fn;
}

}  // namespace

void stream_wait_flag(const int* flag, cudaStream_t stream) {
  const CUresult rc = wait_value_fn()(reinterpret_cast<CUstream>(stream),
                                      reinterpret_cast<CUdeviceptr>(flag), 1,
                                      CU_STREAM_WAIT_VALUE_GEQ);
  if (rc != CUDA_SUCCESS)
    throw std::runtime_error("spava::wait_flag: cuStreamWaitValue32 failed (error " +
                             std::to_string(int(rc)) + ")");
}

}  // namespace spava
