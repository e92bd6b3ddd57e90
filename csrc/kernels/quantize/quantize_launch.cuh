// Launch template of quantize_fp8: one CTA of kQuantThreads per block (b, j, h), h fastest (the
// CTAs running together read neighbouring rows of x).
#pragma once

#include <cutlass/numeric_types.h>

#include "quantize/quantize.h"
#include "quantize/quantize_kernel.cuh"
#include "spava/check.h"
#include "spava/static_switch.h"

namespace spava {

template <typename T>
void launch_quantize_fp8(const QuantizeFp8Params& p, cudaStream_t stream) {
  const int64_t ctas = int64_t(p.batch) * p.num_blocks * p.heads;
  const int rows_per_round = kQuantThreads / (p.head_dim / kQuantVec);
  // Transposed: the shared tile of one window of rows (<= 24 KB for head_dim <= 512).
  const int tile_bytes = p.transpose ? kQuantRounds * rows_per_round * (p.head_dim + 4) : 0;
  SPAVA_BOOL_SWITCH(p.rotate, kRotate, [&] {
    SPAVA_BOOL_SWITCH(p.transpose, kTranspose, [&] {
      quantize_fp8_kernel<T, kRotate, kTranspose>
          <<<dim3(unsigned(ctas)), kQuantThreads, tile_bytes, stream>>>(p);
    });
  });
  SPAVA_CUDA_CHECK(cudaGetLastError());
}

}  // namespace spava
