// CPU implementation of spava::merge_states (fp32 math, the lse.h merge).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include "checks.h"
#include "ops.h"
#include "spava/lse.h"

namespace spava {

void merge_states_cpu(const at::Tensor& outs, const at::Tensor& lses, const at::Tensor& out,
                      const std::optional<at::Tensor>& lse) {
  const int64_t n = check_merge_states(outs, lses, out, lse);
  const int64_t B = outs.size(1), R = outs.size(2), H = outs.size(3), D = outs.size(4);
  const auto o = outs.to(at::kFloat).contiguous();  // [n, B, R, H, D]
  const auto l = lses.contiguous();                  // [n, B, H, R]
  auto merged = at::empty({B, R, H, D}, o.options());
  auto merged_lse = at::empty({B, H, R}, o.options());
  const float* op = o.const_data_ptr<float>();
  const float* lp = l.const_data_ptr<float>();
  float* mp = merged.mutable_data_ptr<float>();
  float* mlp = merged_lse.mutable_data_ptr<float>();
  const int64_t part_o = B * R * H * D, part_l = B * H * R;
  at::parallel_for(0, B * R * H, 16, [&](int64_t lo, int64_t hi) {
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
  out.copy_(merged);
  if (lse) lse->copy_(merged_lse);
}

}  // namespace spava
