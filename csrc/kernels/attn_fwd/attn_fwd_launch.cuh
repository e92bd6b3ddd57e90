// Launch template of attn_fwd on sm90: config -> tensor maps -> kernel attributes -> launch
// (-> LSE merge of the splits when split-KV is on).
#pragma once

#include <algorithm>

#include "attn_fwd/attn_fwd.h"
#include "attn_fwd/attn_fwd_kernel_sm90.cuh"
#include "attn_fwd/config.h"
#include "attn_fwd/tma_params.h"
#include "common/tma.h"
#include "merge_states/merge_states.h"
#include "spava/check.h"

namespace spava {

template <typename T, int kHeadDim>
void launch_attn_fwd_sm90(const AttnFwdParams& params, cudaStream_t stream) {
  if (params.q_len == 0 || params.batch == 0 || params.heads_q == 0) return;
  using Cfg = attn::Sm90WsConfig<T, kHeadDim>;
  AttnFwdTmaParams tp;
  tp.p = params;
  tp.q = make_rows_tensor_map(params.q, params.dtype, params.batch, params.q_len, params.heads_q,
                              kHeadDim, params.q_batch_stride, params.q_row_stride,
                              params.q_head_stride, Cfg::kBoxCols, Cfg::kBlockM,
                              Cfg::kSwizzleBytes);
  for (int s = 0; s < params.num_segments; ++s) {
    const KvSegment& seg = params.segments[s];
    tp.k[s] = make_rows_tensor_map(seg.k, params.dtype, params.batch, seg.len, params.heads_kv,
                                   kHeadDim, seg.k_batch_stride, seg.k_row_stride,
                                   seg.k_head_stride, Cfg::kBoxCols, Cfg::kBlockN,
                                   Cfg::kSwizzleBytes);
    tp.v[s] = make_rows_tensor_map(seg.v, params.dtype, params.batch, seg.len, params.heads_kv,
                                   kHeadDim, seg.v_batch_stride, seg.v_row_stride,
                                   seg.v_head_stride, Cfg::kBoxCols, Cfg::kBlockN,
                                   Cfg::kSwizzleBytes);
  }
  auto kernel = attn::attn_fwd_sm90_ws_kernel<Cfg>;
  static const bool configured = [&] {  // once per instantiation (also keeps graph capture clean)
    SPAVA_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                          Cfg::kSmemBytes));
    return true;
  }();
  (void)configured;
  const int splits = std::max(1, params.num_splits);
  const dim3 grid(splits * ((params.q_len + Cfg::kBlockM - 1) / Cfg::kBlockM), params.heads_q,
                  params.batch);
  kernel<<<grid, Cfg::kThreads, Cfg::kSmemBytes, stream>>>(tp);
  SPAVA_CUDA_CHECK(cudaGetLastError());
  if (splits > 1) {  // LSE-merge the partial states of the splits into out / lse
    const int64_t B = params.batch, L = params.q_len, H = params.heads_q, D = kHeadDim;
    MergeStatesParams m{};
    m.outs = params.split_out;
    m.outs_part_stride = B * L * H * D;
    m.outs_batch_stride = L * H * D;
    m.outs_row_stride = H * D;
    m.outs_head_stride = D;
    m.lses = params.split_lse;
    m.lses_part_stride = B * H * L;
    m.lses_batch_stride = H * L;
    m.lses_head_stride = L;
    m.lses_row_stride = 1;
    m.out = params.out;
    m.out_batch_stride = params.out_batch_stride;
    m.out_row_stride = params.out_row_stride;
    m.out_head_stride = params.out_head_stride;
    m.lse = params.lse;
    m.lse_batch_stride = params.lse_batch_stride;
    m.lse_head_stride = params.lse_head_stride;
    m.lse_row_stride = params.lse_row_stride;
    m.num_parts = splits;
    m.batch = params.batch;
    m.rows = params.q_len;
    m.heads = params.heads_q;
    m.head_dim = kHeadDim;
    m.in_dtype = DType::kFloat32;
    m.out_dtype = params.out_fp32 ? DType::kFloat32 : params.dtype;
    run_merge_states(m, stream);
  }
}

}  // namespace spava
