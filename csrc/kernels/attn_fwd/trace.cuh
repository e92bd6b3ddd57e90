// Optional clock64 trace of the attn_fwd kernel, compiled in only with SPAVA_ATTN_TRACE (build
// option of the same name; benchmarks/attn_trace.py reads it). Thread 0 of each warpgroup of
// CTAs [0, kTraceCtas) stamps the phases of the CTA's first kTraceUnits units into
// g_attn_trace[cta][unit][slot][event] (slot 0: the producer, 1..: consumer warpgroups); the
// launch copies it to the file named by SPAVA_TRACE_FILE after the kernel (synchronising).
// clock64 counts SM cycles: per-cycle comparisons hold whatever clock the power cap sets.
// Without SPAVA_ATTN_TRACE every call below is empty.
#pragma once

namespace spava::attn {

constexpr int kTraceCtas = 8, kTraceUnits = 64, kTraceSlots = 4, kTraceEvents = 16;

// Events of a consumer warpgroup's unit. The producer (slot 0) uses three: kEvQFull = its loads
// of unit k begin, kEvQInRegs = the consumers released unit k's Q (q_empty), kEvFirstTurn =
// every load of unit k issued.
enum TraceEvent : int {
  kEvQFull = 0,        // q_full passed (the unit's slot and Q are there)
  kEvQInRegs = 1,      // Q in registers (or S reads it from shared memory)
  kEvFirstTurn = 2,    // first K tile landed and this warpgroup's turn taken
  kEvFirstS = 3,       // S_0 ready
  kEvLoopEnd = 4,      // every S issued and every softmax done
  kEvLastPv = 5,       // last P V done
  kEvUnitEnd = 6,      // epilogue done
  kEvTiles = 7,        // value: the unit's key tiles
  kEvEpiBarrier1 = 8,  // epilogue: normalised, the staging tile free
  kEvEpiStsm = 9,      // epilogue: converted, written with stmatrix, fenced
  kEvEpiBarrier2 = 10, // epilogue: every thread's stmatrix done
  kEvEpiTma = 11,      // epilogue: TMA store issued and committed (issuing thread)
  kEvEpiLse = 12,      // epilogue: rows written, before the lse
  kEvEpiEnd = 13,      // epilogue: lse written
};

#ifdef SPAVA_ATTN_TRACE
static __device__ unsigned long long g_attn_trace[kTraceCtas * kTraceUnits * kTraceSlots *
                                                  kTraceEvents];

__device__ __forceinline__ void trace_value(int slot, int unit, int ev, long long value) {
  if (blockIdx.x < kTraceCtas && unit < kTraceUnits && threadIdx.x % 128 == 0) {
    g_attn_trace[((blockIdx.x * kTraceUnits + unit) * kTraceSlots + slot) * kTraceEvents + ev] =
        static_cast<unsigned long long>(value);
  }
}
__device__ __forceinline__ void trace(int slot, int unit, int ev) {
  trace_value(slot, unit, ev, clock64());
}
#else
__device__ __forceinline__ void trace_value(int, int, int, long long) {}
__device__ __forceinline__ void trace(int, int, int) {}
#endif

}  // namespace spava::attn
