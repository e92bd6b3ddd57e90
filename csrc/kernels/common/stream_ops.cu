// stream_wait_flag / stream_set_flag: cuStreamWaitValue32 / cuStreamWriteValue32 through the
// runtime's driver entry point (no libcuda link).
#include "common/stream_ops.h"

#include <cuda.h>
#include <cudaTypedefs.h>

#include <stdexcept>
#include <string>

#include "common/driver_api.h"

namespace spava {
namespace {

PFN_cuStreamWaitValue32_v11070 wait_value_fn() {
  static const auto fn =
      driver_function<PFN_cuStreamWaitValue32_v11070>("cuStreamWaitValue32", 11070);
  return fn;
}

PFN_cuStreamWriteValue32_v11070 write_value_fn() {
  static const auto fn =
      driver_function<PFN_cuStreamWriteValue32_v11070>("cuStreamWriteValue32", 11070);
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

void stream_set_flag(int* flag, cudaStream_t stream) {
  // Flags 0: the default memory barrier, so the stream's earlier writes are visible first.
  const CUresult rc = write_value_fn()(reinterpret_cast<CUstream>(stream),
                                       reinterpret_cast<CUdeviceptr>(flag), 1, 0);
  if (rc != CUDA_SUCCESS)
    throw std::runtime_error("spava::set_flag: cuStreamWriteValue32 failed (error " +
                             std::to_string(int(rc)) + ")");
}

}  // namespace spava
