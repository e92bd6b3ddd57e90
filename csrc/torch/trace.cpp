// spava::set_trace_file: one process-wide path, guarded by a mutex (set from Python, read by the
// ops of any thread). Only trace builds store it.
#include "trace.h"

#include "errors.h"

#include <mutex>

namespace spava {

#ifdef SPAVA_ATTN_TRACE
namespace {

std::mutex g_trace_mutex;
std::string g_trace_file;  // guarded by g_trace_mutex

}  // namespace

void set_trace_file(const std::string& path) {
  const std::lock_guard<std::mutex> lock(g_trace_mutex);
  g_trace_file = path;
}

std::string trace_file() {
  const std::lock_guard<std::mutex> lock(g_trace_mutex);
  return g_trace_file;
}
#else
void set_trace_file(const std::string& path) {
  SPAVA_CHECK(false, "set_trace_file", "this build has no traces (build with "
                                       "SPAVA_ATTN_TRACE=1)");
}

std::string trace_file() { return {}; }
#endif

}  // namespace spava
