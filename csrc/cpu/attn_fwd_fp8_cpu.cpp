// The CPU implementation of attn_fwd_group's FP8 problems: the arithmetic of
// docs/kernels/attn_fp8.md (python/spava_ext/fp8.py attn_fwd is its torch statement), one query
// row at a time. Key tiles follow the quantisation blocks of each segment's source: a tile is
// the rows of one block that the segment holds, so each tile has one K and one V scale. A tile
// is visited when some row of the problem sees one of its keys; every row then takes it (rows
// that see none of its keys only follow the running V-scale maximum M, as the kernel's rows do).
#include <torch/headeronly/util/BFloat16.h>
#include <torch/headeronly/util/Float8_e4m3fn.h>
#include <torch/headeronly/util/Half.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <vector>

#include "checks.h"
#include "ops.h"
#include "spava/attn_params.h"

namespace spava {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// e4m3 byte -> float, for every byte (a table: decoding dominates the inner loops otherwise).
const std::array<float, 256>& e4m3_table() {
  static const std::array<float, 256> table = [] {
    std::array<float, 256> t{};
    for (int b = 0; b < 256; ++b)
      t[b] = static_cast<float>(c10::Float8_e4m3fn(uint8_t(b), c10::Float8_e4m3fn::from_bits()));
    return t;
  }();
  return table;
}
float round_e4m3(float x) { return static_cast<float>(c10::Float8_e4m3fn(x)); }

struct Tile {
  size_t seg;
  int64_t a, e, block;  // segment keys [a, e), all in block `block` of the source
};

// The visited tiles of one problem with Lq query rows, in key order.
std::vector<Tile> visited_tiles(const std::vector<Fp8Segment>& segs, int64_t Lq) {
  std::vector<Tile> tiles;
  for (size_t s = 0; s < segs.size(); ++s) {
    const Fp8Segment& g = segs[s];
    if (Lq - 1 < g.row_begin) continue;  // no row sees the segment
    for (int64_t blk = g.first / kFp8Block; blk * kFp8Block < g.first + g.rows; ++blk) {
      const int64_t a = std::max(g.first, blk * kFp8Block) - g.first;
      const int64_t e = std::min(g.first + g.rows, (blk + 1) * kFp8Block) - g.first;
      if (a <= Lq - 1 + g.diag) tiles.push_back({s, a, e, blk});  // the last row sees key a
    }
  }
  return tiles;
}

template <typename T>
void run(const Tensor& q, const AttnFwdProblemArgs& a, double softmax_scale, const Tensor& out) {
  const int64_t B = q.size(0), Lq = q.size(1), Hq = q.size(2), D = q.size(3);
  const auto& segs = a.fp8;
  const int64_t Hkv = segs.empty() ? Hq : segs[0].k.size(2), G = Hq / Hkv;
  const std::vector<Tile> tiles = visited_tiles(segs, Lq);
  const uint8_t* qp = static_cast<const uint8_t*>(q.const_data_ptr());
  const float* qsp = a.q_scale->const_data_ptr<float>();
  const IntArrayRef qst = q.strides(), qsst = a.q_scale->strides(), ost = out.strides();
  T* op = out.mutable_data_ptr<T>();
  float* lp = a.lse ? a.lse->mutable_data_ptr<float>() : nullptr;
  const IntArrayRef lst = a.lse ? a.lse->strides() : IntArrayRef();
  const float c = float(softmax_scale * std::log2(std::exp(1.0)));
  const std::array<float, 256>& dec = e4m3_table();
  torch::stable::parallel_for(0, B * Hq * Lq, 16, [&](int64_t lo, int64_t hi) {
    std::vector<float> qrow(D), o(D), x(kFp8Block), p(kFp8Block), p8(kFp8Block);
    for (int64_t r = lo; r < hi; ++r) {
      const int64_t b = r / (Hq * Lq), h = (r / Lq) % Hq, i = r % Lq, hk = h / G;
      const uint8_t* qr = qp + b * qst[0] + i * qst[1] + h * qst[2];
      for (int64_t d = 0; d < D; ++d) qrow[d] = dec[qr[d]];
      const float qsc = qsp[b * qsst[0] + i * qsst[1] + h * qsst[2]] * c;
      float m = kNegInf, l = 0.f, vmax = 0.f;
      std::fill(o.begin(), o.end(), 0.f);
      for (const Tile& t : tiles) {
        const Fp8Segment& g = segs[t.seg];
        const IntArrayRef kst = g.k.strides(), vst = g.vt.strides();
        const IntArrayRef kss = g.k_scale.strides(), vss = g.v_scale.strides();
        const float ks = g.k_scale.const_data_ptr<float>()[b * kss[0] + t.block * kss[1] +
                                                             hk * kss[2]];
        const float vs = g.v_scale.const_data_ptr<float>()[b * vss[0] + t.block * vss[1] +
                                                             hk * vss[2]];
        const uint8_t* kp = static_cast<const uint8_t*>(g.k.const_data_ptr());
        const uint8_t* vp = static_cast<const uint8_t*>(g.vt.const_data_ptr());
        const float sc = qsc * ks;
        const bool row_sees = i >= g.row_begin;
        float rowmax = kNegInf;
        const int64_t n = t.e - t.a;
        for (int64_t j = 0; j < n; ++j) {
          const int64_t key = t.a + j;
          x[j] = kNegInf;
          if (!row_sees || key > i + g.diag) continue;
          const uint8_t* kr = kp + b * kst[0] + (g.first + key) * kst[1] + hk * kst[2];
          float s = 0.f;
          for (int64_t d = 0; d < D; ++d) s += qrow[d] * dec[kr[d]];
          x[j] = s * sc;
          rowmax = std::max(rowmax, x[j]);
        }
        const float m_new = std::max(m, rowmax);
        const float base = m_new == kNegInf ? 0.f : m_new;
        const float vmax_new = std::max(vmax, vs), ratio = vs / vmax_new;
        const float lr = std::log2(ratio), alpha = std::exp2(m - base);
        float sum = 0.f;
        for (int64_t j = 0; j < n; ++j) {
          p[j] = std::exp2(x[j] - base + lr);
          sum += p[j];
          p8[j] = round_e4m3(p[j]);
        }
        l = l * alpha + sum / ratio;
        const float fac = alpha * vmax / vmax_new;
        for (int64_t d = 0; d < D; ++d) {
          const uint8_t* vr = vp + b * vst[0] + hk * vst[1] + d * vst[2] +
                              (g.first + t.a) * vst[3];
          float acc = 0.f;
          for (int64_t j = 0; j < n; ++j) acc += p8[j] * dec[vr[j * vst[3]]];
          o[d] = o[d] * fac + acc;
        }
        m = m_new;
        vmax = vmax_new;
      }
      T* orow = op + b * ost[0] + i * ost[1] + h * ost[2];
      for (int64_t d = 0; d < D; ++d) orow[d] = static_cast<T>(l == 0.f ? 0.f : o[d] * vmax / l);
      if (lp) {
        lp[b * lst[0] + h * lst[1] + i * lst[2]] =
            l == 0.f ? kNegInf : (m + std::log2(l)) * float(std::log(2.0));
      }
    }
  });
}

}  // namespace

void attn_fwd_fp8_cpu(const Tensor& q, const AttnFwdProblemArgs& a, double softmax_scale,
                      const Tensor& out) {
  switch (out.scalar_type()) {
    case ScalarType::Float: return run<float>(q, a, softmax_scale, out);
    case ScalarType::BFloat16: return run<c10::BFloat16>(q, a, softmax_scale, out);
    default: return run<c10::Half>(q, a, softmax_scale, out);
  }
}

}  // namespace spava
