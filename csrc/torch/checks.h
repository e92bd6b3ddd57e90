// Argument checks shared by the CPU and CUDA implementations of every op. Each error message
// starts with the op name and states the offending value.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <optional>
#include <vector>

#define SPAVA_CHECK_VALUE(cond, op, ...) TORCH_CHECK_VALUE(cond, "spava::", op, ": ", __VA_ARGS__)
#define SPAVA_CHECK_TYPE(cond, op, ...) TORCH_CHECK_TYPE(cond, "spava::", op, ": ", __VA_ARGS__)

namespace spava {

// The softmax scale of an attention op: softmax_scale when given, else 1 / sqrt(head_dim)
// (docs/design.md "Defaults"). The only C++ definition of the default.
double resolve_softmax_scale(std::optional<double> softmax_scale, int64_t head_dim);

// Problem sizes of attn_fwd after validation (softmax_scale resolved). row_begin / diag are
// the arguments clamped to [0, q_len] / [-q_len, seg_len]: the same visible keys (row i >=
// row_begin sees key j <= i + diag, i < q_len, j < seg_len), and i + diag cannot overflow.
struct AttnFwdDims {
  int64_t batch, q_len, heads_q, heads_kv, head_dim;
  double softmax_scale;
  std::vector<int64_t> seg_lens, row_begin, diag;
};
AttnFwdDims check_attn_fwd(const at::Tensor& q, const std::vector<at::Tensor>& k,
                           const std::vector<at::Tensor>& v, at::IntArrayRef row_begin,
                           at::IntArrayRef diag, std::optional<double> softmax_scale,
                           const at::Tensor& out, const std::optional<at::Tensor>& lse);

// A group of attn_fwd problems (attn_fwd_group): problem i has query rows q[i], output out[i]
// and lse[i] (an empty tensor: none), and the next num_segments[i] entries of k / v / row_begin
// / diag. ready (int32, q's device) holds flags; wait_for[i] is the flag problem i waits for
// (-1: none; an empty list: no problem waits).
struct AttnFwdProblemArgs {
  std::vector<at::Tensor> k, v;
  std::vector<int64_t> row_begin, diag;
  std::optional<at::Tensor> lse;
  int64_t wait_for = -1;
};
// The overlap arguments of attn_fwd_group, as registration.cpp states them.
struct AttnFwdGroupOverlap {
  std::optional<at::Tensor> ready;
  at::IntArrayRef wait_for;
  std::optional<at::Tensor> sched, done;
  bool finish;
  int64_t sm_budget, spin_us;
  double timeout_s;
};
std::vector<AttnFwdProblemArgs> check_attn_fwd_group(
    const std::vector<at::Tensor>& q, at::IntArrayRef num_segments,
    const std::vector<at::Tensor>& k, const std::vector<at::Tensor>& v,
    at::IntArrayRef row_begin, at::IntArrayRef diag, std::optional<double> softmax_scale,
    const std::vector<at::Tensor>& out, const std::vector<at::Tensor>& lse,
    const AttnFwdGroupOverlap& ov);

// flag: a contiguous int32 tensor with at least one element.
void check_flag(const char* op, const at::Tensor& flag);

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
