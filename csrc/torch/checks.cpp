// Argument validation for every spava op (device-independent part).
#include "checks.h"

#include "spava/attn_params.h"

#include <algorithm>
#include <cmath>
#include <utility>

namespace spava {

std::string dims_str(IntArrayRef v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
  return s + "]";
}

std::string device_str(const Device& d) {
  const std::string type = d.is_cpu()    ? "cpu"
                           : d.is_cuda() ? "cuda"
                                         : str("device_type_", int(d.type()));
  return d.has_index() ? str(type, ":", int(d.index())) : type;
}

std::string shape_str(const Tensor& t) { return dims_str(t.sizes()); }

bool is_attn_dtype(ScalarType t) {
  return t == ScalarType::BFloat16 || t == ScalarType::Half || t == ScalarType::Float;
}

namespace {

// Bounds of attn_fwd_group's wait times: their nanoseconds fit in int64 with room to spare.
constexpr int64_t kMaxSpinUs = 1000000000;
constexpr double kMaxTimeoutS = 1e6;

}  // namespace

double resolve_softmax_scale(std::optional<double> softmax_scale, int64_t head_dim) {
  return softmax_scale.value_or(1.0 / std::sqrt(double(head_dim)));
}

AttnFwdDims check_attn_fwd(const Tensor& q, const std::vector<Tensor>& k,
                           const std::vector<Tensor>& v, IntArrayRef row_begin,
                           IntArrayRef diag, std::optional<double> softmax_scale,
                           const Tensor& out, const std::optional<Tensor>& lse) {
  SPAVA_CHECK_VALUE(q.dim() == 4, "attn_fwd", "q must be [B, Lq, Hq, D], got shape ",
                    shape_str(q));
  SPAVA_CHECK_TYPE(is_attn_dtype(q.scalar_type()), "attn_fwd",
                   "q must be bf16, fp16 or fp32, got ", q.scalar_type());
  SPAVA_CHECK_VALUE(q.stride(3) == 1, "attn_fwd", "q's last dim must be contiguous, stride ",
                    q.stride(3));
  const auto S = k.size();
  SPAVA_CHECK_VALUE(v.size() == S && row_begin.size() == S && diag.size() == S, "attn_fwd",
                    "k, v, row_begin and diag must have one entry per segment, got ", S, ", ",
                    v.size(), ", ", row_begin.size(), ", ", diag.size());
  AttnFwdDims d{q.size(0), q.size(1), q.size(2), q.size(2), q.size(3), 0.0, {}, {}, {}};
  SPAVA_CHECK_VALUE(d.head_dim >= 1, "attn_fwd", "head dim D must be >= 1, got ", d.head_dim);
  for (size_t s = 0; s < S; ++s) {
    const Tensor& ks = k[s];
    const Tensor& vs = v[s];
    SPAVA_CHECK_VALUE(ks.dim() == 4, "attn_fwd", "k[", s, "] must be [B, Lk, Hkv, D], got ",
                      shape_str(ks));
    SPAVA_CHECK_VALUE(vs.sizes().equals(ks.sizes()), "attn_fwd", "v[", s, "] shape ", shape_str(vs),
                      " != k[", s, "] shape ", shape_str(ks));
    SPAVA_CHECK_TYPE(ks.scalar_type() == q.scalar_type() && vs.scalar_type() == q.scalar_type(),
                     "attn_fwd", "k[", s, "]/v[", s, "] dtype ", ks.scalar_type(), "/",
                     vs.scalar_type(), " != q dtype ", q.scalar_type());
    SPAVA_CHECK_VALUE(ks.device() == q.device() && vs.device() == q.device(), "attn_fwd", "k[",
                      s, "] is on ", device_str(ks.device()), ", q on ", device_str(q.device()));
    SPAVA_CHECK_VALUE(ks.size(0) == d.batch && ks.size(3) == d.head_dim, "attn_fwd", "k[", s,
                      "] shape ", shape_str(ks), " does not match q shape ", shape_str(q));
    if (s == 0) d.heads_kv = ks.size(2);
    SPAVA_CHECK_VALUE(ks.size(2) == d.heads_kv, "attn_fwd", "k[", s, "] has ", ks.size(2),
                      " kv heads, k[0] has ", d.heads_kv);
    SPAVA_CHECK_VALUE(ks.stride(3) == 1 && vs.stride(3) == 1, "attn_fwd", "k[", s, "]/v[", s,
                      "] last dim must be contiguous");
    d.seg_lens.push_back(ks.size(1));
    d.row_begin.push_back(std::clamp<int64_t>(row_begin[s], 0, d.q_len));
    d.diag.push_back(std::clamp<int64_t>(diag[s], -d.q_len, ks.size(1)));
  }
  SPAVA_CHECK_VALUE(d.heads_kv >= 1, "attn_fwd", "Hkv (k's dim 2) must be >= 1, got ",
                    d.heads_kv);
  SPAVA_CHECK_VALUE(d.heads_q % d.heads_kv == 0, "attn_fwd", "Hq = ",
                    d.heads_q, " is not a multiple of Hkv = ", d.heads_kv);
  SPAVA_CHECK_VALUE(out.dim() == 4 && out.size(0) == d.batch && out.size(1) == d.q_len &&
                        out.size(2) == d.heads_q && out.size(3) == d.head_dim,
                    "attn_fwd", "out must be [B, Lq, Hq, D] = ", shape_str(q), ", got ",
                    shape_str(out));
  SPAVA_CHECK_TYPE(out.scalar_type() == q.scalar_type() || out.scalar_type() == ScalarType::Float,
                   "attn_fwd", "out dtype must be q's (", q.scalar_type(), ") or fp32, got ",
                   out.scalar_type());
  SPAVA_CHECK_VALUE(out.device() == q.device() && out.stride(3) == 1, "attn_fwd",
                    "out must be on q's device with a contiguous last dim");
  if (lse.has_value()) {
    const Tensor& l = *lse;
    SPAVA_CHECK_VALUE(l.dim() == 3 && l.size(0) == d.batch && l.size(1) == d.heads_q &&
                          l.size(2) == d.q_len,
                      "attn_fwd", "lse must be [B, Hq, Lq] = [", d.batch, ", ", d.heads_q, ", ",
                      d.q_len, "], got ", shape_str(l));
    SPAVA_CHECK_TYPE(l.scalar_type() == ScalarType::Float, "attn_fwd", "lse must be fp32, got ",
                     l.scalar_type());
    SPAVA_CHECK_VALUE(l.device() == q.device(), "attn_fwd", "lse is on ", device_str(l.device()),
                      ", q on ", device_str(q.device()));
  }
  d.softmax_scale = resolve_softmax_scale(softmax_scale, d.head_dim);
  SPAVA_CHECK_VALUE(std::isfinite(d.softmax_scale) && d.softmax_scale > 0, "attn_fwd",
                    "softmax_scale must be finite and > 0, got ", d.softmax_scale);
  return d;
}

namespace {

// The overlap arguments of a group of P problems on `device`.
void check_group_overlap(const AttnFwdGroupOverlap& ov, size_t P, const Device& device) {
  SPAVA_CHECK_VALUE(ov.wait_for.empty() || ov.wait_for.size() == P, "attn_fwd_group",
                    "wait_for must be empty or have one entry per problem (", P, "), got ",
                    ov.wait_for.size());
  SPAVA_CHECK_VALUE(ov.sm_budget >= 0, "attn_fwd_group", "sm_budget must be >= 0, got ",
                    ov.sm_budget);
  SPAVA_CHECK_VALUE(ov.spin_us >= 0 && ov.spin_us <= kMaxSpinUs, "attn_fwd_group",
                    "spin_us must be in [0, ", kMaxSpinUs, "], got ", ov.spin_us);
  SPAVA_CHECK_VALUE(ov.timeout_s > 0 && ov.timeout_s <= kMaxTimeoutS, "attn_fwd_group",
                    "timeout_s must be in (0, ", kMaxTimeoutS, "], got ", ov.timeout_s);
  SPAVA_CHECK_VALUE(!ov.finish || ov.sched.has_value(), "attn_fwd_group",
                    "finish=True needs the sched workspace of the first call");
  if (ov.sched.has_value()) {
    const Tensor& s = *ov.sched;
    SPAVA_CHECK_TYPE(s.scalar_type() == ScalarType::Int && s.dim() == 1 && s.is_contiguous() &&
                         s.numel() >= kAttnSchedInts,
                     "attn_fwd_group", "sched must be a contiguous int32 tensor of at least ",
                     kAttnSchedInts, " elements, got ", s.scalar_type(), " ", shape_str(s));
    SPAVA_CHECK_VALUE(s.device() == device, "attn_fwd_group", "sched is on ",
                      device_str(s.device()), ", q on ", device_str(device));
  }
  if (ov.ready.has_value()) {
    const Tensor& r = *ov.ready;
    SPAVA_CHECK_TYPE(r.scalar_type() == ScalarType::Int && r.dim() == 1 && r.is_contiguous(),
                     "attn_fwd_group", "ready must be a contiguous 1-D int32 tensor, got ",
                     r.scalar_type(), " ", shape_str(r));
    SPAVA_CHECK_VALUE(r.device() == device, "attn_fwd_group", "ready is on ",
                      device_str(r.device()), ", q on ", device_str(device));
  }
  if (ov.done.has_value()) {
    const Tensor& d = *ov.done;
    SPAVA_CHECK_TYPE(d.scalar_type() == ScalarType::Int && d.dim() == 1 && d.is_contiguous() &&
                         d.numel() == int64_t(2 * P),
                     "attn_fwd_group", "done must be a contiguous int32 tensor of 2 * ", P,
                     " elements, got ", d.scalar_type(), " ", shape_str(d));
    SPAVA_CHECK_VALUE(d.device() == device, "attn_fwd_group", "done is on ",
                      device_str(d.device()), ", q on ", device_str(device));
  }
}

// check() of problem i, its errors (attn_fwd's checks) restated as attn_fwd_group's.
template <typename F>
AttnFwdDims as_group_error(size_t i, F&& check) {
  const auto reason = [](const torch::PyTorchError& e) {
    const std::string prefix = "spava::attn_fwd: ", m = e.msg;
    return m.rfind(prefix, 0) == 0 ? m.substr(prefix.size()) : m;
  };
  try {
    return check();
  } catch (const TypeError& e) {
    throw TypeError(str("spava::attn_fwd_group: problem ", i, ": ", reason(e)));
  } catch (const ValueError& e) {
    throw ValueError(str("spava::attn_fwd_group: problem ", i, ": ", reason(e)));
  }
}

// The key segments that `spans` (three ints per segment: source, first row, rows) cut from the
// sources k[source] / v[source] ([B, L, Hkv, D]) along dim 1, as views.
std::pair<std::vector<Tensor>, std::vector<Tensor>> span_views(const std::vector<Tensor>& k,
                                                               const std::vector<Tensor>& v,
                                                               IntArrayRef spans, int64_t total) {
  SPAVA_CHECK_VALUE(spans.size() == size_t(3 * total), "attn_fwd_group",
                    "spans must have 3 entries per segment (3 * ", total, "), got ",
                    spans.size());
  SPAVA_CHECK_VALUE(k.size() == v.size(), "attn_fwd_group", "k and v must have one source each, got ",
                    k.size(), " and ", v.size());
  std::vector<Tensor> ks, vs;
  ks.reserve(total);
  vs.reserve(total);
  for (int64_t s = 0; s < total; ++s) {
    const int64_t src = spans[3 * s], first = spans[3 * s + 1], rows = spans[3 * s + 2];
    SPAVA_CHECK_VALUE(src >= 0 && size_t(src) < k.size(), "attn_fwd_group", "span ", s,
                      " names source ", src, ", there are ", k.size());
    const Tensor& ksrc = k[src];
    const Tensor& vsrc = v[src];
    SPAVA_CHECK_VALUE(ksrc.dim() == 4 && vsrc.dim() == 4 && vsrc.size(1) == ksrc.size(1),
                      "attn_fwd_group", "sources k[", src, "] ", shape_str(ksrc), " and v[", src,
                      "] ", shape_str(vsrc), " must be [B, L, Hkv, D] of equal L");
    SPAVA_CHECK_VALUE(first >= 0 && rows >= 0 && first <= ksrc.size(1) - rows, "attn_fwd_group",
                      "span ", s, " = rows [", first, ", ", first, " + ", rows, ") of source ", src,
                      ", which has ", ksrc.size(1), " rows");
    ks.push_back(aten::narrow(ksrc, 1, first, rows));
    vs.push_back(aten::narrow(vsrc, 1, first, rows));
  }
  return {std::move(ks), std::move(vs)};
}

std::vector<AttnFwdProblemArgs> check_group_problems(
    const std::vector<Tensor>& q, IntArrayRef num_segments, const std::vector<Tensor>& k,
    const std::vector<Tensor>& v, IntArrayRef row_begin, IntArrayRef diag,
    std::optional<double> softmax_scale, const std::vector<Tensor>& out,
    const std::vector<Tensor>& lse, IntArrayRef spans, int64_t total);

}  // namespace

std::vector<AttnFwdProblemArgs> check_attn_fwd_group(
    const std::vector<Tensor>& q, IntArrayRef num_segments,
    const std::vector<Tensor>& k, const std::vector<Tensor>& v,
    IntArrayRef row_begin, IntArrayRef diag, std::optional<double> softmax_scale,
    const std::vector<Tensor>& out, const std::vector<Tensor>& lse,
    const AttnFwdGroupOverlap& ov, IntArrayRef spans, const AttnFwdFp8Scales& fp8) {
  const size_t P = q.size();
  SPAVA_CHECK_VALUE(P >= 1 && P <= size_t(kMaxAttnProblems), "attn_fwd_group", "needs 1 to ",
                    kMaxAttnProblems, " problems, got ", P);
  SPAVA_CHECK_VALUE(num_segments.size() == P && out.size() == P && lse.size() == P, "attn_fwd_group",
                    "q, num_segments, out and lse must have one entry per problem, got ", P, ", ",
                    num_segments.size(), ", ", out.size(), ", ", lse.size());
  check_group_overlap(ov, P, q[0].device());
  int64_t total = 0;
  for (const auto n : num_segments) {
    SPAVA_CHECK_VALUE(n >= 0, "attn_fwd_group", "num_segments entries must be >= 0, got ", n);
    SPAVA_CHECK_VALUE(!__builtin_add_overflow(total, n, &total), "attn_fwd_group",
                      "sum(num_segments) overflows int64: ", dims_str(num_segments));
  }
  SPAVA_CHECK_VALUE(row_begin.size() == size_t(total) && diag.size() == size_t(total),
                    "attn_fwd_group", "sum(num_segments) = ", total, " but row_begin, diag have ",
                    row_begin.size(), ", ", diag.size(), " entries");
  std::vector<AttnFwdProblemArgs> args =
      fp8.on() ? check_fp8_group(q, num_segments, k, v, row_begin, diag, softmax_scale, out, lse,
                                 spans, fp8, total)
               : check_group_problems(q, num_segments, k, v, row_begin, diag, softmax_scale,
                                      out, lse, spans, total);
  for (size_t i = 0; i < P && !ov.wait_for.empty(); ++i) {
    AttnFwdProblemArgs& a = args[i];
    a.wait_for = ov.wait_for[i];
    const int64_t flags = ov.ready.has_value() ? ov.ready->numel() : 0;
    SPAVA_CHECK_VALUE(a.wait_for >= -1, "attn_fwd_group", "wait_for[", i,
                      "] must be -1 or a flag index, got ", a.wait_for);
    SPAVA_CHECK_VALUE(a.wait_for < flags, "attn_fwd_group", "wait_for[", i, "] = ", a.wait_for,
                      " but ready has ", flags, " flags");
  }
  return args;
}

namespace {

// The bf16 / fp16 / fp32 problems of attn_fwd_group (check_attn_fwd per problem).
std::vector<AttnFwdProblemArgs> check_group_problems(
    const std::vector<Tensor>& q, IntArrayRef num_segments, const std::vector<Tensor>& k,
    const std::vector<Tensor>& v, IntArrayRef row_begin, IntArrayRef diag,
    std::optional<double> softmax_scale, const std::vector<Tensor>& out,
    const std::vector<Tensor>& lse, IntArrayRef spans, int64_t total) {
  const size_t P = q.size();
  std::pair<std::vector<Tensor>, std::vector<Tensor>> views;
  if (!spans.empty()) views = span_views(k, v, spans, total);
  const std::vector<Tensor>& ks = spans.empty() ? k : views.first;
  const std::vector<Tensor>& vs = spans.empty() ? v : views.second;
  SPAVA_CHECK_VALUE(ks.size() == size_t(total) && vs.size() == size_t(total), "attn_fwd_group",
                    "sum(num_segments) = ", total, " but k, v have ", k.size(), ", ", v.size(),
                    " entries");
  std::vector<AttnFwdProblemArgs> args(P);
  int64_t s0 = 0, heads_kv = -1;
  for (size_t i = 0; i < P; ++i) {
    AttnFwdProblemArgs& a = args[i];
    const int64_t n = num_segments[i];
    a.k.assign(ks.begin() + s0, ks.begin() + s0 + n);
    a.v.assign(vs.begin() + s0, vs.begin() + s0 + n);
    a.row_begin.assign(row_begin.begin() + s0, row_begin.begin() + s0 + n);
    a.diag.assign(diag.begin() + s0, diag.begin() + s0 + n);
    s0 += n;
    if (lse[i].numel() > 0 || lse[i].dim() == 3) a.lse = lse[i];
    const AttnFwdDims d = as_group_error(i, [&] {
      return check_attn_fwd(q[i], a.k, a.v, a.row_begin, a.diag, softmax_scale, out[i], a.lse);
    });
    SPAVA_CHECK_VALUE(q[i].scalar_type() == q[0].scalar_type() && q[i].device() == q[0].device() &&
                          q[i].size(0) == q[0].size(0) && q[i].size(2) == q[0].size(2) &&
                          q[i].size(3) == q[0].size(3),
                      "attn_fwd_group", "problem ", i, ": q ", shape_str(q[i]), " ",
                      q[i].scalar_type(), " does not match problem 0's ", shape_str(q[0]), " ",
                      q[0].scalar_type(), " (batch, heads, head dim, dtype, device)");
    if (n > 0) {
      if (heads_kv < 0) heads_kv = d.heads_kv;
      SPAVA_CHECK_VALUE(d.heads_kv == heads_kv, "attn_fwd_group", "problem ", i, " has ",
                        d.heads_kv, " kv heads, an earlier problem has ", heads_kv);
    }
  }
  return args;
}

}  // namespace

void check_flag(const char* op, const Tensor& flag) {
  SPAVA_CHECK_TYPE(flag.scalar_type() == ScalarType::Int && flag.numel() >= 1 &&
                       flag.is_contiguous(),
                   op, "flag must be a contiguous int32 tensor, got ", flag.scalar_type(), " ",
                   shape_str(flag));
}

SelectPassingDims check_select_passing(const Tensor& q, const Tensor& k,
                                       const Tensor& v, IntArrayRef chunk_starts,
                                       IntArrayRef chunk_lens, int64_t passing_len,
                                       int64_t pool_kernel, const Tensor& indices,
                                       const Tensor& kv) {
  SPAVA_CHECK_VALUE(q.dim() == 4 && q.size(1) >= 1, "select_passing",
                    "q (question rows) must be [B, nq >= 1, Hq, D], got ", shape_str(q));
  SPAVA_CHECK_VALUE(k.dim() == 4 && v.sizes().equals(k.sizes()), "select_passing",
                    "k and v must be [B, Lk, Hkv, D] of equal shape, got ", shape_str(k), " and ",
                    shape_str(v));
  SPAVA_CHECK_TYPE(is_attn_dtype(q.scalar_type()) && k.scalar_type() == q.scalar_type() &&
                       v.scalar_type() == q.scalar_type(),
                   "select_passing", "q, k, v must share a bf16/fp16/fp32 dtype, got ",
                   q.scalar_type(), ", ", k.scalar_type(), ", ", v.scalar_type());
  SPAVA_CHECK_VALUE(k.device() == q.device() && v.device() == q.device() &&
                        indices.device() == q.device() && kv.device() == q.device(),
                    "select_passing", "all tensors must be on q's device ", device_str(q.device()));
  SelectPassingDims d{q.size(0), q.size(1), q.size(2), k.size(2), q.size(3), k.size(1),
                      int64_t(chunk_starts.size()), 0};
  SPAVA_CHECK_VALUE(k.size(0) == d.batch && k.size(3) == d.head_dim, "select_passing", "k shape ",
                    shape_str(k), " does not match q shape ", shape_str(q));
  SPAVA_CHECK_VALUE(d.heads_kv >= 1, "select_passing", "Hkv (k's dim 2) must be >= 1, got ",
                    d.heads_kv);
  SPAVA_CHECK_VALUE(d.head_dim >= 1, "select_passing", "head dim D must be >= 1, got ",
                    d.head_dim);
  SPAVA_CHECK_VALUE(d.heads_q % d.heads_kv == 0, "select_passing", "Hq = ",
                    d.heads_q, " is not a multiple of Hkv = ", d.heads_kv);
  SPAVA_CHECK_VALUE(q.stride(3) == 1 && k.stride(3) == 1 && v.stride(3) == 1, "select_passing",
                    "q, k, v must have a contiguous last dim");
  SPAVA_CHECK_VALUE(chunk_lens.size() == chunk_starts.size(), "select_passing",
                    "chunk_starts has ", chunk_starts.size(), " entries, chunk_lens ",
                    chunk_lens.size());
  SPAVA_CHECK_VALUE(passing_len >= 1, "select_passing", "passing_len must be >= 1, got ",
                    passing_len);
  SPAVA_CHECK_VALUE(pool_kernel >= 1 && pool_kernel % 2 == 1, "select_passing",
                    "pool_kernel must be odd and >= 1, got ", pool_kernel);
  int64_t need = 0;
  for (int64_t c = 0; c < d.num_chunks; ++c) {
    // start + len may overflow: compare len with the room left after start instead.
    const int64_t start = chunk_starts[c], len = chunk_lens[c];
    int64_t end = 0;
    const bool wraps = __builtin_add_overflow(start, len, &end);
    SPAVA_CHECK_VALUE(start >= 0 && len >= 0 && start <= d.kv_len && len <= d.kv_len - start,
                      "select_passing", "chunk ", c, " = [", start, ", ",
                      wraps ? std::to_string(start) + " + " + std::to_string(len)
                            : std::to_string(end),
                      ") does not fit in Lk = ", d.kv_len);
    need = std::max(need, std::min(passing_len, chunk_lens[c]));
  }
  SPAVA_CHECK_VALUE(indices.dim() == 4 && indices.size(0) == d.num_chunks &&
                        indices.size(1) == d.batch && indices.size(2) == d.heads_kv &&
                        indices.size(3) >= need,
                    "select_passing", "indices must be [C, B, Hkv, cap >= ", need, "] = [",
                    d.num_chunks, ", ", d.batch, ", ", d.heads_kv, ", >=", need, "], got ",
                    shape_str(indices));
  SPAVA_CHECK_TYPE(indices.scalar_type() == ScalarType::Long, "select_passing",
                   "indices must be int64, got ", indices.scalar_type());
  d.capacity = indices.size(3);
  SPAVA_CHECK_VALUE(kv.dim() == 6 && kv.size(0) == d.num_chunks && kv.size(1) == d.capacity &&
                        kv.size(2) == 2 && kv.size(3) == d.batch && kv.size(4) == d.heads_kv &&
                        kv.size(5) == d.head_dim,
                    "select_passing", "kv must be [C, cap, 2, B, Hkv, D] = [", d.num_chunks, ", ",
                    d.capacity, ", 2, ", d.batch, ", ", d.heads_kv, ", ", d.head_dim, "], got ",
                    shape_str(kv));
  SPAVA_CHECK_TYPE(kv.scalar_type() == k.scalar_type(), "select_passing", "kv dtype ",
                   kv.scalar_type(), " != k dtype ", k.scalar_type());
  SPAVA_CHECK_VALUE(kv.is_contiguous() && indices.is_contiguous(), "select_passing",
                    "kv and indices must be contiguous (they are collective send buffers)");
  return d;
}

int64_t check_merge_states(const Tensor& outs, const Tensor& lses, const Tensor& out,
                           const std::optional<Tensor>& lse) {
  SPAVA_CHECK_VALUE(outs.dim() == 5 && outs.size(0) >= 1, "merge_states",
                    "outs must be [n >= 1, B, R, H, D], got ", shape_str(outs));
  const int64_t n = outs.size(0), B = outs.size(1), R = outs.size(2), H = outs.size(3);
  SPAVA_CHECK_VALUE(lses.dim() == 4 && lses.size(0) == n && lses.size(1) == B &&
                        lses.size(2) == H && lses.size(3) == R,
                    "merge_states", "lses must be [n, B, H, R] = [", n, ", ", B, ", ", H, ", ", R,
                    "], got ", shape_str(lses));
  SPAVA_CHECK_TYPE(lses.scalar_type() == ScalarType::Float, "merge_states",
                   "lses must be fp32, got ", lses.scalar_type());
  SPAVA_CHECK_TYPE(is_attn_dtype(outs.scalar_type()) && is_attn_dtype(out.scalar_type()),
                   "merge_states", "outs/out must be bf16, fp16 or fp32, got ",
                   outs.scalar_type(), "/", out.scalar_type());
  SPAVA_CHECK_VALUE(out.dim() == 4 && out.sizes().equals(outs.sizes().slice(1)), "merge_states",
                    "out must be [B, R, H, D] = ", dims_str(outs.sizes().slice(1)), ", got ",
                    shape_str(out));
  SPAVA_CHECK_VALUE(outs.stride(4) == 1 && out.stride(3) == 1, "merge_states",
                    "outs and out must have a contiguous last dim");
  SPAVA_CHECK_VALUE(lses.device() == outs.device() && out.device() == outs.device(),
                    "merge_states", "all tensors must be on outs' device ",
                    device_str(outs.device()));
  if (lse.has_value()) {
    SPAVA_CHECK_VALUE(lse->sizes().equals(lses.sizes().slice(1)), "merge_states",
                      "lse must be [B, H, R] = ", dims_str(lses.sizes().slice(1)), ", got ",
                      shape_str(*lse));
    SPAVA_CHECK_TYPE(lse->scalar_type() == ScalarType::Float, "merge_states",
                     "lse must be fp32, got ", lse->scalar_type());
    SPAVA_CHECK_VALUE(lse->device() == outs.device(), "merge_states", "lse is on ",
                      device_str(lse->device()), ", outs on ", device_str(outs.device()));
  }
  return n;
}

QuantizeFp8Dims check_quantize_fp8(const Tensor& x, int64_t block, bool rotate, bool transpose,
                                   const Tensor& values, const Tensor& scales) {
  const char* op = "quantize_fp8";
  SPAVA_CHECK_VALUE(x.dim() == 4, op, "x must be [B, L, H, D], got shape ", shape_str(x));
  SPAVA_CHECK_TYPE(is_attn_dtype(x.scalar_type()), op, "x must be bf16, fp16 or fp32, got ",
                   x.scalar_type());
  SPAVA_CHECK_VALUE(block >= 1, op, "block must be >= 1, got ", block);
  const int64_t B = x.size(0), L = x.size(1), H = x.size(2), D = x.size(3);
  SPAVA_CHECK_VALUE(D >= 1 && x.stride(3) == 1, op,
                    "x needs head dim D >= 1 and a contiguous last dim, got shape ", shape_str(x),
                    ", strides ", dims_str(x.strides()));
  SPAVA_CHECK_VALUE(!rotate || (D & (D - 1)) == 0, op,
                    "rotate needs a head dim D that is a power of two (the Hadamard order), got ",
                    D);
  const QuantizeFp8Dims d{B, L, H, D, block, (L + block - 1) / block, (L + 15) / 16 * 16};
  const std::vector<int64_t> want_values =
      transpose ? std::vector<int64_t>{B, H, D, d.len_pad} : std::vector<int64_t>{B, L, H, D};
  SPAVA_CHECK_VALUE(values.sizes().equals(IntArrayRef(want_values)), op, "values must be ",
                    transpose ? "[B, H, D, ceil(L / 16) * 16] = " : "[B, L, H, D] = ",
                    dims_str(IntArrayRef(want_values)), ", got ", shape_str(values));
  SPAVA_CHECK_TYPE(values.scalar_type() == ScalarType::Float8_e4m3fn, op,
                   "values must be float8_e4m3fn, got ", values.scalar_type());
  SPAVA_CHECK_VALUE(values.is_contiguous(), op, "values must be contiguous, got strides ",
                    dims_str(values.strides()));
  const std::vector<int64_t> want_scales{B, d.num_blocks, H};
  SPAVA_CHECK_VALUE(scales.sizes().equals(IntArrayRef(want_scales)), op,
                    "scales must be [B, ceil(L / block), H] = ", dims_str(IntArrayRef(want_scales)),
                    ", got ", shape_str(scales));
  SPAVA_CHECK_TYPE(scales.scalar_type() == ScalarType::Float, op, "scales must be fp32, got ",
                   scales.scalar_type());
  SPAVA_CHECK_VALUE(values.device() == x.device() && scales.device() == x.device(), op,
                    "values and scales must be on x's device ", device_str(x.device()), ", got ",
                    device_str(values.device()), " and ", device_str(scales.device()));
  return d;
}

}  // namespace spava
