// CUDA glue of spava::attn_fwd: checks -> AttnFwdParams -> run_attn_fwd on the current stream.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>
#include <cmath>

#include "attn_fwd/attn_fwd.h"
#include "checks.h"
#include "cuda_params.h"
#include "cuda_checks.h"
#include "dtype_map.h"
#include "ops.h"

namespace spava {

void attn_fwd_cuda(const at::Tensor& q, const std::vector<at::Tensor>& k,
                   const std::vector<at::Tensor>& v, at::IntArrayRef row_begin,
                   at::IntArrayRef diag, std::optional<double> softmax_scale, const at::Tensor& out,
                   const std::optional<at::Tensor>& lse) {
  const AttnFwdDims d = check_attn_fwd(q, k, v, row_begin, diag, softmax_scale, out, lse);
  check_sm90("attn_fwd", q);
  SPAVA_CHECK_TYPE(q.scalar_type() == at::kBFloat16 || q.scalar_type() == at::kHalf, "attn_fwd",
                   "CUDA kernels take bf16 or fp16 q/k/v, got ", q.scalar_type());
  bool compiled = false;
  for (int i = 0; i < kNumAttnFwdHeadDims; ++i) compiled |= kAttnFwdHeadDims[i] == d.head_dim;
  SPAVA_CHECK_VALUE(compiled, "attn_fwd", "head dim ", d.head_dim,
                    " is not compiled in this build (see spava_ext.ops.build_info())");
  check_rows_aligned("attn_fwd", "q", q);
  check_rows_aligned("attn_fwd", "out", out);
  const c10::cuda::CUDAGuard guard(q.device());

  AttnFwdParams p{};
  p.q = q.const_data_ptr();
  p.q_batch_stride = q.stride(0);
  p.q_row_stride = q.stride(1);
  p.q_head_stride = q.stride(2);
  set_out_and_lse(p, out, lse);
  p.batch = int(d.batch);
  p.q_len = int(d.q_len);
  p.heads_q = int(d.heads_q);
  p.heads_kv = int(d.heads_kv);
  p.head_dim = int(d.head_dim);
  p.softmax_scale = float(d.softmax_scale);
  p.softmax_scale_log2 = float(d.softmax_scale * 1.4426950408889634);  // log2(e)
  p.dtype = to_dtype(q.scalar_type());
  p.out_fp32 = out.scalar_type() == at::kFloat;
  constexpr int64_t kDiagClamp = int64_t(1) << 30;
  for (size_t s = 0; s < k.size(); ++s) {
    if (d.seg_lens[s] == 0) continue;  // empty segments contribute nothing
    SPAVA_CHECK_VALUE(p.num_segments < kMaxKvSegments, "attn_fwd", "more than ", kMaxKvSegments,
                      " non-empty key segments");
    SPAVA_CHECK_VALUE(d.seg_lens[s] < kDiagClamp && std::abs(row_begin[s]) < kDiagClamp,
                      "attn_fwd", "segment ", s, " length/row_begin out of range");
    check_rows_aligned("attn_fwd", "k", k[s]);
    check_rows_aligned("attn_fwd", "v", v[s]);
    KvSegment& seg = p.segments[p.num_segments++];
    seg.k = k[s].const_data_ptr();
    seg.v = v[s].const_data_ptr();
    seg.k_batch_stride = k[s].stride(0);
    seg.k_row_stride = k[s].stride(1);
    seg.k_head_stride = k[s].stride(2);
    seg.v_batch_stride = v[s].stride(0);
    seg.v_row_stride = v[s].stride(1);
    seg.v_head_stride = v[s].stride(2);
    seg.len = int(d.seg_lens[s]);
    seg.row_begin = int(row_begin[s]);
    seg.diag = int(std::clamp<int64_t>(diag[s], -kDiagClamp, kDiagClamp));
  }
  SPAVA_CHECK_VALUE(d.q_len < kDiagClamp, "attn_fwd", "q_len ", d.q_len, " out of range");
  // Split-KV for grids too small to fill the GPU (e.g. the question partial): fp32 workspaces
  // from the caching allocator, merged by the launcher.
  int num_sms = 0;
  cudaDeviceGetAttribute(&num_sms, cudaDevAttrMultiProcessorCount, q.device().index());
  p.num_splits = attn_fwd_num_splits(p, num_sms);
  at::Tensor split_out, split_lse;
  if (p.num_splits > 1) {
    const auto f32 = q.options().dtype(at::kFloat);
    split_out = at::empty({p.num_splits, d.batch, d.q_len, d.heads_q, d.head_dim}, f32);
    split_lse = at::empty({p.num_splits, d.batch, d.heads_q, d.q_len}, f32);
    p.split_out = split_out.mutable_data_ptr<float>();
    p.split_lse = split_lse.mutable_data_ptr<float>();
  }
  run_attn_fwd(p, c10::cuda::getCurrentCUDAStream());
}

}  // namespace spava
