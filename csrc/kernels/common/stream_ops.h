// Stream memory operations (torch-free): make a stream wait for a flag in device memory that a
// kernel on another stream sets, without involving the host.
#pragma once

#include <cuda_runtime_api.h>

namespace spava {

// Work queued on `stream` after this call starts once *flag >= 1 (int32, device memory).
// Captured into CUDA graphs as a memory-operation node. Throws if the driver lacks the call.
void stream_wait_flag(const int* flag, cudaStream_t stream);

}  // namespace spava
