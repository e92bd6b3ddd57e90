// Error checks for torch-free code: they throw, never exit (the caller may be a long-lived server).
#pragma once

#include <stdexcept>
#include <string>

#if defined(__CUDACC__) || defined(SPAVA_WITH_CUDA)
#include <cuda_runtime_api.h>

#define SPAVA_CUDA_CHECK(expr)                                                           \
  do {                                                                                   \
    const cudaError_t spava_err_ = (expr);                                               \
    if (spava_err_ != cudaSuccess) {                                                     \
      throw std::runtime_error(std::string("spava: CUDA error '") +                      \
                               cudaGetErrorString(spava_err_) + "' at " __FILE__ ":" +   \
                               std::to_string(__LINE__) + " in " #expr);                 \
    }                                                                                    \
  } while (0)
#endif

#define SPAVA_HOST_CHECK(cond, msg)                                              \
  do {                                                                           \
    if (!(cond)) throw std::invalid_argument(std::string("spava: ") + (msg));   \
  } while (0)
