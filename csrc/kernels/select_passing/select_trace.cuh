// Optional %globaltimer / clock64 trace of select_passing's kernels, compiled in only by the
// trace build (SPAVA_ATTN_TRACE=1, the option shared with attn_fwd's trace; read by
// benchmarks/select_trace.py). Thread 0 of each CTA stamps event e into g_sel_trace[row][e]
// (%globaltimer, ns) and [row][16 + e] (clock64); [row][15] is its SM. Rows [0, 64): kernel 1
// (qsum), [64, 576): kernel 2 (scores), [576, 1088): kernel 3 (select + gather), by CTA index.
// Events: kernel 1: 0 start, 1 end. Kernel 2: 0 start, 1 pdl_wait returned, 2 qsum summed,
// 3 raw scores, 4 end. Kernel 3: 0 start, 1 pdl_wait returned, 2 keys cached, 3 threshold,
// 4 kept positions, 5 end; inside the select (select_block.cuh): 8 digit 1 picked, 9 digit 2
// counted (this thread), 10 counted (every thread), 11 digit 2 picked; 12 / 13 / 14 / 6: the
// compaction's first tile loaded / counted / scanned / written. Every CTA of a launch writes
// its row, so after a graph of identical calls the buffer holds the last call; with
// SPAVA_SELECT_TRACE_FILE set, the next select_passing call first writes it to that file.
#pragma once

namespace spava::select {

constexpr int kSelTraceRows = 1088, kSelTraceEvents = 32;
constexpr int kSelTraceQsum = 0, kSelTraceScore = 64, kSelTraceGather = 576;

#ifdef SPAVA_ATTN_TRACE
static __device__ unsigned long long g_sel_trace[kSelTraceRows * kSelTraceEvents];

__device__ __forceinline__ void sel_stamp(int base, int ev) {
  if (threadIdx.x != 0) return;
  const int cta = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
  const int row = base + cta;
  if (row >= kSelTraceRows) return;
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  g_sel_trace[row * kSelTraceEvents + ev] = t;
  g_sel_trace[row * kSelTraceEvents + 16 + ev] = clock64();
  if (ev == 0) {
    unsigned sm;
    asm volatile("mov.u32 %0, %%smid;" : "=r"(sm));
    g_sel_trace[row * kSelTraceEvents + 15] = sm;
  }
}
#else
__device__ __forceinline__ void sel_stamp(int, int) {}
#endif

}  // namespace spava::select
