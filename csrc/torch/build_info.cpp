// spava::build_info(): what this binary was compiled with (read by tests to skip cleanly).
#include <string>

#include "ops.h"

#ifndef SPAVA_CUDA_ARCHS
#define SPAVA_CUDA_ARCHS ""
#endif

namespace spava {

std::string build_info() {
#ifdef SPAVA_WITH_CUDA
  return std::string("{\"cuda\": true, \"cuda_archs\": \"") + SPAVA_CUDA_ARCHS +
         "\", \"cuda_ops\": [\"merge_states\"]}";
#else
  return "{\"cuda\": false, \"cuda_archs\": \"\", \"cuda_ops\": []}";
#endif
}

}  // namespace spava
