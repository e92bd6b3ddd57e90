// run_quantize_fp8: runtime dtype -> the compiled instantiation.
#include "quantize/quantize.h"
#include "spava/static_switch.h"

namespace spava {

void run_quantize_fp8(const QuantizeFp8Params& params, cudaStream_t stream) {
  if (int64_t(params.batch) * params.num_blocks * params.heads == 0) return;
  SPAVA_HALF_DTYPE_SWITCH(params.dtype, T, [&] { run_quantize_fp8_<T>(params, stream); });
}

}  // namespace spava
