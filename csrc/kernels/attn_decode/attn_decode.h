// attn_decode: attn_fwd for short query rows (decode), split over the keys
// (docs/kernels/attn_decode.md). Same arguments and results as attn_fwd (attn_params.h).
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>

#include "spava/attn_params.h"

namespace spava {

// The schedule of one launch (plan_attn_decode). Key tiles (decode::kBlockN keys) are counted
// per segment, over the keys some row may see, and numbered segment after segment; split s of
// a (batch, kv head) takes tiles [s * num_tiles / num_splits, (s + 1) * num_tiles / num_splits).
struct AttnDecodePlan {
  int group;       // heads_q / heads_kv
  int rows;        // q_len * group: query rows of one CTA (row r: query row r / group, head
                   // kv_head * group + r % group)
  int num_splits;  // CTAs per (batch, kv head)
  int num_tiles;   // key tiles of all segments
  int tile_end[kMaxKvSegments];  // per segment of the problem: tiles up to and including it
  int seg_keys[kMaxKvSegments];  // its first seg_keys keys are the ones some row may see
  size_t workspace_floats;       // fp32 split partials the caller allocates (0: one split)
};

// The kernels' parameters: the caller's arguments, the plan and the workspace.
struct AttnDecodeParams {
  AttnFwdArgs args;
  AttnDecodePlan plan;
  // num_splits > 1: per output row item = (b * q_len + t) * heads_q + h, each split's normalised
  // output split_out [items, num_splits, head_dim] and natural-log lse split_lse
  // [items, num_splits] (fp32, in the caller's workspace); merged by the second launch.
  float* split_out;
  float* split_lse;
};

// Whether attn_decode runs this launch: one problem of at most decode::kMaxRows rows per kv
// head (q_len * heads_q / heads_kv), no ready or done flag, no sched workspace, no finishing
// launch, no SM budget.
bool attn_decode_applies(const AttnFwdArgs& args);

// The splits: about decode::kCtasPerSm CTAs per SM over (batch, kv head, split), at least
// decode::kMinTilesPerSplit tiles per split. args must satisfy attn_decode_applies.
AttnDecodePlan plan_attn_decode(const AttnFwdArgs& args, int num_sms);

// Launches the kernel (and, with several splits, the merge) on `stream`. workspace: fp32
// [plan.workspace_floats] (may be nullptr when that is 0). No synchronisation and no
// allocation: capturable into a CUDA graph. Throws std::invalid_argument for a dtype or head
// dim not compiled, std::runtime_error on a launch failure.
void run_attn_decode(const AttnFwdArgs& args, const AttnDecodePlan& plan, float* workspace,
                     cudaStream_t stream);

// One instantiation per (element type, head dim): instantiations/attn_decode_hdim*.cu.
template <typename T, int kHeadDim>
void run_attn_decode_(const AttnDecodeParams& params, cudaStream_t stream);

}  // namespace spava
