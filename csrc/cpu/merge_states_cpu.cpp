// CPU implementation of spava::merge_states (fp32 math, the lse.h merge).
#include <algorithm>
#include <cmath>

#include "checks.h"
#include "ops.h"
#include "spava/lse.h"

namespace spava {

void merge_states_cpu(const Tensor& outs, const Tensor& lses, const Tensor& out,
                      const std::optional<Tensor>& lse) {
  const int64_t n = check_merge_states(outs, lses, out, lse);
  const int64_t B = outs.size(1), R = outs.size(2), H = outs.size(3), D = outs.size(4);
  const Tensor o = torch::stable::contiguous(aten::to(outs, ScalarType::Float));  // [n, B, R, H, D]
  const Tensor l = torch::stable::contiguous(lses);                               // [n, B, H, R]
  const Tensor merged = torch::stable::empty({B, R, H, D}, ScalarType::Float, std::nullopt,
                                             outs.device());
  const Tensor merged_lse = torch::stable::empty({B, H, R}, ScalarType::Float, std::nullopt,
                                                 outs.device());
  const float* op = o.const_data_ptr<float>();
  const float* lp = l.const_data_ptr<float>();
  float* mp = merged.mutable_data_ptr<float>();
  float* mlp = merged_lse.mutable_data_ptr<float>();
  const int64_t part_o = B * R * H * D, part_l = B * H * R;
  torch::stable::parallel_for(0, B * R * H, 16, [&](int64_t lo, int64_t hi) {
    for (int64_t it = lo; it < hi; ++it) {  // it = (b * R + r) * H + h
      const int64_t h = it % H, r = (it / H) % R, b = it / (H * R);
      const int64_t li = (b * H + h) * R + r;
      float total = -INFINITY;
      for (int64_t p = 0; p < n; ++p) total = lse_combine(total, lp[p * part_l + li]);
      float* dst = mp + it * D;
      std::fill_n(dst, D, 0.f);
      for (int64_t p = 0; p < n; ++p) {
        const float w = lse_weight(lp[p * part_l + li], total);
        const float* src = op + p * part_o + it * D;
        for (int64_t i = 0; i < D; ++i) dst[i] += w * src[i];
      }
      mlp[li] = total;
    }
  });
  aten::copy_(out, merged);
  if (lse) aten::copy_(*lse, merged_lse);
}

}  // namespace spava
