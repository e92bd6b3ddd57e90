// Plain-old-data parameter structs: the whole interface between the torch glue and the kernels.
// Strides are in elements; the innermost (head_dim) dimension is always contiguous.
#pragma once

#include <cstdint>

#include "spava/dtype.h"

namespace spava {

// LSE merge of n partial attention states into one (see lse.h for the math).
struct MergeStatesParams {
  const void* outs;  // [n, b, rows, h, d] normalised partial outputs, dtype in_dtype
  int64_t outs_part_stride, outs_batch_stride, outs_row_stride, outs_head_stride;
  const float* lses;  // [n, b, h, rows] natural-log LSE of each partial, fp32
  int64_t lses_part_stride, lses_batch_stride, lses_head_stride, lses_row_stride;
  void* out;  // [b, rows, h, d] merged output, dtype out_dtype (may alias nothing above)
  int64_t out_batch_stride, out_row_stride, out_head_stride;
  float* lse;  // [b, h, rows] merged LSE, fp32; may be nullptr
  int64_t lse_batch_stride, lse_head_stride, lse_row_stride;
  int num_parts, batch, rows, heads, head_dim;
  DType in_dtype, out_dtype;
};

// ------------------------------------------------------------------------------------- attn_fwd
// Key j of a segment is visible to query row i iff  i >= row_begin && j <= i + diag  (j < len).
// The glue clamps diag to [-2^30, 2^30], which keeps every comparison in int.
constexpr int kMaxKvSegments = 64;

struct KvSegment {
  const void* k;  // element (b=0, j=0, h=0) of the segment's keys   [b, len, h_kv, d]
  const void* v;  // same for values
  int64_t k_batch_stride, k_row_stride, k_head_stride;
  int64_t v_batch_stride, v_row_stride, v_head_stride;
  int len;        // keys in the segment (>= 1; empty segments are dropped by the glue)
  int row_begin;  // query rows below this see none of the segment
  int diag;       // causal offset (>= len - 1 with row_begin <= 0: fully visible)
};

struct AttnFwdParams {
  const void* q;  // [b, q_len, h_q, d]
  int64_t q_batch_stride, q_row_stride, q_head_stride;
  void* out;  // [b, q_len, h_q, d], dtype (or fp32 when out_fp32)
  int64_t out_batch_stride, out_row_stride, out_head_stride;
  float* lse;  // [b, h_q, q_len] natural-log LSE, fp32; may be nullptr
  int64_t lse_batch_stride, lse_head_stride, lse_row_stride;
  int batch, q_len, heads_q, heads_kv, head_dim;
  float softmax_scale;       // applied to q.k
  float softmax_scale_log2;  // softmax_scale * log2(e), for exp2
  DType dtype;               // of q, k, v (bf16 or fp16)
  bool out_fp32;
  // Split-KV: when num_splits > 1 each query tile's key tiles are cut into num_splits ranges
  // processed by separate CTAs; partial states go to split_out [num_splits, b, q_len, h_q, d]
  // and split_lse [num_splits, b, h_q, q_len] (fp32, caller-allocated) and are LSE-merged.
  int num_splits;
  float* split_out;
  float* split_lse;
  int num_segments;
  KvSegment segments[kMaxKvSegments];
};

// ------------------------------------------------------------------------------- select_passing
constexpr int kMaxSelectChunks = 16;

struct SelectPassingParams {
  const void* q;  // [b, q_len, h_q, d] question rows
  int64_t q_batch_stride, q_row_stride, q_head_stride;
  const void* k;  // [b, kv_len, h_kv, d]
  const void* v;
  int64_t k_batch_stride, k_row_stride, k_head_stride;
  int64_t v_batch_stride, v_row_stride, v_head_stride;
  float* qsum;    // workspace [b, h_kv, d]: sum over question rows and group heads of q
  float* scores;  // workspace [chunks, b, h_kv, score_stride]: raw scores k . qsum
  int64_t score_stride;  // >= every chunk_len
  int64_t* indices;      // [chunks, b, h_kv, capacity] kept positions along k's rows, -1 padded
  void* kv;              // [chunks, capacity, 2, b, h_kv, d] packed K/V rows, zero padded
  int batch, q_len, heads_q, heads_kv, head_dim;
  int num_chunks, capacity, passing_len, pool_kernel;
  int chunk_start[kMaxSelectChunks];
  int chunk_len[kMaxSelectChunks];
  int gather_splits;  // CTAs per (chunk, b, h) in the select+gather kernel
  int smem_scores;    // smoothed scores cached in shared memory when chunk_len <= this
  DType dtype;
};

}  // namespace spava
