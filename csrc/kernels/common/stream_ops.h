// Stream memory operations (torch-free): make a stream wait for a flag in device memory that
// another stream sets, or set one, without involving the host or an SM.
#pragma once

#include <cuda_runtime_api.h>

namespace spava {

// Work queued on `stream` after this call starts once *flag >= 1 (int32, device memory).
// Captured into CUDA graphs as a memory-operation node. Throws if the driver lacks the call.
void stream_wait_flag(const int* flag, cudaStream_t stream);

// *flag = 1 (int32, device memory) once the work queued on `stream` before it has finished,
// with its writes visible first. Runs in the stream's front end, on no SM: a kernel whose CTAs
// hold every SM while they poll the flag cannot keep it from being set (a fill kernel, queued
// behind those CTAs, could not run). Captured into CUDA graphs. Throws if the driver lacks it.
void stream_set_flag(int* flag, cudaStream_t stream);

}  // namespace spava
