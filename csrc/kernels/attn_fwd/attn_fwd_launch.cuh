// Launch template of attn_fwd on sm90: config -> tensor maps -> kernel attributes -> persistent
// launch (-> LSE merge of the splits of problems that use split-KV).
#pragma once

#include <atomic>
#include <string>

#include "attn_fwd/attn_fwd.h"
#include "attn_fwd/attn_fwd_kernel_sm90.cuh"
#include "attn_fwd/config.h"
#include "attn_fwd/tma_params.h"
#include "common/kernel_setup.h"
#include "common/tma.h"
#include "common/trace.cuh"
#include "merge_states/merge_states.h"
#include "spava/check.h"

namespace spava {

// Merge the split partials of problem `pr` into its out / lse.
inline void merge_splits(const AttnFwdParams& params, const AttnProblem& pr, cudaStream_t stream) {
  // the split tiles are the first ones: rows [0, split_len) of out / lse
  const int64_t B = params.batch, L = pr.split_len, H = params.heads_q, D = params.head_dim;
  MergeStatesParams m{};
  m.outs = pr.split_out;
  m.outs_part_stride = B * L * H * D;
  m.outs_batch_stride = L * H * D;
  m.outs_row_stride = H * D;
  m.outs_head_stride = D;
  m.lses = pr.split_lse;
  m.lses_part_stride = B * H * L;
  m.lses_batch_stride = H * L;
  m.lses_head_stride = L;
  m.lses_row_stride = 1;
  m.out = pr.out;
  m.out_batch_stride = pr.out_batch_stride;
  m.out_row_stride = pr.out_row_stride;
  m.out_head_stride = pr.out_head_stride;
  m.lse = pr.lse;
  m.lse_batch_stride = pr.lse_batch_stride;
  m.lse_head_stride = pr.lse_head_stride;
  m.lse_row_stride = pr.lse_row_stride;
  m.num_parts = pr.num_splits;
  m.batch = params.batch;
  m.rows = pr.split_len;
  m.heads = params.heads_q;
  m.head_dim = params.head_dim;
  m.in_dtype = DType::kFloat32;
  m.out_dtype = pr.out_fp32 ? DType::kFloat32 : params.dtype;
  run_merge_states(m, stream);
}

// A launch of `ctas` CTAs of Cfg's kernel in clusters of 2 (CTA pairs); `attr` holds the
// cluster shape and must outlive the launch.
template <class Cfg>
cudaLaunchConfig_t pair_launch_config(int ctas, cudaStream_t stream, cudaLaunchAttribute& attr) {
  attr = cudaLaunchAttribute{};
  attr.id = cudaLaunchAttributeClusterDimension;
  attr.val.clusterDim.x = 2;
  attr.val.clusterDim.y = 1;
  attr.val.clusterDim.z = 1;
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = dim3(ctas);
  cfg.blockDim = dim3(Cfg::kThreads);
  cfg.dynamicSmemBytes = Cfg::kSmemBytes;
  cfg.stream = stream;
  cfg.attrs = &attr;
  cfg.numAttrs = 1;
  return cfg;
}

// Clusters of 2 CTAs of this kernel that fit on the current device at once (once per device),
// recorded for attn_fwd_max_pairs: the CTA pairs of a persistent grid.
template <class Cfg>
void record_max_pairs() {
  static std::atomic<uint64_t> done{0};
  once_per_device(done, [](int device) {
    int num_sms = 0, pairs = 0;
    SPAVA_CUDA_CHECK(cudaDeviceGetAttribute(&num_sms, cudaDevAttrMultiProcessorCount, device));
    cudaLaunchAttribute attr;
    const cudaLaunchConfig_t cfg = pair_launch_config<Cfg>(num_sms / 2 * 2, nullptr, attr);
    if (cudaOccupancyMaxActiveClusters(&pairs, attn::attn_fwd_sm90_ws_kernel<Cfg>, &cfg) !=
        cudaSuccess) {
      (void)cudaGetLastError();  // no clusters here: the launches run unpaired
      pairs = 0;
    }
    set_attn_fwd_max_pairs(device, pairs);
  });
}

// `params` must come from plan_attn_fwd (units, split workspaces, grid). With no units it only
// prepares the kernel on the current device. trace_file: see run_attn_fwd.
template <typename T, int kHeadDim>
void launch_attn_fwd_sm90(const AttnFwdParams& params, cudaStream_t stream,
                          const char* trace_file) {
  using Cfg = attn::Sm90WsConfig<T, kHeadDim>;
  set_max_dynamic_smem<attn::attn_fwd_sm90_ws_kernel<Cfg>>(Cfg::kSmemBytes);  // and load it
  record_max_pairs<Cfg>();
  if (params.num_units == 0) return;
  // CTA pairs load K / V in half tiles (pair.cuh)
  const int kv_box_rows = params.pairs ? Cfg::kHalfRows : Cfg::kBlockN;
  AttnFwdTmaParams tp;
  tp.p = params;
  for (int i = 0; i < params.num_problems; ++i) {
    const AttnProblem& pr = params.problems[i];
    tp.q[i] = make_rows_tensor_map(pr.q, params.dtype, params.batch, pr.q_len, params.heads_q,
                                   kHeadDim, pr.q_batch_stride, pr.q_row_stride,
                                   pr.q_head_stride, Cfg::kBoxCols, Cfg::kBlockM,
                                   Cfg::kSwizzleBytes);
  }
  // Output maps of the TMA-store epilogue: 16-bit rows whose base and strides TMA accepts
  // (16-byte aligned); other problems keep the plain stores.
  tp.o_tma_mask = 0;
  for (int i = 0; Cfg::kTmaStoreO && i < params.num_problems; ++i) {
    const AttnProblem& pr = params.problems[i];
    auto aligned = [](int64_t stride_elements) { return (stride_elements * 2) % 16 == 0; };
    if (pr.out_fp32 || pr.q_len <= 0 || reinterpret_cast<uintptr_t>(pr.out) % 16 != 0 ||
        !aligned(pr.out_row_stride) || !aligned(pr.out_head_stride) ||
        !aligned(pr.out_batch_stride)) {
      continue;
    }
    tp.o[i] = make_rows_tensor_map(pr.out, params.dtype, params.batch, pr.q_len,
                                   params.heads_q, kHeadDim, pr.out_batch_stride,
                                   pr.out_row_stride, pr.out_head_stride, Cfg::kBoxCols, 64,
                                   Cfg::kSwizzleBytes);
    tp.o_tma_mask |= 1u << i;
  }
  for (int s = 0; s < params.num_segments; ++s) {
    const KvSegment& seg = params.segments[s];
    tp.k[s] = make_rows_tensor_map(seg.k, params.dtype, params.batch, seg.len, params.heads_kv,
                                   kHeadDim, seg.k_batch_stride, seg.k_row_stride,
                                   seg.k_head_stride, Cfg::kBoxCols, kv_box_rows,
                                   Cfg::kSwizzleBytes);
    tp.v[s] = make_rows_tensor_map(seg.v, params.dtype, params.batch, seg.len, params.heads_kv,
                                   kHeadDim, seg.v_batch_stride, seg.v_row_stride,
                                   seg.v_head_stride, Cfg::kBoxCols, kv_box_rows,
                                   Cfg::kSwizzleBytes);
  }
  auto kernel = attn::attn_fwd_sm90_ws_kernel<Cfg>;
  // Persistent grid (plan_attn_fwd): one CTA per SM (192 KB of smem at D = 128 and the whole
  // register file each), fewer when max_ctas leaves SMs to other kernels (e.g. the collectives
  // a ready flag waits for); clusters of 2 with CTA pairs.
  const int ctas = params.grid_ctas;
  SPAVA_HOST_CHECK(ctas >= 1 && (!params.pairs || ctas % 2 == 0),
                   "attn_fwd: params.grid_ctas " + std::to_string(ctas) + " is not a valid grid");
  SPAVA_TRACE(attn::trace_begin(trace_file, stream));
  if (params.pairs) {
    cudaLaunchAttribute attr;
    const cudaLaunchConfig_t cfg = pair_launch_config<Cfg>(ctas, stream, attr);
    SPAVA_CUDA_CHECK(cudaLaunchKernelEx(&cfg, kernel, tp));
  } else {
    kernel<<<ctas, Cfg::kThreads, Cfg::kSmemBytes, stream>>>(tp);
  }
  SPAVA_CUDA_CHECK(cudaGetLastError());
  SPAVA_TRACE(attn::trace_end(trace_file, stream));
  for (int i = 0; i < params.num_problems; ++i) {
    if (params.problems[i].num_splits > 1) merge_splits(params, params.problems[i], stream);
  }
}

}  // namespace spava
