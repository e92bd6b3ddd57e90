// The ATen implementation of spava::attn_fwd: segment-masked attention with fp32 math (ATen
// GEMMs), on any device: the CPU op, and the CUDA op's fallback on GPUs without the sm_90a
// kernels (attn_fwd_cuda.cpp).
//
// Query rows are processed in tiles; each tile scores every key it may see in one pass (no online
// rescaling on the CPU), skipping the keys of causal segments that lie past the tile's last row. Visibility: key j of segment s is seen by query row i
// iff i >= row_begin[s] && j <= i + diag[s]. Rows that see no key get out = 0, lse = -inf.
#include <algorithm>
#include <limits>

#include "checks.h"
#include "ops.h"

namespace spava {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// bool [T, Lk]: visibility of the concatenated segments for query rows [r0, r0 + T). Segment s:
// key j is seen by row r0 + t iff j - t <= r0 + diag[s] (tril) and r0 + t >= row_begin[s]
// (row_begin, diag: clamped by check_attn_fwd, so r0 + diag cannot overflow).
Tensor tile_mask(int64_t r0, int64_t T, const IntList& lens,
                 const IntList& row_begin, const IntList& diag,
                 const Device& device) {
  std::vector<Tensor> parts;
  for (size_t s = 0; s < lens.size(); ++s) {
    if (lens[s] == 0) continue;
    const Tensor ones = torch::stable::full({T, lens[s]}, 1.0, ScalarType::Bool, std::nullopt,
                                            device);
    const Tensor part = aten::tril(ones, r0 + diag[s]);
    const int64_t hidden_rows = std::clamp<int64_t>(row_begin[s] - r0, 0, T);
    if (hidden_rows > 0) torch::stable::fill_(aten::narrow(part, 0, 0, hidden_rows), 0.0);
    parts.push_back(part);
  }
  return aten::cat(parts, 1);
}

}  // namespace

void attn_fwd_aten(const Tensor& q, const std::vector<Tensor>& k, const std::vector<Tensor>& v,
                   const IntList& row_begin, const IntList& diag,
                   std::optional<double> softmax_scale, const Tensor& out,
                   const std::optional<Tensor>& lse) {
  const AttnFwdDims d = check_attn_fwd(q, k, v, row_begin, diag, softmax_scale, out, lse);
  const int64_t B = d.batch, Lq = d.q_len, Hq = d.heads_q, Hkv = d.heads_kv, D = d.head_dim;
  const int64_t G = Hq / Hkv;
  if (Lq == 0) return;
  using torch::stable::matmul;
  const Device device = q.device();
  // [B, Hkv, G, Lq, D]
  const Tensor qf = aten::permute(
      torch::stable::view(torch::stable::contiguous(aten::to(q, ScalarType::Float)),
                          {B, Lq, Hkv, G, D}),
      {0, 2, 3, 1, 4});
  std::vector<Tensor> kf, vf;  // [B, Hkv, 1, Ls, D] per segment, fp32
  int64_t total_keys = 0;
  for (size_t s = 0; s < k.size(); ++s) {
    kf.push_back(torch::stable::unsqueeze(
        aten::permute(aten::to(k[s], ScalarType::Float), {0, 2, 1, 3}), 2));
    vf.push_back(torch::stable::unsqueeze(
        aten::permute(aten::to(v[s], ScalarType::Float), {0, 2, 1, 3}), 2));
    total_keys += d.seg_lens[s];
  }
  const Tensor scale = aten::scalar(d.softmax_scale, ScalarType::Float, device);
  const Tensor neg_inf = aten::scalar(-kInf, ScalarType::Float, device);
  const Tensor zero = aten::scalar(0.0, ScalarType::Float, device);
  // Row tiles of at most 256 rows (so causal segments skip most masked keys), scores <= ~64 MB.
  const int64_t budget = (int64_t(64) << 20) / 4;
  const int64_t tile =
      std::clamp<int64_t>(budget / std::max<int64_t>(1, B * Hq * total_keys), 1, 256);
  for (int64_t r0 = 0; r0 < Lq; r0 += tile) {
    const int64_t T = std::min(tile, Lq - r0), last = r0 + T - 1;
    // Per segment, the prefix of keys that some row of the tile may see.
    std::vector<Tensor> ks, vs;
    std::vector<int64_t> lens, rb, dg;
    for (size_t s = 0; s < k.size(); ++s) {  // d.row_begin, d.diag: clamped, no overflow
      const int64_t n = last < d.row_begin[s] ? 0
                                              : std::clamp<int64_t>(last + d.diag[s] + 1, 0,
                                                                    d.seg_lens[s]);
      if (n == 0) continue;
      ks.push_back(aten::narrow(kf[s], 3, 0, n));
      vs.push_back(aten::narrow(vf[s], 3, 0, n));
      lens.push_back(n);
      rb.push_back(d.row_begin[s]);
      dg.push_back(d.diag[s]);
    }
    const Tensor out_tile = aten::narrow(out, 1, r0, T);
    if (ks.empty()) {  // no row of the tile sees any key
      aten::zero_(out_tile);
      if (lse) torch::stable::fill_(aten::narrow(*lse, 2, r0, T), -kInf);
      continue;
    }
    const Tensor kk = aten::cat(ks, 3), vv = aten::cat(vs, 3);  // [B, Hkv, 1, n, D]
    const Tensor hidden = aten::logical_not(tile_mask(r0, T, lens, rb, dg, device));  // [T, n]
    const Tensor scores =
        aten::mul_(matmul(aten::narrow(qf, 3, r0, T), torch::stable::transpose(kk, -1, -2)),
                   scale);
    aten::masked_fill_(scores, hidden, neg_inf);
    const Tensor l = aten::logsumexp(scores, -1, /*keepdim=*/true);  // [B, Hkv, G, T, 1]
    const Tensor probs = aten::masked_fill_(
        aten::exp_(torch::stable::subtract(scores, l)), hidden, zero);
    const Tensor o = matmul(probs, vv);  // [B, Hkv, G, T, D]
    aten::copy_(out_tile, torch::stable::reshape(aten::permute(o, {0, 3, 1, 2, 4}), {B, T, Hq, D}));
    if (lse) {
      aten::copy_(aten::narrow(*lse, 2, r0, T),
                  torch::stable::reshape(torch::stable::squeeze(l, -1), {B, Hq, T}));
    }
  }
}

void attn_fwd_group_cpu(const std::vector<Tensor>& q, const IntList& num_segments,
                        const std::vector<Tensor>& k, const std::vector<Tensor>& v,
                        const IntList& row_begin, const IntList& diag,
                        std::optional<double> softmax_scale, const std::vector<Tensor>& out,
                        const std::vector<Tensor>& lse, const std::optional<Tensor>& ready,
                        const IntList& wait_for, const std::optional<Tensor>& sched,
                        const std::optional<Tensor>& done, bool finish, int64_t sm_budget,
                        int64_t spin_us, double timeout_s, const IntList& spans,
                        const OptTensorList& q_scale, const OptTensorList& k_scale,
                        const OptTensorList& v_scale) {
  // sched, finish and the wait times only shape the CUDA schedule; the CPU op computes
  // everything in one call (a finishing call has nothing left to do).
  const auto args = check_attn_fwd_group(
      q, num_segments, k, v, row_begin, diag, softmax_scale, out, lse,
      AttnFwdGroupOverlap{ready, wait_for, sched, done, finish, sm_budget, spin_us, timeout_s},
      spans, AttnFwdFp8Scales{q_scale, k_scale, v_scale});
  if (finish) return;
  for (size_t i = 0; i < args.size(); ++i) {
    const AttnFwdProblemArgs& a = args[i];
    // The CPU op runs now, on this thread: data a flag says has not landed is an error.
    SPAVA_CHECK_VALUE(a.wait_for < 0 || ready->const_data_ptr<int>()[a.wait_for] != 0,
                      "attn_fwd_group", "problem ", i, " waits for ready[", a.wait_for,
                      "], which is 0 (the CPU op cannot wait for another stream)");
    if (a.q_scale) {
      attn_fwd_fp8_cpu(q[i], a, resolve_softmax_scale(softmax_scale, q[i].size(3)), out[i]);
    } else {
      attn_fwd_aten(q[i], a.k, a.v, a.row_begin, a.diag, softmax_scale, out[i], a.lse);
    }
    if (done) done->mutable_data_ptr<int>()[2 * i + 1] = 1;
  }
}

void wait_flag_cpu(const Tensor& flag) {
  check_flag("wait_flag", flag);
  SPAVA_CHECK_VALUE(flag.const_data_ptr<int>()[0] != 0, "wait_flag",
                    "the flag is 0 and the CPU op cannot wait for another stream");
}

void set_flag_cpu(const Tensor& flag) {
  check_flag("set_flag", flag);
  flag.mutable_data_ptr<int>()[0] = 1;
}

}  // namespace spava
