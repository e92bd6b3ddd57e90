// spava::build_info(): what this binary was compiled with (read by tests to skip cleanly).
#include <string>

#include "ops.h"
#include "spava/attn_params.h"

#ifdef SPAVA_WITH_CUDA
#include "attn_fwd/attn_fwd.h"
#endif

#ifndef SPAVA_CUDA_ARCHS
#define SPAVA_CUDA_ARCHS ""
#endif

namespace spava {

std::string build_info() {
  // int32 elements of attn_fwd_group's sched workspace (spava_ext.ops.SCHED_INTS) and the most
  // problems of one launch (spava_ext.ops.MAX_PROBLEMS); the FP8 path's scale block
  // (spava_ext.ops.FP8_BLOCK)
  const std::string sched = ", \"attn_sched_ints\": " + std::to_string(kAttnSchedInts) +
                            ", \"attn_max_problems\": " + std::to_string(kMaxAttnProblems) +
                            ", \"fp8_block\": " + std::to_string(kFp8Block) + "}";
#ifdef SPAVA_WITH_CUDA
#ifdef SPAVA_ATTN_TRACE
  const char* kTrace = "true";  // common/trace.cuh compiled in
#else
  const char* kTrace = "false";
#endif
  std::string dims;
  for (int i = 0; i < kNumAttnFwdHeadDims; ++i)
    dims += (i ? ", " : "") + std::to_string(kAttnFwdHeadDims[i]);
  return std::string("{\"cuda\": true, \"cuda_archs\": \"") + SPAVA_CUDA_ARCHS +
         "\", \"cuda_ops\": [\"select_passing\", \"attn_fwd\", \"merge_states\", "
         "\"quantize_fp8\"], "
         "\"attn_fwd_head_dims\": [" + dims + "], \"attn_fwd_trace\": " + kTrace + sched;
#else
  return "{\"cuda\": false, \"cuda_archs\": \"\", \"cuda_ops\": [], \"attn_fwd_head_dims\": [], "
         "\"attn_fwd_trace\": false" + sched;
#endif
}

}  // namespace spava
