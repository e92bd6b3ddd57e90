// CUDA glue of spava::quantize_fp8: checks -> QuantizeFp8Params -> launch on the current stream.
#include <cmath>
#include <cstdint>

#include "checks.h"
#include "cuda_checks.h"
#include "cuda_context.h"
#include "dtype_map.h"
#include "ops.h"
#include "quantize/quantize.h"

namespace spava {

void quantize_fp8_cuda(const Tensor& x, int64_t block, bool rotate, bool transpose,
                       const Tensor& values, const Tensor& scales) {
  const char* op = "quantize_fp8";
  const QuantizeFp8Dims d = check_quantize_fp8(x, block, rotate, transpose, values, scales);
  SPAVA_CHECK_TYPE(x.scalar_type() == ScalarType::BFloat16 || x.scalar_type() == ScalarType::Half,
                   op, "CUDA takes bf16 or fp16 x, got ", x.scalar_type());
  SPAVA_CHECK_VALUE(d.head_dim % 8 == 0 && d.head_dim <= 512, op,
                    "CUDA needs head dim D % 8 == 0 and <= 512, got ", d.head_dim);
  SPAVA_CHECK_NOT_IMPLEMENTED(!rotate || d.head_dim <= kQuantizeMaxRotateDim, op,
                              "CUDA rotates head dims up to ", kQuantizeMaxRotateDim, ", got ",
                              d.head_dim);
  SPAVA_CHECK_VALUE(d.len < (int64_t(1) << 31) - 16 &&
                        d.batch * d.num_blocks * d.heads < (int64_t(1) << 31),
                    op, "x of shape ", dims_str(x.sizes()), " with block ", block,
                    " is too large (2^31 rows or blocks)");
  check_rows_aligned(op, "x", x);
  SPAVA_CHECK_VALUE(reinterpret_cast<uintptr_t>(values.const_data_ptr()) % 16 == 0, op,
                    "values must be 16-byte aligned");
  const DeviceGuard guard(x.get_device_index());

  QuantizeFp8Params p{};
  p.x = x.const_data_ptr();
  p.x_batch_stride = x.stride(0);
  p.x_row_stride = x.stride(1);
  p.x_head_stride = x.stride(2);
  p.values = static_cast<uint8_t*>(values.mutable_data_ptr());
  p.scales = scales.mutable_data_ptr<float>();
  p.scales_batch_stride = scales.stride(0);
  p.scales_block_stride = scales.stride(1);
  p.scales_head_stride = scales.stride(2);
  p.batch = int(d.batch);
  p.len = int(d.len);
  p.heads = int(d.heads);
  p.head_dim = int(d.head_dim);
  // One block of any size > len is the same as one of len_pad rows (a multiple of 4: the
  // kernel's word stores).
  p.block = int(d.num_blocks == 1 ? d.len_pad : d.block);
  p.num_blocks = int(d.num_blocks);
  p.len_pad = int(d.len_pad);
  p.rotate = rotate;
  p.transpose = transpose;
  p.rotate_scale = float(1.0 / std::sqrt(double(d.head_dim)));
  p.dtype = to_dtype(x.scalar_type());
  run_quantize_fp8(p, current_stream(x.get_device_index()));
}

}  // namespace spava
