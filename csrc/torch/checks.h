// Argument checks shared by the CPU and CUDA implementations of every op. Each error message
// starts with the op name and states the offending value.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <optional>
#include <vector>

#define SPAVA_CHECK_VALUE(cond, op, ...) TORCH_CHECK_VALUE(cond, "spava::" op ": ", __VA_ARGS__)
#define SPAVA_CHECK_TYPE(cond, op, ...) TORCH_CHECK_TYPE(cond, "spava::" op ": ", __VA_ARGS__)

namespace spava {

// Problem sizes of attn_fwd after validation.
struct AttnFwdDims {
  int64_t batch, q_len, heads_q, heads_kv, head_dim;
  double softmax_scale;
  std::vector<int64_t> seg_lens;
};
AttnFwdDims check_attn_fwd(const at::Tensor& q, const std::vector<at::Tensor>& k,
                           const std::vector<at::Tensor>& v, at::IntArrayRef row_begin,
                           at::IntArrayRef diag, std::optional<double> softmax_scale,
                           const at::Tensor& out, const std::optional<at::Tensor>& lse);

// Problem sizes of select_passing after validation.
struct SelectPassingDims {
  int64_t batch, q_len, heads_q, heads_kv, head_dim, kv_len, num_chunks, capacity;
};
SelectPassingDims check_select_passing(const at::Tensor& q, const at::Tensor& k,
                                       const at::Tensor& v, at::IntArrayRef chunk_starts,
                                       at::IntArrayRef chunk_lens, int64_t passing_len,
                                       int64_t pool_kernel, const at::Tensor& indices,
                                       const at::Tensor& kv);

// Validates merge_states; returns the number of parts.
int64_t check_merge_states(const at::Tensor& outs, const at::Tensor& lses, const at::Tensor& out,
                           const std::optional<at::Tensor>& lse);

}  // namespace spava
