// Filling the output fields that the kernel params structs share (AttnFwdParams, MergeStatesParams).
#pragma once

#include <optional>

#include "tensor.h"

namespace spava {

// out [b, rows, h, d] (any strides, last dim contiguous) and lse [b, h, rows] fp32 (may be absent).
template <class Params>
void set_out_and_lse(Params& p, const Tensor& out, const std::optional<Tensor>& lse) {
  p.out = out.mutable_data_ptr();
  p.out_batch_stride = out.stride(0);
  p.out_row_stride = out.stride(1);
  p.out_head_stride = out.stride(2);
  if (lse) {
    p.lse = lse->mutable_data_ptr<float>();
    p.lse_batch_stride = lse->stride(0);
    p.lse_head_stride = lse->stride(1);
    p.lse_row_stride = lse->stride(2);
  }
}

}  // namespace spava
