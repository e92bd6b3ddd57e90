// spava::set_trace_file: where the kernel launches of a trace build (SPAVA_ATTN_TRACE=1) write
// their traces (csrc/kernels/common/trace.cuh). The glue passes the stored path to the launchers.
#pragma once

#include <string>

namespace spava {

// Stores `path` for the launches that follow ("": no trace). Raises in builds without traces.
void set_trace_file(const std::string& path);

// The stored path ("" when none or in builds without traces). A copy: a concurrent
// set_trace_file does not change it under the caller.
std::string trace_file();

}  // namespace spava
