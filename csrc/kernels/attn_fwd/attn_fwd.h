// attn_fwd: segment-masked flash attention with natural-log LSE over a group of problems
// (see attn_params.h for the rule).
#pragma once

#include <cuda_runtime_api.h>

#include "spava/params.h"

namespace spava {

// One instantiation per (element type, head dim): instantiations/attn_fwd_hdim*_sm90.cu.
template <typename T, int kHeadDim>
void run_attn_fwd_sm90_(const AttnFwdParams& params, cudaStream_t stream, const char* trace_file);

// Dispatches on params.dtype and params.head_dim. Throws std::invalid_argument for a head dim
// that was not compiled and std::runtime_error on a launch failure. trace_file (trace builds,
// common/trace.cuh; nullptr or "": none): the launch waits for its kernel and writes the
// kernel's trace there.
void run_attn_fwd(const AttnFwdParams& params, cudaStream_t stream,
                  const char* trace_file = nullptr);

// The schedule of a launch (attn_fwd_plan.cu): the caller's args -> the kernel's params.
// Whether the grid runs as CTA pairs (heads_q even, head_dim % 64 == 0, max_pairs > 0,
// sm_budget != 1), per problem its query tiles, split-KV (every query tile when the launch has
// fewer units than SMs; the last query tiles when a launch of several rounds would leave a
// tail; never with a sched workspace or done flags) and first unit; the total unit count; the
// grid; whether the plan wants the atomic-counter picker (wants_sched: the caller then passes a
// zeroed workspace). The caller allocates the split workspaces. max_pairs: attn_fwd_max_pairs()
// on the launch's device.
AttnFwdParams plan_attn_fwd(const AttnFwdArgs& args, int num_sms, int max_pairs);

// CTAs of the persistent grid for `units` units on `slots` CTA slots (SMs, or twice the pairs
// that fit): one per slot, fewer when sm_budget (> 0) leaves SMs to other kernels; even with
// pairs. The plan models and the launch uses this one count.
inline int attn_fwd_grid_ctas(int units, int slots, int sm_budget, bool pairs) {
  int ctas = units < slots ? units : slots;
  ctas = sm_budget > 0 && sm_budget < ctas ? sm_budget : ctas;
  return pairs ? ctas / 2 * 2 : ctas;
}

// Clusters of 2 attn_fwd CTAs that fit on the current device at once (0: no CTA pairs), for a
// launch of like's dtype and head dim: loads that kernel first (once per device), which
// records it. All kernels run one CTA per SM, so it is the same for each of them.
int attn_fwd_max_pairs(const AttnFwdCommonArgs& like);
void set_attn_fwd_max_pairs(int device, int pairs);  // by the launchers

// Loads every compiled attn_fwd kernel on the current device and sets its shared memory limit
// (once per device; later calls return at once). Call it before a stream is made to wait on a
// flag that an attn_fwd launch will raise: under CUDA's lazy module loading that launch would
// otherwise load its kernel first, which may wait for the whole context, including the blocked
// stream (a deadlock: with W = 2 over NCCL, both ranks hung in the launch).
void prepare_attn_fwd();

// Head dims compiled into this build, ascending, and their count.
extern const int kAttnFwdHeadDims[];
extern const int kNumAttnFwdHeadDims;

}  // namespace spava
