// run_select_passing: runtime dtype -> the compiled instantiation.
#include "select_passing/select_passing.h"
#include "spava/static_switch.h"

namespace spava {

void run_select_passing(const SelectPassingParams& params, cudaStream_t stream,
                        const char* trace_file) {
  SPAVA_HALF_DTYPE_SWITCH(params.dtype, T,
                          [&] { run_select_passing_<T>(params, stream, trace_file); });
}

}  // namespace spava
