// Argument checks shared by the CPU and CUDA implementations of every op. Each error message
// starts with the op name and states the offending value.
#pragma once

#include <optional>
#include <vector>

#include "errors.h"
#include "tensor.h"

namespace spava {

// "[2, 3, 4]": a tensor's shape as error messages print it.
std::string shape_str(const Tensor& t);
// bf16, fp16 or fp32: the dtypes attention ops compute in and write.
bool is_attn_dtype(ScalarType t);

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
AttnFwdDims check_attn_fwd(const Tensor& q, const std::vector<Tensor>& k,
                           const std::vector<Tensor>& v, IntArrayRef row_begin,
                           IntArrayRef diag, std::optional<double> softmax_scale,
                           const Tensor& out, const std::optional<Tensor>& lse);

// A group of attn_fwd problems (attn_fwd_group): problem i has query rows q[i], output out[i]
// and lse[i] (an empty tensor: none), and the next num_segments[i] key segments and entries of
// row_begin / diag. Segment s is k[s] / v[s], or with spans (3 ints per segment: source, first
// row, rows) rows [first, first + rows) of k[source] / v[source]. ready (int32, q's device)
// holds flags; wait_for[i] is the flag problem i waits for (-1: none; an empty list: no problem
// waits).
// An FP8 key segment: rows [first, first + rows) of the source k ([B, L, Hkv, D] e4m3), vt
// ([B, Hkv, D, L_pad] e4m3) with its block scales k_scale / v_scale ([B, ceil(L / kFp8Block),
// Hkv] fp32); row_begin / diag clamped as AttnFwdDims's.
struct Fp8Segment {
  Tensor k, vt, k_scale, v_scale;
  int64_t first, rows, row_begin, diag;
};
struct AttnFwdProblemArgs {
  std::vector<Tensor> k, v;
  std::vector<int64_t> row_begin, diag;
  std::optional<Tensor> lse;
  int64_t wait_for = -1;
  std::optional<Tensor> q_scale;  // FP8 (docs/kernels/attn_fp8.md): q's per-row scales
  std::vector<Fp8Segment> fp8;    //   and the key segments (k, v, row_begin, diag unused)
};
// The overlap arguments of attn_fwd_group, as registration.cpp states them.
struct AttnFwdGroupOverlap {
  std::optional<Tensor> ready;
  IntArrayRef wait_for;
  std::optional<Tensor> sched, done;
  bool finish;
  int64_t sm_budget, spin_us;
  double timeout_s;
};
// The FP8 operands of attn_fwd_group (all None or empty: not FP8).
struct AttnFwdFp8Scales {
  std::vector<Tensor> q_scale, k_scale, v_scale;
  AttnFwdFp8Scales(const OptTensorList& q, const OptTensorList& k, const OptTensorList& v)
      : q_scale(q.value_or(std::vector<Tensor>{})),
        k_scale(k.value_or(std::vector<Tensor>{})),
        v_scale(v.value_or(std::vector<Tensor>{})) {}
  bool on() const { return !q_scale.empty() || !k_scale.empty() || !v_scale.empty(); }
};
std::vector<AttnFwdProblemArgs> check_attn_fwd_group(
    const std::vector<Tensor>& q, IntArrayRef num_segments,
    const std::vector<Tensor>& k, const std::vector<Tensor>& v,
    IntArrayRef row_begin, IntArrayRef diag, std::optional<double> softmax_scale,
    const std::vector<Tensor>& out, const std::vector<Tensor>& lse,
    const AttnFwdGroupOverlap& ov, IntArrayRef spans, const AttnFwdFp8Scales& fp8);

// The FP8 problems of attn_fwd_group (checks_fp8.cpp): problem i's fp8 segments and q_scale;
// total = sum(num_segments), already checked.
std::vector<AttnFwdProblemArgs> check_fp8_group(
    const std::vector<Tensor>& q, IntArrayRef num_segments, const std::vector<Tensor>& k,
    const std::vector<Tensor>& v, IntArrayRef row_begin, IntArrayRef diag,
    std::optional<double> softmax_scale, const std::vector<Tensor>& out,
    const std::vector<Tensor>& lse, IntArrayRef spans, const AttnFwdFp8Scales& fp8,
    int64_t total);

// flag: a contiguous int32 tensor with at least one element.
void check_flag(const char* op, const Tensor& flag);

// Problem sizes of select_passing after validation.
struct SelectPassingDims {
  int64_t batch, q_len, heads_q, heads_kv, head_dim, kv_len, num_chunks, capacity;
};
SelectPassingDims check_select_passing(const Tensor& q, const Tensor& k,
                                       const Tensor& v, IntArrayRef chunk_starts,
                                       IntArrayRef chunk_lens, int64_t passing_len,
                                       int64_t pool_kernel, const Tensor& indices,
                                       const Tensor& kv);

// Validates merge_states; returns the number of parts.
int64_t check_merge_states(const Tensor& outs, const Tensor& lses, const Tensor& out,
                           const std::optional<Tensor>& lse);

// Problem sizes of quantize_fp8 after validation: blocks of `block` rows, num_blocks =
// ceil(len / block); len_pad = ceil(len / 16) * 16 (the transposed values' row length).
struct QuantizeFp8Dims {
  int64_t batch, len, heads, head_dim, block, num_blocks, len_pad;
};
QuantizeFp8Dims check_quantize_fp8(const Tensor& x, int64_t block, bool rotate, bool transpose,
                                   const Tensor& values, const Tensor& scales);

}  // namespace spava
