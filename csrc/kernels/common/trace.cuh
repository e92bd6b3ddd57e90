// Optional clock64 trace of the attn_fwd kernel, compiled in only with SPAVA_ATTN_TRACE (build
// option of the same name; benchmarks/attn_trace.py reads it). Thread 0 of each warpgroup of
// CTAs [0, kTraceCtas) stamps the phases of the CTA's first kTraceUnits units into
// g_attn_trace[cta][unit][slot][event] (slot 0: the producer, 1..: consumer warpgroups); the
// launch copies it to the file named by SPAVA_TRACE_FILE after the kernel (synchronising).
// clock64 counts SM cycles: per-cycle comparisons hold whatever clock the power cap sets.
// Every CTA (up to kSpanCtas) also records its span in g_attn_span[cta][field]: clock64 and
// %globaltimer (ns) at its start (thread 0) and where each consumer warpgroup leaves its unit
// loop, its SM id and its unit / key-tile counts: the makespan, the balance across SMs and the
// effective SM clock (cycles / ns) of one launch.
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
  kEvEpiLse = 12,      // epilogue: normalised, before the lse (written first since session 7)
  kEvEpiEnd = 13,      // epilogue: lse and rows written
};

// Fields of a CTA's span record g_attn_span[cta][field].
constexpr int kSpanCtas = 1024, kSpanFields = 16;
enum SpanField : int {
  kSpanClock0 = 0,  // clock64 at the CTA's start
  kSpanTime0 = 1,   // %globaltimer (ns) at the CTA's start
  kSpanSm = 2,      // %smid
  kSpanClockEnd = 3,  // + 2 w: consumer warpgroup w (0-based) left its unit loop, clock64
  kSpanTimeEnd = 4,   // + 2 w: the same, %globaltimer; w < 3
  kSpanUnits = 9,     // units and key tiles of consumer warpgroup 0
  kSpanTiles = 10,
};

#ifdef SPAVA_ATTN_TRACE
static __device__ unsigned long long g_attn_trace[kTraceCtas * kTraceUnits * kTraceSlots *
                                                  kTraceEvents];
static __device__ unsigned long long g_attn_span[kSpanCtas * kSpanFields];

__device__ __forceinline__ void trace_value(int slot, int unit, int ev, long long value) {
  if (blockIdx.x < kTraceCtas && unit < kTraceUnits && threadIdx.x % 128 == 0) {
    g_attn_trace[((blockIdx.x * kTraceUnits + unit) * kTraceSlots + slot) * kTraceEvents + ev] =
        static_cast<unsigned long long>(value);
  }
}
__device__ __forceinline__ void trace(int slot, int unit, int ev) {
  trace_value(slot, unit, ev, clock64());
}

__device__ __forceinline__ unsigned long long global_ns() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}
__device__ __forceinline__ void span_set(int field, unsigned long long value) {
  if (blockIdx.x < kSpanCtas) g_attn_span[blockIdx.x * kSpanFields + field] = value;
}
// thread 0, before any work: start stamps and the SM id
__device__ __forceinline__ void span_start() {
  if (threadIdx.x != 0) return;
  unsigned sm;
  asm volatile("mov.u32 %0, %%smid;" : "=r"(sm));
  span_set(kSpanClock0, clock64());
  span_set(kSpanTime0, global_ns());
  span_set(kSpanSm, sm);
}
// thread 0 of consumer warpgroup w (0-based) after its last unit (`units` units, `tiles` tiles)
__device__ __forceinline__ void span_end(int w, int units, int tiles) {
  if (threadIdx.x % 128 != 0 || w > 2) return;
  span_set(kSpanClockEnd + 2 * w, clock64());
  span_set(kSpanTimeEnd + 2 * w, global_ns());
  if (w == 0) {
    span_set(kSpanUnits, units);
    span_set(kSpanTiles, tiles);
  }
}
#else
__device__ __forceinline__ void trace_value(int, int, int, long long) {}
__device__ __forceinline__ void trace(int, int, int) {}
__device__ __forceinline__ void span_start() {}
__device__ __forceinline__ void span_end(int, int, int) {}
#endif

}  // namespace spava::attn
