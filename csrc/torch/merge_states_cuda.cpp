// CUDA glue of spava::merge_states: checks -> params -> launch on the current stream.
#include "checks.h"
#include "cuda_context.h"
#include "cuda_params.h"
#include "dtype_map.h"
#include "merge_states/merge_states.h"
#include "ops.h"

namespace spava {

void merge_states_cuda(const Tensor& outs, const Tensor& lses, const Tensor& out,
                       const std::optional<Tensor>& lse) {
  const int64_t n = check_merge_states(outs, lses, out, lse);
  const DeviceGuard guard(outs.get_device_index());
  MergeStatesParams p{};
  p.outs = outs.const_data_ptr();
  p.outs_part_stride = outs.stride(0);
  p.outs_batch_stride = outs.stride(1);
  p.outs_row_stride = outs.stride(2);
  p.outs_head_stride = outs.stride(3);
  p.lses = lses.const_data_ptr<float>();
  p.lses_part_stride = lses.stride(0);
  p.lses_batch_stride = lses.stride(1);
  p.lses_head_stride = lses.stride(2);
  p.lses_row_stride = lses.stride(3);
  set_out_and_lse(p, out, lse);
  p.num_parts = int(n);
  p.batch = int(outs.size(1));
  p.rows = int(outs.size(2));
  p.heads = int(outs.size(3));
  p.head_dim = int(outs.size(4));
  p.in_dtype = to_dtype(outs.scalar_type());
  p.out_dtype = to_dtype(out.scalar_type());
  run_merge_states(p, current_stream(outs.get_device_index()));
}

}  // namespace spava
