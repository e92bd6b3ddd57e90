// Kernel parameters of the TMA attn_fwd: the plain params plus one tensor map per operand.
#pragma once

#include <cuda.h>

#include "spava/params.h"

namespace spava {

struct AttnFwdTmaParams {
  AttnFwdParams p;  // shapes, problems, segment lengths and visibility
  CUtensorMap q[kMaxAttnProblems];  // per problem [b, q_len, h_q, d], boxes (box_cols x kBlockM)
  CUtensorMap k[kMaxKvSegments];  // per segment [b, len, h_kv, d], boxes of (box_cols x kBlockN)
  CUtensorMap v[kMaxKvSegments];
};

}  // namespace spava
