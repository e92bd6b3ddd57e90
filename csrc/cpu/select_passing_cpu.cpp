// CPU implementation of spava::select_passing: score, max-pool, top-k (tie rule), gather.
//
// For chunk c, batch b, kv head h (independent work items):
//   qsum[d]   = sum over question rows t and the G heads of the group of q[b, t, h*G+g, d]  (fp32)
//   score[j]  = sum_d k[b, start+j, h, d] * qsum[d]                                          (fp32)
// (docs/design.md scores with the mean; the sum is nq*G times it, so the selection is the same,
//  and with small-integer inputs every implementation computes bit-identical scores.)
//   smooth[j] = max of score over [j - pk/2, j + pk/2] clipped to the chunk
//   keep the m = min(passing_len, len) largest smooth values; equal values: lower j first.
// NaN (docs/design.md "Non-finite inputs"): a window holding a NaN score pools to NaN, and NaN
// ranks above every number (as in torch.sort / topk); NaNs rank among themselves by position.
// Outputs: indices[c, b, h, :m] = kept positions along k's dim 1, ascending, -1 after;
//          kv[c, i, 0/1, b, h, :] = k/v row of the i-th kept position, zeros after.
#include <torch/headeronly/util/BFloat16.h>
#include <torch/headeronly/util/Half.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "checks.h"
#include "ops.h"

namespace spava {
namespace {

// The selection's order on scores: a strict weak order in which NaN ranks above every number.
bool ranks_below(float a, float b) { return std::isnan(b) ? !std::isnan(a) : a < b; }

template <typename T>
void select_one(const SelectPassingDims& d, const T* q, IntArrayRef qs, const T* k,
                IntArrayRef ks, const T* v, IntArrayRef vs, int64_t c, int64_t b,
                int64_t h, int64_t start, int64_t len, int64_t m, int64_t pool_kernel,
                int64_t* indices, T* kv) {
  const int64_t G = d.heads_q / d.heads_kv, D = d.head_dim;
  std::vector<float> qsum(D, 0.f);
  for (int64_t t = 0; t < d.q_len; ++t)
    for (int64_t g = 0; g < G; ++g) {
      const T* row = q + b * qs[0] + t * qs[1] + (h * G + g) * qs[2];
      for (int64_t i = 0; i < D; ++i) qsum[i] += static_cast<float>(row[i]);
    }

  std::vector<int64_t> keep(len);
  std::iota(keep.begin(), keep.end(), int64_t(0));
  if (m < len) {  // else every position is kept: no scoring needed
    std::vector<float> score(len), smooth(len);
    for (int64_t j = 0; j < len; ++j) {
      const T* row = k + b * ks[0] + (start + j) * ks[1] + h * ks[2];
      float acc = 0.f;
      for (int64_t i = 0; i < D; ++i) acc += static_cast<float>(row[i]) * qsum[i];
      score[j] = acc;
    }
    const int64_t half = pool_kernel / 2;
    for (int64_t j = 0; j < len; ++j) {
      const int64_t lo = std::max<int64_t>(0, j - half), hi = std::min(len - 1, j + half);
      smooth[j] = *std::max_element(score.begin() + lo, score.begin() + hi + 1, ranks_below);
    }
    // Stable descending sort on smooth: equal values keep position order (lower first).
    std::stable_sort(keep.begin(), keep.end(),
                     [&](int64_t a, int64_t b2) { return ranks_below(smooth[b2], smooth[a]); });
    keep.resize(m);
    std::sort(keep.begin(), keep.end());
  }
  const int64_t H = d.heads_kv, B = d.batch, cap = d.capacity;
  int64_t* idx = indices + ((c * B + b) * H + h) * cap;
  for (int64_t i = 0; i < cap; ++i) {
    T* dst_k = kv + (((c * cap + i) * 2 + 0) * B + b) * H * D + h * D;
    T* dst_v = kv + (((c * cap + i) * 2 + 1) * B + b) * H * D + h * D;
    if (i < m) {
      const int64_t pos = start + keep[i];
      idx[i] = pos;
      std::copy_n(k + b * ks[0] + pos * ks[1] + h * ks[2], D, dst_k);
      std::copy_n(v + b * vs[0] + pos * vs[1] + h * vs[2], D, dst_v);
    } else {
      idx[i] = -1;
      std::fill_n(dst_k, D, T(0));
      std::fill_n(dst_v, D, T(0));
    }
  }
}

// select_one over every (chunk, batch, kv head), in parallel.
template <typename T>
void select_all(const SelectPassingDims& d, const Tensor& q, const Tensor& k, const Tensor& v,
                const IntList& chunk_starts, const IntList& chunk_lens,
                int64_t passing_len, int64_t pool_kernel, const Tensor& indices,
                const Tensor& kv) {
  const int64_t items = d.num_chunks * d.batch * d.heads_kv;
  const T *qp = q.const_data_ptr<T>(), *kp = k.const_data_ptr<T>(), *vp = v.const_data_ptr<T>();
  const IntArrayRef qs = q.strides(), ks = k.strides(), vs = v.strides();
  int64_t* ip = indices.mutable_data_ptr<int64_t>();
  T* kvp = kv.mutable_data_ptr<T>();
  torch::stable::parallel_for(0, items, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t it = lo; it < hi; ++it) {
      const int64_t h = it % d.heads_kv, b = (it / d.heads_kv) % d.batch;
      const int64_t c = it / (d.heads_kv * d.batch);
      const int64_t len = chunk_lens[c], m = std::min(passing_len, len);
      select_one<T>(d, qp, qs, kp, ks, vp, vs, c, b, h, chunk_starts[c], len, m, pool_kernel, ip,
                    kvp);
    }
  });
}

}  // namespace

void select_passing_cpu(const Tensor& q, const Tensor& k, const Tensor& v,
                        const IntList& chunk_starts,
                        const IntList& chunk_lens, int64_t passing_len,
                        int64_t pool_kernel, const Tensor& indices, const Tensor& kv) {
  const SelectPassingDims d = check_select_passing(q, k, v, chunk_starts, chunk_lens, passing_len,
                                                   pool_kernel, indices, kv);
  switch (q.scalar_type()) {  // check_select_passing: bf16, fp16 or fp32
    case ScalarType::Float:
      return select_all<float>(d, q, k, v, chunk_starts, chunk_lens, passing_len, pool_kernel,
                               indices, kv);
    case ScalarType::BFloat16:
      return select_all<c10::BFloat16>(d, q, k, v, chunk_starts, chunk_lens, passing_len,
                                       pool_kernel, indices, kv);
    default:
      return select_all<c10::Half>(d, q, k, v, chunk_starts, chunk_lens, passing_len,
                                   pool_kernel, indices, kv);
  }
}

}  // namespace spava
