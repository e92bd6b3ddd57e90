// The CUDA context of a launch, through the stable ABI: the device guard and torch's current
// stream of a device.
#pragma once

#include <cuda_runtime_api.h>
#include <torch/csrc/inductor/aoti_torch/c/shim.h>
#include <torch/csrc/stable/accelerator.h>
#include <torch/headeronly/util/shim_utils.h>

// A stable C shim (libtorch_cuda) that shim.h declares only in torch's own CUDA build.
extern "C" AOTITorchError aoti_torch_get_current_cuda_stream(int32_t device_index,
                                                             void** ret_stream);

namespace spava {

// Makes a device current for its lifetime (c10::cuda::CUDAGuard).
using DeviceGuard = torch::stable::accelerator::DeviceGuard;

// torch's current CUDA stream on device `index` (c10::cuda::getCurrentCUDAStream).
inline cudaStream_t current_stream(int32_t index) {
  void* stream = nullptr;
  TORCH_ERROR_CODE_CHECK(aoti_torch_get_current_cuda_stream(index, &stream));
  return static_cast<cudaStream_t>(stream);
}

}  // namespace spava
