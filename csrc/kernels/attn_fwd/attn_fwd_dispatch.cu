// run_attn_fwd: runtime (dtype, head dim) -> the compiled instantiation.
#include <atomic>
#include <stdexcept>
#include <string>

#include "attn_fwd/attn_fwd.h"
#include "attn_fwd/config.h"
#include "spava/static_switch.h"

namespace spava {

const int kAttnFwdHeadDims[] = {
#ifndef SPAVA_DISABLE_HDIM64
    64,
#endif
#ifndef SPAVA_DISABLE_HDIM80
    80,
#endif
#ifndef SPAVA_DISABLE_HDIM128
    128,
#endif
};
const int kNumAttnFwdHeadDims = sizeof(kAttnFwdHeadDims) / sizeof(int);

namespace {

template <typename T>
void run_for_dtype(const AttnFwdParams& params, cudaStream_t stream, const char* trace_file) {
  switch (params.head_dim) {
#ifndef SPAVA_DISABLE_HDIM64
    case 64: return run_attn_fwd_sm90_<T, 64>(params, stream, trace_file);
#endif
#ifndef SPAVA_DISABLE_HDIM80
    case 80: return run_attn_fwd_sm90_<T, 80>(params, stream, trace_file);
#endif
#ifndef SPAVA_DISABLE_HDIM128
    case 128: return run_attn_fwd_sm90_<T, 128>(params, stream, trace_file);
#endif
    default: break;
  }
  throw std::invalid_argument("spava::attn_fwd: head dim " + std::to_string(params.head_dim) +
                              " is not compiled in this build");
}

}  // namespace

namespace {
constexpr int kMaxDevices = 64;
std::atomic<int> g_max_pairs[kMaxDevices];  // per device, recorded by the launchers
}  // namespace

void set_attn_fwd_max_pairs(int device, int pairs) {
  if (device >= 0 && device < kMaxDevices) {
    // the smallest over the kernels loaded so far (all run one CTA per SM): stored + 1
    const int prev = g_max_pairs[device].load();
    if (prev == 0 || pairs + 1 < prev) g_max_pairs[device].store(pairs + 1);
  }
}

int attn_fwd_max_pairs(const AttnFwdCommonArgs& like) {
  AttnFwdParams p{};  // no units: loads the kernel of like's dtype and head dim, which records
  p.dtype = like.dtype;
  p.head_dim = like.head_dim;
  run_attn_fwd(p, nullptr, nullptr);
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess || device < 0 || device >= kMaxDevices) return 0;
  const int recorded = g_max_pairs[device].load();
  return recorded > 0 ? recorded - 1 : 0;
}

void prepare_attn_fwd() {
  AttnFwdParams p{};  // no units: each instantiation only prepares its kernel
  for (int i = 0; i < kNumAttnFwdHeadDims; ++i) {
    p.head_dim = kAttnFwdHeadDims[i];
    run_for_dtype<cutlass::bfloat16_t>(p, nullptr, nullptr);
    run_for_dtype<cutlass::half_t>(p, nullptr, nullptr);
  }
}

void run_attn_fwd(const AttnFwdParams& params, cudaStream_t stream, const char* trace_file) {
  switch (params.dtype) {
    case DType::kBFloat16: return run_for_dtype<cutlass::bfloat16_t>(params, stream, trace_file);
    case DType::kFloat16: return run_for_dtype<cutlass::half_t>(params, stream, trace_file);
    default: break;
  }
  throw std::invalid_argument("spava::attn_fwd: CUDA kernels take bf16 or fp16 inputs");
}

}  // namespace spava
