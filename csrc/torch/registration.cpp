// Every schema of the `spava` op library, and which implementation serves each device, through
// the LibTorch stable ABI (boxed kernels: TORCH_BOX). Fakes (for torch.compile / FakeTensor) are
// registered in python/spava_ext/ops.py, which imports this module.
#include <Python.h>
#include <torch/csrc/stable/library.h>

#include "ops.h"
#include "trace.h"

// An empty module: importing spava_ext._C runs the static registrations below.
PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}

STABLE_TORCH_LIBRARY(spava, m) {
  // ---- selection of passing blocks (docs/design.md "Selection")
  // q [B, nq, Hq, D] question rows; k, v [B, Lk, Hkv, D]; chunk c = k[:, starts[c] : +lens[c]].
  // Writes indices [C, B, Hkv, cap] (int64, ascending positions along k's dim 1, -1 padded) and
  // kv [C, cap, 2, B, Hkv, D] (packed K/V send buffer, zero padded).
  m.def(
      "select_passing(Tensor q, Tensor k, Tensor v, int[] chunk_starts, int[] chunk_lens, "
      "int passing_len, int pool_kernel, Tensor(a!) indices, Tensor(b!) kv) -> ()");

  // ---- segment-masked attention with LSE
  // q [B, Lq, Hq, D]; k[s], v[s] [B, Ls, Hkv, D]; key j of segment s is visible to row i iff
  // i >= row_begin[s] && j <= i + diag[s]. Writes out [B, Lq, Hq, D] (q's dtype or fp32) and
  // lse [B, Hq, Lq] (fp32, natural log; -inf for rows with no visible key, whose out is 0).
  m.def(
      "attn_fwd(Tensor q, Tensor[] k, Tensor[] v, int[] row_begin, int[] diag, "
      "float? softmax_scale, Tensor(a!) out, Tensor(b!)? lse) -> ()");

  // ---- a group of attn_fwd problems in one launch (CUDA: one persistent kernel)
  // Problem i: rows q[i], out[i], lse[i] (an empty tensor: none) and the next num_segments[i]
  // key segments and entries of row_begin / diag. Segment s is k[s] / v[s]; with spans (3 ints
  // per segment: source, first row, rows) it is rows [first, first + rows) of k[source] /
  // v[source], so one source serves many segments. The other keyword arguments are how the
  // launch overlaps with communication (python/spava_ext/overlap.py):
  //   ready [n] int32 flags on q's device: problem i reads no key before ready[wait_for[i]]
  //     != 0 (-1 or an empty wait_for: no wait; the CPU op raises instead of waiting); a CUDA
  //     CTA that waits longer than timeout_s seconds traps (an error, not a hang).
  //   sched (int32 [kAttnSchedInts], zeroed): CUDA CTAs give back units whose flag is still 0
  //     after spin_us microseconds, and a second call with finish=True (queued after the
  //     flags' producers) computes them; see attn_params.h.
  //   done (int32 [2 * problems], zeroed): done[2i + 1] becomes 1 once problem i's rows are all
  //     written (wait_flag lets another stream start on them while the launch goes on).
  //   sm_budget > 0: CTAs the CUDA grid may use, leaving the other SMs to other streams.
  // FP8 (docs/kernels/attn_fp8.md; q_scale given): q[i] float8_e4m3fn with per-row scales
  // q_scale[i] [B, Lq, Hq] fp32; k[s] float8_e4m3fn [B, L, Hkv, D] and v[s] float8_e4m3fn
  // transposed [B, Hkv, D, L_pad >= L], with block scales k_scale[s] / v_scale[s]
  // [B, ceil(L / 128), Hkv] fp32 (blocks of 128 rows from the source's row 0); out bf16, fp16
  // or fp32. Key tiles follow the sources' blocks. CPU only for now.
  m.def(
      "attn_fwd_group(Tensor[] q, int[] num_segments, Tensor[] k, Tensor[] v, int[] row_begin, "
      "int[] diag, float? softmax_scale, Tensor(a!)[] out, Tensor(b!)[] lse, *, "
      "Tensor? ready=None, int[] wait_for=[], Tensor(c!)? sched=None, Tensor(d!)? done=None, "
      "bool finish=False, int sm_budget=0, int spin_us, float timeout_s, int[] spans=[], "
      "Tensor[]? q_scale=None, Tensor[]? k_scale=None, Tensor[]? v_scale=None) -> ()");

  // ---- stream order on a device flag: work queued after this on the current stream starts
  // once flag[0] (int32) != 0 (CUDA: cuStreamWaitValue32; CPU: raises if it is 0).
  m.def("wait_flag(Tensor flag) -> ()");
  // ---- flag[0] (int32) := 1 in stream order, once the work queued before it on the current
  // stream has finished (CUDA: cuStreamWriteValue32, on no SM; CPU: now).
  m.def("set_flag(Tensor(a!) flag) -> ()");

  // ---- LSE merge of partial states
  // outs [n, B, R, H, D], lses [n, B, H, R] fp32 -> out [B, R, H, D], lse [B, H, R].
  m.def("merge_states(Tensor outs, Tensor lses, Tensor(a!) out, Tensor(b!)? lse) -> ()");

  // ---- per-block e4m3 quantisation for the FP8 attention path (python/spava_ext/fp8.py)
  // x [B, L, H, D] (bf16/fp16; fp32 on CPU; last dim contiguous). Block (b, j, h) = rows
  // [j * block, +block) of head h; y = x, or x @ Hadamard_D (rotate: D a power of two, as
  // fp32 Walsh-Hadamard butterflies). Writes scales [B, ceil(L / block), H] fp32 (amax(|y|) / 448,
  // at least 2^-126; 1 for an all-zero block) and values float8_e4m3fn, contiguous:
  // e4m3(y * (1 / scale)), round to nearest even, saturated to +-448, as [B, L, H, D], or with
  // transpose as [B, H, D, ceil(L / 16) * 16] (key index contiguous, columns >= L zero).
  m.def(
      "quantize_fp8(Tensor x, int block, bool rotate, bool transpose, Tensor(a!) values, "
      "Tensor(b!) scales) -> ()");

  // ---- build description (not a tensor op)
  m.def("build_info() -> str");
  // ---- whether attn_fwd runs the sm_90a kernels on a device (else the ATen path), and the
  // switch that sends every GPU to the ATen path (process-wide; off by default)
  m.def("uses_sm90(Device device) -> bool");
  m.def("set_attn_fallback(bool on) -> ()");
  // ---- whether attn_fwd calls of at most 16 query rows per kv head run the split-KV decode
  // kernel on the sm_90a path (process-wide; off by default)
  m.def("set_attn_decode(bool on) -> ()");
  // ---- trace builds (SPAVA_ATTN_TRACE=1): the file the kernel launches that follow write their
  // traces to ("": none); raises in other builds (not a tensor op)
  m.def("set_trace_file(str path) -> ()");
}

// The ops without tensor arguments: one kernel for every device.
STABLE_TORCH_LIBRARY_IMPL(spava, CompositeExplicitAutograd, m) {
  m.impl("build_info", TORCH_BOX(&spava::build_info));
  m.impl("uses_sm90", TORCH_BOX(&spava::uses_sm90));
  m.impl("set_attn_fallback", TORCH_BOX(&spava::set_attn_fallback));
  m.impl("set_attn_decode", TORCH_BOX(&spava::set_attn_decode));
  m.impl("set_trace_file", TORCH_BOX(&spava::set_trace_file));
}

STABLE_TORCH_LIBRARY_IMPL(spava, CPU, m) {
  m.impl("select_passing", TORCH_BOX(&spava::select_passing_cpu));
  m.impl("attn_fwd", TORCH_BOX(&spava::attn_fwd_aten));
  m.impl("attn_fwd_group", TORCH_BOX(&spava::attn_fwd_group_cpu));
  m.impl("wait_flag", TORCH_BOX(&spava::wait_flag_cpu));
  m.impl("set_flag", TORCH_BOX(&spava::set_flag_cpu));
  m.impl("merge_states", TORCH_BOX(&spava::merge_states_cpu));
  m.impl("quantize_fp8", TORCH_BOX(&spava::quantize_fp8_cpu));
}

#ifdef SPAVA_WITH_CUDA
STABLE_TORCH_LIBRARY_IMPL(spava, CUDA, m) {
  m.impl("select_passing", TORCH_BOX(&spava::select_passing_cuda));
  m.impl("attn_fwd", TORCH_BOX(&spava::attn_fwd_cuda));
  m.impl("attn_fwd_group", TORCH_BOX(&spava::attn_fwd_group_cuda));
  m.impl("wait_flag", TORCH_BOX(&spava::wait_flag_cuda));
  m.impl("set_flag", TORCH_BOX(&spava::set_flag_cuda));
  m.impl("merge_states", TORCH_BOX(&spava::merge_states_cuda));
  m.impl("quantize_fp8", TORCH_BOX(&spava::quantize_fp8_cuda));
}
#endif
