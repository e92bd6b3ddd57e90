// Kernel traces of the trace builds (build option SPAVA_ATTN_TRACE=1), read back by
// benchmarks/attn_trace.py and benchmarks/select_trace.py. Every hook, in a kernel or a launcher,
// is written SPAVA_TRACE(hook(...)): in other builds it compiles to nothing, so the traces cost
// nothing there. The launchers take the trace file's path as an argument (trace_file; the glue
// passes what spava::set_trace_file stored, nullptr or "": no trace) and write the stamps there
// as raw uint64 words, synchronising the stream.
//
// attn_fwd (namespace spava::attn). Thread 0 of each warpgroup of CTAs [0, kTraceCtas) stamps
// the phases of the CTA's first kTraceUnits units into g_attn_trace[cta][unit][slot][event]
// (slot 0: the producer, 1..: consumer warpgroups). clock64 counts SM cycles: per-cycle
// comparisons hold at whatever clock the GPU runs. Every CTA (up to kSpanCtas) also records its
// span in g_attn_span[cta][field]: clock64 and %globaltimer (ns) at its start (thread 0) and
// where each consumer warpgroup leaves its unit loop, its SM id and its unit / key-tile counts:
// the makespan, the balance across SMs and the effective SM clock (cycles / ns) of one launch.
// The launch clears both before the kernel and writes the stamps, then the spans, after it.
//
// select_passing (namespace spava::select). Thread 0 of each CTA stamps event e into
// g_sel_trace[row][e] (%globaltimer, ns) and [row][16 + e] (clock64); [row][15] is its SM. Rows
// [0, 64): kernel 1 (qsum), [64, 576): kernel 2 (scores), [576, 1088): kernel 3 (select +
// gather), by CTA index. Events: kernel 1: 0 start, 1 end. Kernel 2: 0 start, 1 pdl_wait
// returned, 2 qsum summed, 3 raw scores, 4 end. Kernel 3: 0 start, 1 pdl_wait returned, 2 keys
// cached, 3 threshold, 4 kept positions, 5 end; inside the select (select_block.cuh): 8 digit 1
// picked, 9 digit 2 counted (this thread), 10 counted (every thread), 11 digit 2 picked; 12 / 13
// / 14 / 6: the compaction's first tile loaded / counted / scanned / written. Every CTA of a
// launch writes its row, so after a CUDA graph of identical calls the buffer holds the last
// call: each select_passing call with a trace file first writes the stamps of the previous call
// of its dtype (one buffer per instantiation) there, then clears them.
//
// The buffers are static __device__ arrays: each translation unit (one instantiation) has its
// own, which its launcher reads back.
#pragma once

#ifdef SPAVA_ATTN_TRACE
#define SPAVA_TRACE(...) __VA_ARGS__
#else
#define SPAVA_TRACE(...) ((void)0)
#endif

#ifdef SPAVA_ATTN_TRACE
#include <cuda_runtime_api.h>

#include <cstdio>
#include <string>
#include <vector>

#include "spava/check.h"
#endif

namespace spava {
namespace attn {

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
  kEvEpiLse = 12,      // epilogue: normalised, before the lse (which is written first)
  kEvEpiEnd = 13,      // epilogue: lse and rows written
};

// Fields of a CTA's span record g_attn_span[cta][field].
constexpr int kSpanCtas = 1024, kSpanFields = 16;
enum SpanField : int {
  kSpanClock0 = 0,    // clock64 at the CTA's start
  kSpanTime0 = 1,     // %globaltimer (ns) at the CTA's start
  kSpanSm = 2,        // %smid
  kSpanClockEnd = 3,  // + 2 w: consumer warpgroup w (0-based) left its unit loop, clock64
  kSpanTimeEnd = 4,   // + 2 w: the same, %globaltimer; w < 3
  kSpanUnits = 9,     // units and key tiles of consumer warpgroup 0
  kSpanTiles = 10,
};

}  // namespace attn

namespace select {

constexpr int kSelTraceRows = 1088, kSelTraceEvents = 32;
constexpr int kSelTraceQsum = 0, kSelTraceScore = 64, kSelTraceGather = 576;  // first rows

}  // namespace select

#ifdef SPAVA_ATTN_TRACE

__device__ __forceinline__ unsigned long long global_ns() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

__device__ __forceinline__ unsigned sm_id() {
  unsigned sm;
  asm volatile("mov.u32 %0, %%smid;" : "=r"(sm));
  return sm;
}

// Writes `words` to `path`; an unwritable path is an error naming the op and the path.
inline void write_trace_file(const char* op, const char* path,
                             const std::vector<unsigned long long>& words) {
  FILE* f = std::fopen(path, "wb");
  SPAVA_HOST_CHECK(f != nullptr, std::string(op) + ": cannot write the trace file " + path);
  std::fwrite(words.data(), 8, words.size(), f);
  std::fclose(f);
}

inline bool tracing(const char* trace_file) { return trace_file != nullptr && *trace_file != 0; }

namespace attn {

static __device__ unsigned long long g_attn_trace[kTraceCtas * kTraceUnits * kTraceSlots *
                                                  kTraceEvents];
static __device__ unsigned long long g_attn_span[kSpanCtas * kSpanFields];

__device__ __forceinline__ void stamp_value(int slot, int unit, int ev, long long value) {
  if (blockIdx.x < kTraceCtas && unit < kTraceUnits && threadIdx.x % 128 == 0) {
    g_attn_trace[((blockIdx.x * kTraceUnits + unit) * kTraceSlots + slot) * kTraceEvents + ev] =
        static_cast<unsigned long long>(value);
  }
}
__device__ __forceinline__ void stamp(int slot, int unit, int ev) {
  stamp_value(slot, unit, ev, clock64());
}

__device__ __forceinline__ void span_set(int field, unsigned long long value) {
  if (blockIdx.x < kSpanCtas) g_attn_span[blockIdx.x * kSpanFields + field] = value;
}
// thread 0, before any work: start stamps and the SM id
__device__ __forceinline__ void span_start() {
  if (threadIdx.x != 0) return;
  span_set(kSpanClock0, clock64());
  span_set(kSpanTime0, global_ns());
  span_set(kSpanSm, sm_id());
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

// Before the launch: clears this translation unit's stamps and spans on the stream.
static inline void trace_begin(const char* trace_file, cudaStream_t stream) {
  if (!tracing(trace_file)) return;
  void* buf = nullptr;
  SPAVA_CUDA_CHECK(cudaGetSymbolAddress(&buf, g_attn_trace));
  SPAVA_CUDA_CHECK(cudaMemsetAsync(buf, 0, sizeof(g_attn_trace), stream));
  SPAVA_CUDA_CHECK(cudaGetSymbolAddress(&buf, g_attn_span));
  SPAVA_CUDA_CHECK(cudaMemsetAsync(buf, 0, sizeof(g_attn_span), stream));
}

// After the launch: waits for it and writes its stamps, then its spans, to trace_file.
static inline void trace_end(const char* trace_file, cudaStream_t stream) {
  if (!tracing(trace_file)) return;
  constexpr size_t kStamps = sizeof(g_attn_trace) / 8;
  std::vector<unsigned long long> host(kStamps + sizeof(g_attn_span) / 8);
  SPAVA_CUDA_CHECK(cudaStreamSynchronize(stream));
  SPAVA_CUDA_CHECK(cudaMemcpyFromSymbol(host.data(), g_attn_trace, sizeof(g_attn_trace)));
  SPAVA_CUDA_CHECK(
      cudaMemcpyFromSymbol(host.data() + kStamps, g_attn_span, sizeof(g_attn_span)));
  write_trace_file("attn_fwd", trace_file, host);
}

}  // namespace attn

namespace select {

static __device__ unsigned long long g_sel_trace[kSelTraceRows * kSelTraceEvents];

// Thread 0 of the CTA: event ev of the CTA's row (kernel's first row `base` + CTA index).
__device__ __forceinline__ void sel_stamp(int base, int ev) {
  if (threadIdx.x != 0) return;
  const int cta = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
  const int row = base + cta;
  if (row >= kSelTraceRows) return;
  g_sel_trace[row * kSelTraceEvents + ev] = global_ns();
  g_sel_trace[row * kSelTraceEvents + 16 + ev] = clock64();
  if (ev == 0) g_sel_trace[row * kSelTraceEvents + 15] = sm_id();
}

// Before a call's kernels: waits for the stream, writes the previous call's stamps to
// trace_file and clears them on the stream.
static inline void trace_dump(const char* trace_file, cudaStream_t stream) {
  if (!tracing(trace_file)) return;
  std::vector<unsigned long long> words(sizeof(g_sel_trace) / 8);
  SPAVA_CUDA_CHECK(cudaStreamSynchronize(stream));
  SPAVA_CUDA_CHECK(cudaMemcpyFromSymbol(words.data(), g_sel_trace, sizeof(g_sel_trace)));
  write_trace_file("select_passing", trace_file, words);
  void* buf = nullptr;
  SPAVA_CUDA_CHECK(cudaGetSymbolAddress(&buf, g_sel_trace));
  SPAVA_CUDA_CHECK(cudaMemsetAsync(buf, 0, sizeof(g_sel_trace), stream));
}

}  // namespace select

#endif  // SPAVA_ATTN_TRACE

}  // namespace spava
