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
  // per problem [b, q_len, h_q, d] of out, boxes (box_cols x 64 rows), for the TMA-store
  // epilogue; valid where bit i of o_tma_mask is set (16-bit out, 16-byte aligned strides)
  CUtensorMap o[kMaxAttnProblems];
  unsigned o_tma_mask;
};

}  // namespace spava
