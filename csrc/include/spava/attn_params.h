// Parameters of attn_fwd: one launch computes a *group* of problems (sets of query rows, each
// with its own key segments), scheduled as units by a persistent kernel. Strides in elements;
// the innermost (head_dim) dimension is always contiguous.
//
// Two levels, as CUTLASS's Arguments -> Params: the caller describes a launch in AttnFwdArgs
// (shapes, problems, key segments, overlap options); plan_attn_fwd (attn_fwd.h) turns it into
// the AttnFwdParams the kernel reads, adding the schedule (units, split-KV, CTA pairs, grid).
#pragma once

#include <cstdint>

#include "spava/dtype.h"

namespace spava {

// Key j of a segment is visible to query row i iff  i >= row_begin && j <= i + diag  (j < len).
// The glue clamps diag to [-2^30, 2^30], which keeps every comparison in int.
constexpr int kMaxKvSegments = 64;  // over all problems of a launch
constexpr int kMaxAttnProblems = 4;
// FP8 attn_fwd: K and V scales per block of this many rows of a key source (one key tile).
constexpr int kFp8Block = 128;

struct KvSegment {
  const void* k;  // element (b=0, j=0, h=0) of the segment's keys   [b, len, h_kv, d]
  const void* v;  // same for values
  int64_t k_batch_stride, k_row_stride, k_head_stride;
  int64_t v_batch_stride, v_row_stride, v_head_stride;
  int len;        // keys in the segment (>= 1; empty segments are dropped by the glue)
  int row_begin;  // query rows below this see none of the segment
  int diag;       // causal offset (>= len - 1 with row_begin <= 0: fully visible)
};

// One problem as the caller gives it: query rows q, their output, and the key segments
// segments[seg_begin, seg_begin + num_segments) of the launch.
struct AttnProblemArgs {
  const void* q;  // [b, q_len, h_q, d]
  int64_t q_batch_stride, q_row_stride, q_head_stride;
  void* out;  // [b, q_len, h_q, d], dtype (or fp32 when out_fp32)
  int64_t out_batch_stride, out_row_stride, out_head_stride;
  float* lse;  // [b, h_q, q_len] natural-log LSE, fp32; may be nullptr
  int64_t lse_batch_stride, lse_head_stride, lse_row_stride;
  int q_len;
  bool out_fp32;
  int seg_begin, num_segments;
  // When not null, no key or value of this problem is read before *ready != 0 (a flag another
  // stream sets once the data has landed, e.g. after a gather). The kernel traps after
  // wait_timeout_ns instead of hanging.
  const int* ready;
  // When not null: done[0] counts this problem's finished units and the kernel sets done[1] = 1
  // (release, GPU scope) once every unit's output is written, so another stream can start on
  // the rows while the launch goes on (stream_wait_flag). Zeroed by the caller.
  int* done;
};

// One problem as the kernel runs it: the caller's description and its schedule.
struct AttnProblem : AttnProblemArgs {
  // Split-KV (plan_attn_fwd): the key tiles of each of the query tiles [0, split_m_blocks) (the
  // last ones in the unit order) are cut into num_splits ranges processed as separate units;
  // their partial states go to split_out [num_splits, b, split_len, h_q, d] and split_lse
  // [num_splits, b, h_q, split_len] (fp32, allocated by the caller after the plan; split_len =
  // the rows of those tiles) and are LSE-merged after the kernel. num_splits = 1: no split.
  int num_splits, split_m_blocks, split_len;
  float* split_out;
  float* split_lse;
  // Query tiles, the first unit of this problem, its units.
  int m_blocks, unit_begin, units;
};

// The launch-wide fields the caller sets, shared by AttnFwdArgs and AttnFwdParams.
struct AttnFwdCommonArgs {
  int batch, heads_q, heads_kv, head_dim;
  float softmax_scale;       // applied to q.k
  float softmax_scale_log2;  // softmax_scale * log2(e), for exp2
  DType dtype;               // of q, k, v (bf16 or fp16)
  int num_segments;
  KvSegment segments[kMaxKvSegments];
  // Overlap with communication. sm_budget: CTAs the persistent grid may use (0: one per SM),
  // leaving the other SMs to the kernels of other streams (e.g. the gathers that set the ready
  // flags). sched == nullptr: CTA c takes a fixed list of units (scheduler.cuh) and waits for a
  // ready flag as long as it takes (trapping after wait_timeout_ns). sched != nullptr (int32
  // workspace, kAttnSchedInts, zeroed before the first launch): units are handed out through an
  // atomic counter; a CTA that finds a unit's flag unset after wait_spin_ns gives the unit back
  // (a deferred list) and exits, and from then on no CTA claims a unit (the launch winds down),
  // so the launch never blocks the SMs that the kernels setting the flags may need, nor leaves
  // its rest to a few CTAs. A second launch with finish = true, queued after the data has
  // landed, runs the deferred units and any not handed out; it reads no flag.
  int sm_budget;
  int* sched;
  bool finish;
  int64_t wait_timeout_ns, wait_spin_ns;
};

// What the caller passes (CUTLASS's Arguments).
struct AttnFwdArgs : AttnFwdCommonArgs {
  int num_problems;
  AttnProblemArgs problems[kMaxAttnProblems];
};

// What the kernel reads (CUTLASS's Params): the caller's fields and plan_attn_fwd's.
struct AttnFwdParams : AttnFwdCommonArgs {
  int num_problems;
  AttnProblem problems[kMaxAttnProblems];
  int num_units;  // units of all problems
  // The plan hands units out through the atomic counter, and the caller (who gave no sched)
  // must supply a zeroed kAttnSchedInts workspace as sched.
  bool wants_sched;
  // pairs: the grid runs as thread-block clusters of 2 CTAs (CTA pairs); pair v is the units
  // 2v and 2v + 1 (two query heads of one problem, query tile, split and batch entry: the same
  // key tiles and masks), CTA rank r of a pair takes unit 2v + r, and when both heads read the
  // same kv head each CTA TMA-loads half of every K / V tile into the shared memory of both
  // (multicast). Needs heads_q even and head_dim % 64 == 0 (plan_attn_fwd).
  // grid_ctas: CTAs of the persistent grid (even with pairs).
  bool pairs;
  int grid_ctas;
};

// Layout of the sched workspace: [next unit, deferred count, next deferred, 0, deferred...].
constexpr int kAttnSchedHeader = 4;
constexpr int kAttnSchedInts = kAttnSchedHeader + 1024;  // one deferred unit per CTA at most

}  // namespace spava
