// Plain-old-data parameter structs: the whole interface between the torch glue and the kernels.
// Strides are in elements; the innermost (head_dim) dimension is always contiguous.
#pragma once

#include <cstdint>

#include "spava/attn_params.h"
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

// ------------------------------------------------------------------------------- select_passing
constexpr int kMaxSelectChunks = 16;

// Three kernels (kernels/select_passing): (1) qsum partials, (2) scores -> smoothed keys and the
// histogram of their top digit, (3) select + gather: each CTA repeats its item's radix select,
// places the kept positions of its send-buffer rows and copies those K/V rows. An "item" is one
// (chunk c, batch b, kv head h), numbered (c * b + bi) * h_kv + h. kMaxQsumSplits and
// kRadixBins are in select_passing/select_passing.h.
struct SelectPassingParams {
  const void* q;  // [b, q_len, h_q, d] question rows
  int64_t q_batch_stride, q_row_stride, q_head_stride;
  const void* k;  // [b, kv_len, h_kv, d]
  const void* v;
  int64_t k_batch_stride, k_row_stride, k_head_stride;
  int64_t v_batch_stride, v_row_stride, v_head_stride;
  // Workspaces (fp32 / int32, caller-allocated, each 16-byte aligned, no initial contents
  // needed; nullptr when no chunk selects, i.e. passing_len >= every chunk_len):
  float* qsum;     // [kMaxQsumSplits, b, h_kv, d]: partial sums of q over (t, g) question rows
  int* hist;       // [items, kRadixBins]: counts of the keys' top 11-bit digit (kernel 1 zeroes)
  uint32_t* keys;  // [items, key_stride]: order-preserving uint32 keys of the smoothed scores
  int64_t key_stride;  // >= every chunk_len, multiple of 4 (16-byte rows)
  int64_t* indices;    // [chunks, b, h_kv, capacity] kept positions along k's rows, -1 padded
  void* kv;            // [chunks, capacity, 2, b, h_kv, d] packed K/V rows, zero padded
  int batch, q_len, heads_q, heads_kv, head_dim;
  int num_chunks, capacity, passing_len, pool_kernel;
  int chunk_start[kMaxSelectChunks];
  int chunk_len[kMaxSelectChunks];
  int num_sms;  // SMs of the device: sizes the grids
  // Launch shape, filled by run_select_passing (select_passing_launch.cuh states the rules).
  int qsum_splits, qsum_rows;   // kernel 1: CTAs per (b, h_kv), (t, g) rows summed by each
  int score_rows, score_tiles;  // kernel 2: chunk rows scored per CTA, CTAs per item
  int gather_rows, gather_tiles;  // kernel 3: send-buffer rows per CTA, CTAs per item
  int smem_keys;  // kernel 3: keys it caches in shared memory (chunks up to this long), % 16 == 0
  DType dtype;
};

}  // namespace spava
