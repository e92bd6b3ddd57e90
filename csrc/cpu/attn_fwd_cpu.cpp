// The ATen implementation of spava::attn_fwd: segment-masked attention with fp32 math (ATen
// GEMMs), on any device: the CPU op, and the CUDA op's fallback on GPUs without the sm_90a
// kernels (attn_fwd_cuda.cpp).
//
// Query rows are processed in tiles; each tile scores every key it may see in one pass (no online
// rescaling on the CPU), skipping the keys of causal segments that lie past the tile's last row. Visibility: key j of segment s is seen by query row i
// iff i >= row_begin[s] && j <= i + diag[s]. Rows that see no key get out = 0, lse = -inf.
#include <ATen/ATen.h>

#include <algorithm>
#include <limits>

#include "checks.h"
#include "ops.h"

namespace spava {
namespace {

// bool [T, Lk]: visibility of the concatenated segments for query rows [r0, r0 + T).
at::Tensor tile_mask(int64_t r0, int64_t T, const std::vector<int64_t>& lens,
                     at::IntArrayRef row_begin, at::IntArrayRef diag, const at::Device& device) {
  const auto idx = at::TensorOptions().dtype(at::kLong).device(device);
  const auto rows = at::arange(r0, r0 + T, idx).unsqueeze(1);
  std::vector<at::Tensor> parts;
  for (size_t s = 0; s < lens.size(); ++s) {
    if (lens[s] == 0) continue;
    const auto cols = at::arange(lens[s], idx).unsqueeze(0);
    parts.push_back(rows.ge(row_begin[s]).logical_and(cols.le(rows + diag[s])));
  }
  return at::cat(parts, 1);
}

}  // namespace

void attn_fwd_aten(const at::Tensor& q, const std::vector<at::Tensor>& k,
                   const std::vector<at::Tensor>& v, at::IntArrayRef row_begin,
                   at::IntArrayRef diag, std::optional<double> softmax_scale,
                   const at::Tensor& out, const std::optional<at::Tensor>& lse) {
  const AttnFwdDims d = check_attn_fwd(q, k, v, row_begin, diag, softmax_scale, out, lse);
  const int64_t B = d.batch, Lq = d.q_len, Hq = d.heads_q, Hkv = d.heads_kv, D = d.head_dim;
  const int64_t G = Hq / Hkv;
  if (Lq == 0) return;
  // [B, Hkv, G, Lq, D]
  const auto qf = q.to(at::kFloat).contiguous().view({B, Lq, Hkv, G, D}).permute({0, 2, 3, 1, 4});
  std::vector<at::Tensor> kf, vf;  // [B, Hkv, 1, Ls, D] per segment, fp32
  int64_t total_keys = 0;
  for (size_t s = 0; s < k.size(); ++s) {
    kf.push_back(k[s].to(at::kFloat).permute({0, 2, 1, 3}).unsqueeze(2));
    vf.push_back(v[s].to(at::kFloat).permute({0, 2, 1, 3}).unsqueeze(2));
    total_keys += d.seg_lens[s];
  }
  // Row tiles of at most 256 rows (so causal segments skip most masked keys), scores <= ~64 MB.
  const int64_t budget = (int64_t(64) << 20) / 4;
  const int64_t tile =
      std::clamp<int64_t>(budget / std::max<int64_t>(1, B * Hq * total_keys), 1, 256);
  for (int64_t r0 = 0; r0 < Lq; r0 += tile) {
    const int64_t T = std::min(tile, Lq - r0), last = r0 + T - 1;
    // Per segment, the prefix of keys that some row of the tile may see.
    std::vector<at::Tensor> ks, vs;
    std::vector<int64_t> lens;
    std::vector<int64_t> rb, dg;
    for (size_t s = 0; s < k.size(); ++s) {  // d.row_begin, d.diag: clamped, no overflow
      const int64_t n = last < d.row_begin[s] ? 0
                                              : std::clamp<int64_t>(last + d.diag[s] + 1, 0,
                                                                    d.seg_lens[s]);
      if (n == 0) continue;
      ks.push_back(kf[s].narrow(3, 0, n));
      vs.push_back(vf[s].narrow(3, 0, n));
      lens.push_back(n);
      rb.push_back(d.row_begin[s]);
      dg.push_back(d.diag[s]);
    }
    auto out_tile = out.narrow(1, r0, T);
    if (ks.empty()) {  // no row of the tile sees any key
      out_tile.zero_();
      if (lse) lse->narrow(2, r0, T).fill_(-std::numeric_limits<float>::infinity());
      continue;
    }
    const auto kk = at::cat(ks, 3), vv = at::cat(vs, 3);  // [B, Hkv, 1, n, D]
    const auto mask = tile_mask(r0, T, lens, rb, dg, q.device());  // [T, n]
    auto scores = at::matmul(qf.narrow(3, r0, T), kk.transpose(-1, -2)).mul_(d.softmax_scale);
    scores.masked_fill_(mask.logical_not(), -std::numeric_limits<float>::infinity());
    const auto l = at::logsumexp(scores, -1, /*keepdim=*/true);  // [B, Hkv, G, T, 1]
    auto probs = (scores - l).exp_().masked_fill_(mask.logical_not(), 0.0);
    const auto o = at::matmul(probs, vv);  // [B, Hkv, G, T, D]
    out_tile.copy_(o.permute({0, 3, 1, 2, 4}).reshape({B, T, Hq, D}));
    if (lse) lse->narrow(2, r0, T).copy_(l.squeeze(-1).reshape({B, Hq, T}));
  }
}

void attn_fwd_group_cpu(const std::vector<at::Tensor>& q, at::IntArrayRef num_segments,
                        const std::vector<at::Tensor>& k, const std::vector<at::Tensor>& v,
                        at::IntArrayRef row_begin, at::IntArrayRef diag,
                        std::optional<double> softmax_scale, const std::vector<at::Tensor>& out,
                        const std::vector<at::Tensor>& lse, const std::optional<at::Tensor>& ready,
                        at::IntArrayRef wait_for, const std::optional<at::Tensor>& sched,
                        const std::optional<at::Tensor>& done, bool finish, int64_t sm_budget,
                        int64_t spin_us, double timeout_s) {
  // sched, finish and the wait times only shape the CUDA schedule; the CPU op computes
  // everything in one call (a finishing call has nothing left to do).
  const auto args = check_attn_fwd_group(
      q, num_segments, k, v, row_begin, diag, softmax_scale, out, lse,
      AttnFwdGroupOverlap{ready, wait_for, sched, done, finish, sm_budget, spin_us, timeout_s});
  if (finish) return;
  for (size_t i = 0; i < args.size(); ++i) {
    const AttnFwdProblemArgs& a = args[i];
    // The CPU op runs now, on this thread: data a flag says has not landed is an error.
    SPAVA_CHECK_VALUE(a.wait_for < 0 || ready->select(0, a.wait_for).item<int>() != 0,
                      "attn_fwd_group", "problem ", i, " waits for ready[", a.wait_for,
                      "], which is 0 (the CPU op cannot wait for another stream)");
    attn_fwd_aten(q[i], a.k, a.v, a.row_begin, a.diag, softmax_scale, out[i], a.lse);
    if (done) done->select(0, int64_t(2 * i + 1)).fill_(1);
  }
}

void wait_flag_cpu(const at::Tensor& flag) {
  check_flag("wait_flag", flag);
  SPAVA_CHECK_VALUE(flag.flatten()[0].item<int>() != 0, "wait_flag",
                    "the flag is 0 and the CPU op cannot wait for another stream");
}

void set_flag_cpu(const at::Tensor& flag) {
  check_flag("set_flag", flag);
  flag.flatten()[0].fill_(1);
}

}  // namespace spava
