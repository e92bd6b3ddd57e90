// The block structure of attn_fwd as one mask policy: which key tiles a query tile visits
// (trip counts) and which elements of a visited tile are masked.
//
// Visibility (params.h): key j of segment s is seen by query row i iff
//     i >= s.row_begin  &&  j <= i + s.diag  &&  j < s.len.
// This one rule expresses every block of Spava: full segments (passing blocks seen by context
// rows, the anchor seen by chunk rows), causal segments (anchor rows over the anchor, a chunk
// over itself, with diag = -a when the query rows start a rows before the chunk), and
// "anchor rows skip passing blocks" (row_begin = a).
#pragma once

#include "spava/params.h"

namespace spava::attn {

// The visibility fields of a KvSegment, held in registers by the tile walk (TileCursor): the
// per-tile mask test then needs no indexed constant-bank load.
struct SegShape {
  int len, row_begin, diag;
};

// SegmentMask's functions take a KvSegment or a SegShape (same field names).
struct SegmentMask {
  // Key tiles visited by the query tile [m0, m_last] over the problem's segments.
  template <int kBlockN>
  static __host__ __device__ int total_tiles(const AttnFwdParams& p, const AttnProblem& pr,
                                             int m0, int m_last) {
    int n = 0;
    for (int s = pr.seg_begin; s < pr.seg_begin + pr.num_segments; ++s)
      n += trip_count<kBlockN>(p.segments[s], m0, m_last);
    return n;
  }

  // Key tiles of `seg` that some row of [m0, m_last] may see (0 if none).
  template <int kBlockN, class Seg>
  static __host__ __device__ __forceinline__ int trip_count(const Seg& seg, int m0, int m_last) {
    if (m_last < seg.row_begin) return 0;
    const int reach = m_last + seg.diag + 1;  // keys [0, min(len, reach)) may be seen
    const int n_end = seg.len < reach ? seg.len : reach;
    return n_end <= 0 ? 0 : (n_end + kBlockN - 1) / kBlockN;
  }

  // True when every (row, key) of the tile is visible: no element mask needed.
  template <int kBlockM, int kBlockN, class Seg>
  static __device__ __forceinline__ bool tile_is_full(const Seg& seg, int m0, int n0) {
    return m0 >= seg.row_begin && n0 + kBlockN - 1 <= m0 + seg.diag && n0 + kBlockN <= seg.len;
  }

  // The largest key `row` sees in `seg` (it sees keys 0..that), -1 if none: the rule above.
  template <class Seg>
  static __device__ __forceinline__ int last_visible_key(const Seg& seg, int row) {
    return row < seg.row_begin ? -1 : min(row + seg.diag, seg.len - 1);
  }
};

}  // namespace spava::attn
