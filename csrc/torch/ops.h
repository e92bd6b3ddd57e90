// Implementations of the spava ops, one per (op, device). Schemas live in registration.cpp.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>
#include <vector>

namespace spava {

// ---- any device: attn_fwd with ATen ops (registered as the CPU op; on CUDA the fallback for
// GPUs without the sm_90a kernels)
void attn_fwd_aten(const at::Tensor& q, const std::vector<at::Tensor>& k,
                   const std::vector<at::Tensor>& v, at::IntArrayRef row_begin,
                   at::IntArrayRef diag, std::optional<double> softmax_scale,
                   const at::Tensor& out, const std::optional<at::Tensor>& lse);

// ---- CPU (always built)
void attn_fwd_group_cpu(const std::vector<at::Tensor>& q, at::IntArrayRef num_segments,
                        const std::vector<at::Tensor>& k, const std::vector<at::Tensor>& v,
                        at::IntArrayRef row_begin, at::IntArrayRef diag,
                        std::optional<double> softmax_scale, const std::vector<at::Tensor>& out,
                        const std::vector<at::Tensor>& lse, const std::optional<at::Tensor>& ready,
                        at::IntArrayRef wait_for, const std::optional<at::Tensor>& sched,
                        const std::optional<at::Tensor>& done, bool finish, int64_t sm_budget,
                        int64_t spin_us, double timeout_s);
void wait_flag_cpu(const at::Tensor& flag);
void set_flag_cpu(const at::Tensor& flag);
void select_passing_cpu(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                        at::IntArrayRef chunk_starts, at::IntArrayRef chunk_lens,
                        int64_t passing_len, int64_t pool_kernel, const at::Tensor& indices,
                        const at::Tensor& kv);
void merge_states_cpu(const at::Tensor& outs, const at::Tensor& lses, const at::Tensor& out,
                      const std::optional<at::Tensor>& lse);

// ---- CUDA (built when SPAVA_WITH_CUDA)
#ifdef SPAVA_WITH_CUDA
void attn_fwd_cuda(const at::Tensor& q, const std::vector<at::Tensor>& k,
                   const std::vector<at::Tensor>& v, at::IntArrayRef row_begin,
                   at::IntArrayRef diag, std::optional<double> softmax_scale, const at::Tensor& out,
                   const std::optional<at::Tensor>& lse);
void attn_fwd_group_cuda(const std::vector<at::Tensor>& q, at::IntArrayRef num_segments,
                        const std::vector<at::Tensor>& k, const std::vector<at::Tensor>& v,
                        at::IntArrayRef row_begin, at::IntArrayRef diag,
                        std::optional<double> softmax_scale, const std::vector<at::Tensor>& out,
                        const std::vector<at::Tensor>& lse, const std::optional<at::Tensor>& ready,
                        at::IntArrayRef wait_for, const std::optional<at::Tensor>& sched,
                        const std::optional<at::Tensor>& done, bool finish, int64_t sm_budget,
                        int64_t spin_us, double timeout_s);
void wait_flag_cuda(const at::Tensor& flag);
void set_flag_cuda(const at::Tensor& flag);
void select_passing_cuda(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                         at::IntArrayRef chunk_starts, at::IntArrayRef chunk_lens,
                         int64_t passing_len, int64_t pool_kernel, const at::Tensor& indices,
                         const at::Tensor& kv);
void merge_states_cuda(const at::Tensor& outs, const at::Tensor& lses, const at::Tensor& out,
                       const std::optional<at::Tensor>& lse);
#endif

// A one-line description of the build: CUDA on/off, archs, head dims compiled, the size of
// attn_fwd_group's sched workspace.
std::string build_info();

// ---- which attn_fwd implementation serves a device (attn_backend.cpp): whether `device` runs
// the sm_90a kernels, and the switch that sends every GPU to the ATen path instead.
bool uses_sm90(at::Device device);
void set_attn_fallback(bool on);

}  // namespace spava
