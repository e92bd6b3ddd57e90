// Driver API functions without linking libcuda: looked up once through the runtime
// (cudaGetDriverEntryPointByVersion).
#pragma once

namespace spava {

// The driver function `name` in the ABI of CUDA `version` (e.g. 12000 for 12.0). Throws
// std::runtime_error when the driver lacks it.
void* driver_entry_point(const char* name, int version);

// driver_entry_point cast to the PFN type (callers keep it in a static: one lookup).
template <class Fn>
Fn driver_function(const char* name, int version) {
  return reinterpret_cast<Fn>(driver_entry_point(name, version));
}

}  // namespace spava
