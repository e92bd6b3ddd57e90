// run_merge_states: runtime (input, output) dtypes -> the compiled instantiation.
#include "merge_states/merge_states.h"
#include "spava/static_switch.h"

namespace spava {

void run_merge_states(const MergeStatesParams& params, cudaStream_t stream) {
  const int64_t items = int64_t(params.batch) * params.rows * params.heads;
  // head_dim == 0 still launches: the merged lse is defined without any output columns.
  if (items == 0) return;
  SPAVA_DTYPE_SWITCH(params.in_dtype, TIn, [&] {
    SPAVA_DTYPE_SWITCH(params.out_dtype, TOut,
                       [&] { run_merge_states_<TIn, TOut>(params, stream); });
  });
}

}  // namespace spava
