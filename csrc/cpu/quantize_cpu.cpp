// CPU implementation of spava::quantize_fp8: per block (b, j, h) of rows [j * block, +block),
// the fp32 operations of the CUDA kernel (kernels/quantize/quantize_kernel.cuh) in the same
// order, so both give the same bytes:
//   y = x, or with rotate the Walsh-Hadamard butterflies of x (stages h = 1, 2, ..., D / 2) times
//     fp32(1 / sqrt(D));
//   scale = amax(|y|) > 0 ? max(amax(|y|) / 448, 2^-126) : 1;  value = e4m3(clamp(y * (1 / scale),
//     -448, 448)) (round to nearest even).
#include <torch/headeronly/util/BFloat16.h>
#include <torch/headeronly/util/Float8_e4m3fn.h>
#include <torch/headeronly/util/Half.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <vector>

#include "checks.h"
#include "ops.h"

namespace spava {
namespace {

constexpr float kE4m3Max = 448.f;

// y[0, D) *= H_D (unnormalised), then * scale.
void fwht(float* y, int64_t D, float scale) {
  for (int64_t h = 1; h < D; h <<= 1)
    for (int64_t i = 0; i < D; ++i) {
      if (i & h) continue;
      const float a = y[i], b = y[i + h];
      y[i] = a + b;
      y[i + h] = a - b;
    }
  for (int64_t i = 0; i < D; ++i) y[i] *= scale;
}

uint8_t to_e4m3(float v) {
  return c10::Float8_e4m3fn(std::min(std::max(v, -kE4m3Max), kE4m3Max)).x;
}

struct QuantizeArgs {
  QuantizeFp8Dims d;
  bool rotate, transpose;
  float rotate_scale;
  IntArrayRef xs, ss;  // strides of x and scales
  uint8_t* values;
  float* scales;
};

// Block (b, j, h); y: scratch of block * D floats.
template <typename T>
void quantize_block(const QuantizeArgs& a, const T* x, int64_t b, int64_t j, int64_t h,
                    std::vector<float>& y) {
  const QuantizeFp8Dims& d = a.d;
  const int64_t D = d.head_dim, row0 = j * d.block, rows = std::min(d.block, d.len - row0);
  float amax = 0.f;
  for (int64_t r = 0; r < rows; ++r) {
    const T* src = x + b * a.xs[0] + (row0 + r) * a.xs[1] + h * a.xs[2];
    float* dst = y.data() + r * D;
    for (int64_t i = 0; i < D; ++i) dst[i] = static_cast<float>(src[i]);
    if (a.rotate) fwht(dst, D, a.rotate_scale);
    for (int64_t i = 0; i < D; ++i) amax = std::max(amax, std::fabs(dst[i]));
  }
  const float scale = amax > 0.f ? std::max(amax / kE4m3Max, FLT_MIN) : 1.f;
  const float inv = 1.f / scale;
  a.scales[b * a.ss[0] + j * a.ss[1] + h * a.ss[2]] = scale;
  if (!a.transpose) {
    for (int64_t r = 0; r < rows; ++r) {
      uint8_t* out = a.values + ((b * d.len + row0 + r) * d.heads + h) * D;
      for (int64_t i = 0; i < D; ++i) out[i] = to_e4m3(y[r * D + i] * inv);
    }
    return;
  }
  // [B, H, D, len_pad]; the last block also zeroes the pad columns [len, len_pad).
  const int64_t pad = j == d.num_blocks - 1 ? d.len_pad - d.len : 0;
  for (int64_t i = 0; i < D; ++i) {
    uint8_t* out = a.values + ((b * d.heads + h) * D + i) * d.len_pad + row0;
    for (int64_t r = 0; r < rows; ++r) out[r] = to_e4m3(y[r * D + i] * inv);
    std::fill_n(out + rows, pad, uint8_t(0));
  }
}

template <typename T>
void quantize_all(const QuantizeArgs& a, const Tensor& x) {
  const T* xp = x.const_data_ptr<T>();
  const QuantizeFp8Dims& d = a.d;
  torch::stable::parallel_for(0, d.batch * d.num_blocks * d.heads, 1, [&](int64_t lo, int64_t hi) {
    std::vector<float> y(std::min(d.block, d.len) * d.head_dim);
    for (int64_t it = lo; it < hi; ++it)  // it = (b * num_blocks + j) * heads + h
      quantize_block<T>(a, xp, it / (d.num_blocks * d.heads), (it / d.heads) % d.num_blocks,
                        it % d.heads, y);
  });
}

}  // namespace

void quantize_fp8_cpu(const Tensor& x, int64_t block, bool rotate, bool transpose,
                      const Tensor& values, const Tensor& scales) {
  const QuantizeArgs a{check_quantize_fp8(x, block, rotate, transpose, values, scales),
                       rotate,
                       transpose,
                       float(1.0 / std::sqrt(double(x.size(3)))),
                       x.strides(),
                       scales.strides(),
                       static_cast<uint8_t*>(values.mutable_data_ptr()),
                       scales.mutable_data_ptr<float>()};
  switch (x.scalar_type()) {  // check_quantize_fp8: bf16, fp16 or fp32
    case ScalarType::Float: return quantize_all<float>(a, x);
    case ScalarType::BFloat16: return quantize_all<c10::BFloat16>(a, x);
    default: return quantize_all<c10::Half>(a, x);
  }
}

}  // namespace spava
