// Implementations of the spava ops, one per (op, device). Schemas live in registration.cpp.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "tensor.h"

namespace spava {

// ---- any device: attn_fwd with ATen ops (registered as the CPU op; on CUDA the fallback for
// GPUs without the sm_90a kernels)
void attn_fwd_aten(const Tensor& q, const std::vector<Tensor>& k,
                   const std::vector<Tensor>& v, const IntList& row_begin,
                   const IntList& diag, std::optional<double> softmax_scale,
                   const Tensor& out, const std::optional<Tensor>& lse);

// ---- CPU (always built)
struct AttnFwdProblemArgs;  // checks.h
// attn_fwd_group's FP8 problem `a` (checks.h: a.fp8, a.q_scale) on the CPU: out (bf16, fp16 or
// fp32) and a.lse (docs/kernels/attn_fp8.md).
void attn_fwd_fp8_cpu(const Tensor& q, const AttnFwdProblemArgs& a, double softmax_scale,
                      const Tensor& out);
void attn_fwd_group_cpu(const std::vector<Tensor>& q, const IntList& num_segments,
                        const std::vector<Tensor>& k, const std::vector<Tensor>& v,
                        const IntList& row_begin, const IntList& diag,
                        std::optional<double> softmax_scale, const std::vector<Tensor>& out,
                        const std::vector<Tensor>& lse, const std::optional<Tensor>& ready,
                        const IntList& wait_for, const std::optional<Tensor>& sched,
                        const std::optional<Tensor>& done, bool finish, int64_t sm_budget,
                        int64_t spin_us, double timeout_s,
                        const IntList& spans, const OptTensorList& q_scale,
                        const OptTensorList& k_scale, const OptTensorList& v_scale);
void wait_flag_cpu(const Tensor& flag);
void set_flag_cpu(const Tensor& flag);
void select_passing_cpu(const Tensor& q, const Tensor& k, const Tensor& v,
                        const IntList& chunk_starts, const IntList& chunk_lens,
                        int64_t passing_len, int64_t pool_kernel, const Tensor& indices,
                        const Tensor& kv);
void merge_states_cpu(const Tensor& outs, const Tensor& lses, const Tensor& out,
                      const std::optional<Tensor>& lse);
void quantize_fp8_cpu(const Tensor& x, int64_t block, bool rotate, bool transpose,
                      const Tensor& values, const Tensor& scales);

// ---- CUDA (built when SPAVA_WITH_CUDA)
#ifdef SPAVA_WITH_CUDA
void attn_fwd_cuda(const Tensor& q, const std::vector<Tensor>& k,
                   const std::vector<Tensor>& v, const IntList& row_begin,
                   const IntList& diag, std::optional<double> softmax_scale, const Tensor& out,
                   const std::optional<Tensor>& lse);
void attn_fwd_group_cuda(const std::vector<Tensor>& q, const IntList& num_segments,
                        const std::vector<Tensor>& k, const std::vector<Tensor>& v,
                        const IntList& row_begin, const IntList& diag,
                        std::optional<double> softmax_scale, const std::vector<Tensor>& out,
                        const std::vector<Tensor>& lse, const std::optional<Tensor>& ready,
                        const IntList& wait_for, const std::optional<Tensor>& sched,
                        const std::optional<Tensor>& done, bool finish, int64_t sm_budget,
                        int64_t spin_us, double timeout_s,
                        const IntList& spans, const OptTensorList& q_scale,
                        const OptTensorList& k_scale, const OptTensorList& v_scale);
void wait_flag_cuda(const Tensor& flag);
void set_flag_cuda(const Tensor& flag);
void select_passing_cuda(const Tensor& q, const Tensor& k, const Tensor& v,
                         const IntList& chunk_starts, const IntList& chunk_lens,
                         int64_t passing_len, int64_t pool_kernel, const Tensor& indices,
                         const Tensor& kv);
void merge_states_cuda(const Tensor& outs, const Tensor& lses, const Tensor& out,
                       const std::optional<Tensor>& lse);
void quantize_fp8_cuda(const Tensor& x, int64_t block, bool rotate, bool transpose,
                       const Tensor& values, const Tensor& scales);
#endif

// A one-line description of the build: CUDA on/off, archs, head dims compiled, the size of
// attn_fwd_group's sched workspace.
std::string build_info();

// ---- which attn_fwd implementation serves a device (attn_backend.cpp): whether `device` runs
// the sm_90a kernels, and the switch that sends every GPU to the ATen path instead; whether
// attn_fwd calls of few query rows take the split-KV decode kernel there, and its switch.
bool uses_sm90(Device device);
void set_attn_fallback(bool on);
void set_attn_decode(bool on);
bool attn_decode_enabled();

}  // namespace spava
