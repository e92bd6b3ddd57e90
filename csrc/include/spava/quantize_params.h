// Parameters of quantize_fp8 (kernels/quantize): per-block e4m3 quantisation of one tensor for
// the FP8 attention path (python/spava_ext/fp8.py states the scheme). Strides are in elements.
#pragma once

#include <cstdint>

#include "spava/dtype.h"

namespace spava {

// Block (b, j, h) is rows [j * block, min((j + 1) * block, len)) of head h of batch b. With
// y = x, or y = fwht(x) * rotate_scale when rotate (the Walsh-Hadamard butterflies of
// quantize_kernel.cuh, in fp32), each block gets
//   scale = amax(|y|) > 0 ? max(amax(|y|) / 448, 2^-126) : 1   (fp32 IEEE division)
//   value = e4m3_rne_satfinite(y * (1 / scale))                (1 / scale: fp32 IEEE division)
struct QuantizeFp8Params {
  const void* x;  // [batch, len, heads, head_dim], dtype; last dim contiguous, rows 16-byte aligned
  int64_t x_batch_stride, x_row_stride, x_head_stride;
  // e4m3 bytes, contiguous: [batch, len, heads, head_dim], or with transpose
  // [batch, heads, head_dim, len_pad] (len_pad = ceil(len / 16) * 16, columns >= len zero)
  uint8_t* values;
  float* scales;  // [batch, num_blocks, heads] fp32
  int64_t scales_batch_stride, scales_block_stride, scales_head_stride;
  int batch, len, heads, head_dim;  // head_dim % 8 == 0; a power of two <= 256 with rotate
  int block, num_blocks, len_pad;   // num_blocks = ceil(len / block); len_pad only with transpose
  bool rotate, transpose;
  float rotate_scale;  // fp32(1 / sqrt(head_dim)), the Hadamard matrix's normalisation
  DType dtype;         // bf16 or fp16
};

}  // namespace spava
