// A unit of attn_fwd's persistent schedule as the producer hands it to the consumers: the
// decoded unit (scheduler.cuh) and where its rows go (epilogue.cuh), in a shared-memory slot.
#pragma once

#include <cstdint>

namespace spava::attn {

// The tiles [begin, begin + count) of a query tile's visit order (its split's range).
struct TileRange {
  int begin, count;
};

struct WorkUnit {
  int problem, m0, m_last, hq, hk, b, split, splits;  // splits > 1: a split-KV unit
  TileRange range;
};

// Where a unit's rows go. out / lse point at row 0 of the unit's (batch, head) slice of the
// problem's out / lse, or of its split's partial (split-KV: fp32). lse may be null.
struct OutArgs {
  void* out;
  float* lse;
  int64_t out_row_stride, lse_row_stride;  // elements
  int* done;                               // the problem's done counter, or null
  int done_units;                          // units that count towards it
  int q_len;                               // rows of the problem
  bool out_fp32;
  bool tma_store;  // 16-bit rows written by TMA from shared memory (tp.o[problem])
};

// Filled by the producer before the unit's Q load, read by the consumers after q_full; two
// slots by unit parity: the producer refills a slot only after the consumers' q_empty arrival
// of the following unit, i.e. after they are done with this one (epilogue included).
struct UnitSlot {
  int unit;  // -1: the CTA is done
  WorkUnit w;
  OutArgs out;
};

}  // namespace spava::attn
