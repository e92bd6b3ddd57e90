// Argument validation of attn_fwd_group's FP8 operands (docs/kernels/attn_fp8.md).
#include <algorithm>
#include <cmath>

#include "checks.h"
#include "spava/attn_params.h"

namespace spava {
namespace {

constexpr const char* kOp = "attn_fwd_group";

// A [B, rows, heads] fp32 scale tensor on `device`.
void check_scale(const Tensor& s, const char* name, size_t i, int64_t B, int64_t rows,
                 int64_t heads, const Device& device) {
  SPAVA_CHECK_TYPE(s.scalar_type() == ScalarType::Float, kOp, name, "[", i,
                   "] must be fp32, got ", s.scalar_type());
  SPAVA_CHECK_VALUE(s.dim() == 3 && s.size(0) == B && s.size(1) == rows && s.size(2) == heads,
                    kOp, name, "[", i, "] must be [", B, ", ", rows, ", ", heads, "], got ",
                    shape_str(s));
  SPAVA_CHECK_VALUE(s.device() == device, kOp, name, "[", i, "] is on ", device_str(s.device()),
                    ", q on ", device_str(device));
}

// Source s: k [B, L, Hkv, D] and vt [B, Hkv, D, L_pad >= L] e4m3 with their block scales.
void check_source(const Tensor& k, const Tensor& vt, const Tensor& ks, const Tensor& vs,
                  size_t s, int64_t B, int64_t D, int64_t& heads_kv, const Device& device) {
  SPAVA_CHECK_TYPE(k.scalar_type() == ScalarType::Float8_e4m3fn &&
                       vt.scalar_type() == ScalarType::Float8_e4m3fn,
                   kOp, "FP8: k[", s, "] and v[", s, "] must be float8_e4m3fn, got ",
                   k.scalar_type(), " and ", vt.scalar_type());
  SPAVA_CHECK_VALUE(k.dim() == 4 && k.size(0) == B && k.size(3) == D, kOp, "FP8: k[", s,
                    "] must be [B, L, Hkv, D] with B = ", B, ", D = ", D, ", got ", shape_str(k));
  if (heads_kv < 0) heads_kv = k.size(2);
  SPAVA_CHECK_VALUE(k.size(2) == heads_kv, kOp, "FP8: k[", s, "] has ", k.size(2),
                    " kv heads, k[0] has ", heads_kv);
  SPAVA_CHECK_VALUE(vt.dim() == 4 && vt.size(0) == B && vt.size(1) == heads_kv &&
                        vt.size(2) == D && vt.size(3) >= k.size(1),
                    kOp, "FP8: v[", s, "] must be transposed [B, Hkv, D, L_pad >= L] = [", B,
                    ", ", heads_kv, ", ", D, ", >= ", k.size(1), "], got ", shape_str(vt));
  SPAVA_CHECK_VALUE(k.stride(3) == 1 && vt.stride(3) == 1, kOp, "FP8: k[", s, "] and v[", s,
                    "] need a contiguous last dim");
  SPAVA_CHECK_VALUE(k.device() == device && vt.device() == device, kOp, "FP8: k[", s,
                    "] is on ", device_str(k.device()), ", q on ", device_str(device));
  const int64_t blocks = (k.size(1) + kFp8Block - 1) / kFp8Block;
  check_scale(ks, "k_scale", s, B, blocks, heads_kv, device);
  check_scale(vs, "v_scale", s, B, blocks, heads_kv, device);
}

}  // namespace

std::vector<AttnFwdProblemArgs> check_fp8_group(
    const std::vector<Tensor>& q, IntArrayRef num_segments, const std::vector<Tensor>& k,
    const std::vector<Tensor>& v, IntArrayRef row_begin, IntArrayRef diag,
    std::optional<double> softmax_scale, const std::vector<Tensor>& out,
    const std::vector<Tensor>& lse, IntArrayRef spans, const AttnFwdFp8Scales& fp8,
    int64_t total) {
  const size_t P = q.size(), S = k.size();
  SPAVA_CHECK_VALUE(fp8.q_scale.size() == P, kOp, "FP8: q_scale must have one entry per problem (",
                    P, "), got ", fp8.q_scale.size());
  SPAVA_CHECK_VALUE(v.size() == S && fp8.k_scale.size() == S && fp8.v_scale.size() == S, kOp,
                    "FP8: k, v, k_scale and v_scale must have one entry per source, got ", S, ", ",
                    v.size(), ", ", fp8.k_scale.size(), ", ", fp8.v_scale.size());
  const Tensor& q0 = q[0];
  SPAVA_CHECK_VALUE(q0.dim() == 4, kOp, "FP8: q[0] must be [B, Lq, Hq, D], got ", shape_str(q0));
  const int64_t B = q0.size(0), Hq = q0.size(2), D = q0.size(3);
  const Device device = q0.device();
  int64_t heads_kv = -1;
  for (size_t s = 0; s < S; ++s)
    check_source(k[s], v[s], fp8.k_scale[s], fp8.v_scale[s], s, B, D, heads_kv, device);
  SPAVA_CHECK_VALUE(heads_kv < 0 || (heads_kv >= 1 && Hq % heads_kv == 0), kOp, "FP8: Hq = ", Hq,
                    " is not a multiple of Hkv = ", heads_kv);
  if (spans.empty()) {
    SPAVA_CHECK_VALUE(S == size_t(total), kOp, "FP8: sum(num_segments) = ", total,
                      " but k, v have ", S, " entries");
  } else {
    SPAVA_CHECK_VALUE(spans.size() == size_t(3 * total), kOp,
                      "spans must have 3 entries per segment (3 * ", total, "), got ",
                      spans.size());
  }
  const double scale = resolve_softmax_scale(softmax_scale, D);
  SPAVA_CHECK_VALUE(std::isfinite(scale) && scale > 0, kOp,
                    "softmax_scale must be finite and > 0, got ", scale);
  std::vector<AttnFwdProblemArgs> args(P);
  int64_t s0 = 0;
  for (size_t i = 0; i < P; ++i) {
    AttnFwdProblemArgs& a = args[i];
    const Tensor& qi = q[i];
    SPAVA_CHECK_TYPE(qi.scalar_type() == ScalarType::Float8_e4m3fn, kOp, "FP8: q[", i,
                     "] must be float8_e4m3fn, got ", qi.scalar_type());
    SPAVA_CHECK_VALUE(qi.dim() == 4 && qi.size(0) == B && qi.size(2) == Hq && qi.size(3) == D &&
                          qi.stride(3) == 1 && qi.device() == device,
                      kOp, "FP8: q[", i, "] ", shape_str(qi), " does not match q[0] ",
                      shape_str(q0),
                      " (batch, heads, head dim, device; last dim contiguous)");
    const int64_t Lq = qi.size(1);
    check_scale(fp8.q_scale[i], "q_scale", i, B, Lq, Hq, device);
    a.q_scale = fp8.q_scale[i];
    const Tensor& o = out[i];
    SPAVA_CHECK_TYPE(is_attn_dtype(o.scalar_type()), kOp, "FP8: out[", i,
                     "] must be bf16, fp16 or fp32, got ", o.scalar_type());
    SPAVA_CHECK_VALUE(o.dim() == 4 && o.size(0) == B && o.size(1) == Lq && o.size(2) == Hq &&
                          o.size(3) == D && o.stride(3) == 1 && o.device() == device,
                      kOp, "FP8: out[", i, "] must be [B, Lq, Hq, D] = ", shape_str(qi),
                      " on q's device with a contiguous last dim, got ", shape_str(o));
    if (lse[i].numel() > 0 || lse[i].dim() == 3) {
      const Tensor& l = lse[i];
      SPAVA_CHECK_VALUE(l.dim() == 3 && l.size(0) == B && l.size(1) == Hq && l.size(2) == Lq &&
                            l.scalar_type() == ScalarType::Float && l.device() == device,
                        kOp, "FP8: lse[", i, "] must be fp32 [", B, ", ", Hq, ", ", Lq,
                        "] on q's device, got ", shape_str(l));
      a.lse = l;
    }
    for (int64_t j = s0; j < s0 + num_segments[i]; ++j) {
      const int64_t src = spans.empty() ? j : spans[3 * j];
      SPAVA_CHECK_VALUE(src >= 0 && size_t(src) < S, kOp, "span ", j, " names source ", src,
                        ", there are ", S);
      const int64_t L = k[src].size(1);
      const int64_t first = spans.empty() ? 0 : spans[3 * j + 1];
      const int64_t rows = spans.empty() ? L : spans[3 * j + 2];
      SPAVA_CHECK_VALUE(first >= 0 && rows >= 0 && first <= L - rows, kOp, "span ", j,
                        " = rows [", first, ", ", first, " + ", rows, ") of source ", src,
                        ", which has ", L, " rows");
      if (rows == 0) continue;
      a.fp8.push_back({k[src], v[src], fp8.k_scale[src], fp8.v_scale[src], first, rows,
                       std::clamp<int64_t>(row_begin[j], 0, Lq),
                       std::clamp<int64_t>(diag[j], -Lq, rows)});
    }
    s0 += num_segments[i];
  }
  return args;
}

}  // namespace spava
