// CUDA glue of spava::attn_fwd and spava::attn_fwd_group: checks -> AttnFwdArgs (one problem
// per set of query rows, the caller's overlap options) -> plan_attn_fwd -> AttnFwdParams (units,
// split-KV workspaces) -> run_attn_fwd on the current stream. attn_fwd is a group of one
// problem; when its rows are short (attn_decode_applies: decode) and the switch is on
// (set_attn_decode) it runs attn_decode instead.
// GPUs without the sm_90a kernels (uses_sm90) take the ATen path (attn_fwd_aten) on the same
// stream, flags and done flags included.
#include <algorithm>
#include <cmath>
#include <vector>

#include "attn_decode/attn_decode.h"
#include "attn_fwd/attn_fwd.h"
#include "common/stream_ops.h"
#include "checks.h"
#include "cuda_checks.h"
#include "cuda_context.h"
#include "cuda_params.h"
#include "dtype_map.h"
#include "ops.h"
#include "trace.h"

namespace spava {
namespace {

constexpr int64_t kDiagClamp = int64_t(1) << 30;

// done[2 * i + 1] := 1 in stream order: problem i's rows are written.
void raise_done(const Tensor& done, size_t i) {
  torch::stable::fill_(torch::stable::select(done, 0, int64_t(2 * i + 1)), 1.0);
}

// attn_fwd_group on the ATen path, in stream order: wait for the problem's flag (no host
// synchronisation), compute it, raise its done flag. Everything runs in the first call, so a
// finishing call has nothing left.
void attn_fwd_group_aten(const std::vector<Tensor>& q, const std::vector<AttnFwdProblemArgs>& args,
                         std::optional<double> softmax_scale, const std::vector<Tensor>& out,
                         const AttnFwdGroupOverlap& ov) {
  if (ov.finish) return;
  const cudaStream_t stream = current_stream(q[0].get_device_index());
  for (size_t i = 0; i < args.size(); ++i) {
    const AttnFwdProblemArgs& a = args[i];
    if (a.wait_for >= 0) stream_wait_flag(ov.ready->const_data_ptr<int>() + a.wait_for, stream);
    attn_fwd_aten(q[i], a.k, a.v, a.row_begin, a.diag, softmax_scale, out[i], a.lse);
    if (ov.done) raise_done(*ov.done, i);
  }
}

// Appends problem (q, its segments, out, lse) to p. Problems without rows and empty segments
// are dropped. `op` names the calling op in errors.
void add_problem(const char* op, AttnFwdArgs& p, const Tensor& q, const std::vector<Tensor>& k,
                 const std::vector<Tensor>& v, IntArrayRef row_begin, IntArrayRef diag,
                 const Tensor& out, const std::optional<Tensor>& lse, const int* ready) {
  if (q.size(1) == 0) return;  // nothing to write
  SPAVA_CHECK_VALUE(p.num_problems < kMaxAttnProblems, op, "more than ", kMaxAttnProblems,
                    " problems in one launch");
  SPAVA_CHECK_VALUE(q.size(1) < kDiagClamp, op, "q_len ", q.size(1), " out of range");
  check_rows_aligned(op, "q", q);
  check_rows_aligned(op, "out", out);
  AttnProblemArgs& pr = p.problems[p.num_problems++];
  pr.q = q.const_data_ptr();
  pr.q_batch_stride = q.stride(0);
  pr.q_row_stride = q.stride(1);
  pr.q_head_stride = q.stride(2);
  set_out_and_lse(pr, out, lse);
  pr.q_len = int(q.size(1));
  pr.out_fp32 = out.scalar_type() == ScalarType::Float;
  pr.ready = ready;
  pr.seg_begin = p.num_segments;
  for (size_t s = 0; s < k.size(); ++s) {
    const int64_t len = k[s].size(1);
    if (len == 0) continue;  // empty segments contribute nothing
    SPAVA_CHECK_VALUE(p.num_segments < kMaxKvSegments, op, "more than ", kMaxKvSegments,
                      " non-empty key segments in one launch");
    SPAVA_CHECK_VALUE(len < kDiagClamp, op, "segment ", s, " has ", len,
                      " keys, more than the kernels take");
    check_rows_aligned(op, "k", k[s]);
    check_rows_aligned(op, "v", v[s]);
    KvSegment& seg = p.segments[p.num_segments++];
    seg.k = k[s].const_data_ptr();
    seg.v = v[s].const_data_ptr();
    seg.k_batch_stride = k[s].stride(0);
    seg.k_row_stride = k[s].stride(1);
    seg.k_head_stride = k[s].stride(2);
    seg.v_batch_stride = v[s].stride(0);
    seg.v_row_stride = v[s].stride(1);
    seg.v_head_stride = v[s].stride(2);
    seg.len = int(len);
    // Saturating: q_len, len < kDiagClamp, so the clamped values mean the same visibility.
    seg.row_begin = int(std::clamp<int64_t>(row_begin[s], -kDiagClamp, kDiagClamp));
    seg.diag = int(std::clamp<int64_t>(diag[s], -kDiagClamp, kDiagClamp));
  }
  pr.num_segments = p.num_segments - pr.seg_begin;
}

// Shapes shared by every problem (q0 is problem 0's rows), then the dtype / head dim checks;
// `op` names the calling op in errors.
AttnFwdArgs group_args(const char* op, const Tensor& q0, int64_t heads_kv,
                       double softmax_scale) {
  check_sm90(op, q0);
  const ScalarType dtype = q0.scalar_type();
  SPAVA_CHECK_TYPE(dtype == ScalarType::BFloat16 || dtype == ScalarType::Half, op,
                   "CUDA kernels take bf16 or fp16 q/k/v, got ", dtype);
  const int64_t D = q0.size(3);
  bool compiled = false;
  for (int i = 0; i < kNumAttnFwdHeadDims; ++i) compiled |= kAttnFwdHeadDims[i] == D;
  SPAVA_CHECK_VALUE(compiled, op, "head dim ", D,
                    " is not compiled in this build (see spava_ext.ops.build_info())");
  AttnFwdArgs a{};
  a.batch = int(q0.size(0));
  a.heads_q = int(q0.size(2));
  a.heads_kv = int(heads_kv);
  a.head_dim = int(D);
  a.softmax_scale = float(softmax_scale);
  a.softmax_scale_log2 = float(softmax_scale * 1.4426950408889634);  // log2(e)
  a.dtype = to_dtype(dtype);
  return a;
}

int device_sms(int32_t device) {
  int num_sms = 0;
  cudaDeviceGetAttribute(&num_sms, cudaDevAttrMultiProcessorCount, device);
  return num_sms;
}

// The decode kernel (attn_decode_applies(args)): plan the splits, allocate their fp32
// workspace (caching allocator), launch.
void plan_and_run_decode(const AttnFwdArgs& args, const Tensor& q0) {
  const int32_t device = q0.get_device_index();
  const AttnDecodePlan plan = plan_attn_decode(args, device_sms(device));
  std::optional<Tensor> workspace;
  if (plan.workspace_floats > 0) {
    workspace = torch::stable::empty({int64_t(plan.workspace_floats)}, ScalarType::Float,
                                     std::nullopt, q0.device());
  }
  run_attn_decode(args, plan, workspace ? workspace->mutable_data_ptr<float>() : nullptr,
                  current_stream(device));
}

// Plan the units, allocate the split-KV workspaces (fp32, caching allocator), launch.
void plan_and_run(const AttnFwdArgs& args, const Tensor& q0) {
  const int32_t device = q0.get_device_index();
  AttnFwdParams p = plan_attn_fwd(args, device_sms(device), attn_fwd_max_pairs(args));
  std::vector<Tensor> workspaces;
  const auto f32 = [&](IntArrayRef sizes) {
    return torch::stable::empty(sizes, ScalarType::Float, std::nullopt, q0.device());
  };
  for (int i = 0; i < p.num_problems; ++i) {
    AttnProblem& pr = p.problems[i];
    if (pr.num_splits <= 1) continue;
    const int64_t rows = pr.split_len;
    workspaces.push_back(f32({pr.num_splits, p.batch, rows, p.heads_q, p.head_dim}));
    pr.split_out = workspaces.back().mutable_data_ptr<float>();
    workspaces.push_back(f32({pr.num_splits, p.batch, p.heads_q, rows}));
    pr.split_lse = workspaces.back().mutable_data_ptr<float>();
  }
  if (p.wants_sched) {  // the plan hands units out through the counter (scheduler.cuh)
    workspaces.push_back(
        torch::stable::full({kAttnSchedInts}, 0.0, ScalarType::Int, std::nullopt, q0.device()));
    p.sched = workspaces.back().mutable_data_ptr<int>();
  }
  const std::string trace = trace_file();  // "": no trace (trace builds only)
  run_attn_fwd(p, current_stream(device), trace.c_str());
}

// The overlap options of attn_fwd_group in args: the grid's SM budget, the give-back
// workspace, and how long a CTA waits for a ready flag (ov, checked by check_attn_fwd_group).
void set_overlap(AttnFwdArgs& a, const AttnFwdGroupOverlap& ov) {
  a.sm_budget = int(std::min<int64_t>(ov.sm_budget, 1 << 20));
  a.sched = ov.sched.has_value() ? ov.sched->mutable_data_ptr<int>() : nullptr;
  a.finish = ov.finish;
  a.wait_timeout_ns = int64_t(ov.timeout_s * 1e9);
  a.wait_spin_ns = ov.spin_us * 1000;
}

}  // namespace

void attn_fwd_cuda(const Tensor& q, const std::vector<Tensor>& k, const std::vector<Tensor>& v,
                   const IntList& row_begin, const IntList& diag,
                   std::optional<double> softmax_scale, const Tensor& out,
                   const std::optional<Tensor>& lse) {
  const AttnFwdDims d = check_attn_fwd(q, k, v, row_begin, diag, softmax_scale, out, lse);
  const DeviceGuard guard(q.get_device_index());
  if (!uses_sm90(q.device())) {
    return attn_fwd_aten(q, k, v, row_begin, diag, softmax_scale, out, lse);
  }
  AttnFwdArgs a = group_args("attn_fwd", q, d.heads_kv, d.softmax_scale);
  add_problem("attn_fwd", a, q, k, v, row_begin, diag, out, lse, nullptr);
  if (attn_decode_enabled() && attn_decode_applies(a)) return plan_and_run_decode(a, q);
  plan_and_run(a, q);
}

void attn_fwd_group_cuda(const std::vector<Tensor>& q, const IntList& num_segments,
                         const std::vector<Tensor>& k, const std::vector<Tensor>& v,
                         const IntList& row_begin, const IntList& diag,
                         std::optional<double> softmax_scale, const std::vector<Tensor>& out,
                         const std::vector<Tensor>& lse, const std::optional<Tensor>& ready,
                         const IntList& wait_for, const std::optional<Tensor>& sched,
                         const std::optional<Tensor>& done, bool finish, int64_t sm_budget,
                         int64_t spin_us, double timeout_s, const IntList& spans,
                         const OptTensorList& q_scale, const OptTensorList& k_scale,
                         const OptTensorList& v_scale) {
  const AttnFwdGroupOverlap ov{ready, wait_for, sched, done, finish, sm_budget, spin_us, timeout_s};
  const AttnFwdFp8Scales fp8{q_scale, k_scale, v_scale};
  const auto args = check_attn_fwd_group(q, num_segments, k, v, row_begin, diag, softmax_scale,
                                         out, lse, ov, spans, fp8);
  SPAVA_CHECK_NOT_IMPLEMENTED(!fp8.on(), "attn_fwd_group",
                              "FP8 operands on CUDA: the FP8 kernel is not written yet "
                              "(docs/kernels/attn_fp8.md); run FP8 on the CPU or use bf16");
  const DeviceGuard guard(q[0].get_device_index());
  if (!uses_sm90(q[0].device())) {
    return attn_fwd_group_aten(q, args, softmax_scale, out, ov);
  }
  int64_t heads_kv = q[0].size(2);  // any divisor works when no problem has keys
  for (const auto& a : args) {
    if (!a.k.empty()) heads_kv = a.k[0].size(2);
  }
  const double scale = resolve_softmax_scale(softmax_scale, q[0].size(3));
  AttnFwdArgs ga = group_args("attn_fwd_group", q[0], heads_kv, scale);
  for (size_t i = 0; i < args.size(); ++i) {
    const AttnFwdProblemArgs& a = args[i];
    const int* flag = a.wait_for < 0 ? nullptr : ready->const_data_ptr<int>() + a.wait_for;
    int* done_i = done ? done->mutable_data_ptr<int>() + 2 * i : nullptr;
    if (q[i].size(1) == 0) {  // no rows, no units: done already (the finishing call too)
      if (done_i != nullptr) raise_done(*done, i);
      continue;
    }
    add_problem("attn_fwd_group", ga, q[i], a.k, a.v, a.row_begin, a.diag, out[i], a.lse, flag);
    ga.problems[ga.num_problems - 1].done = done_i;
  }
  set_overlap(ga, ov);
  plan_and_run(ga, q[0]);
}

void wait_flag_cuda(const Tensor& flag) {
  check_flag("wait_flag", flag);
  const int32_t device = flag.get_device_index();
  const DeviceGuard guard(device);
  // The flag is usually raised by an attn_fwd launch queued after this wait: load those
  // kernels now, since loading one later may wait for this blocked stream (attn_fwd.h).
  if (uses_sm90(flag.device())) prepare_attn_fwd();
  stream_wait_flag(flag.const_data_ptr<int>(), current_stream(device));
}

void set_flag_cuda(const Tensor& flag) {
  check_flag("set_flag", flag);
  const int32_t device = flag.get_device_index();
  const DeviceGuard guard(device);
  stream_set_flag(flag.mutable_data_ptr<int>(), current_stream(device));
}

}  // namespace spava
