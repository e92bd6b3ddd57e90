// run_attn_fwd: runtime (dtype, head dim) -> the compiled instantiation.
#include <string>

#include <algorithm>

#include "attn_fwd/attn_fwd.h"
#include "attn_fwd/config.h"
#include "attn_fwd/mask.cuh"
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
void run_for_dtype(const AttnFwdParams& params, cudaStream_t stream) {
  switch (params.head_dim) {
#ifndef SPAVA_DISABLE_HDIM64
    case 64: return run_attn_fwd_sm90_<T, 64>(params, stream);
#endif
#ifndef SPAVA_DISABLE_HDIM80
    case 80: return run_attn_fwd_sm90_<T, 80>(params, stream);
#endif
#ifndef SPAVA_DISABLE_HDIM128
    case 128: return run_attn_fwd_sm90_<T, 128>(params, stream);
#endif
    default: break;
  }
  throw std::invalid_argument("spava::attn_fwd: head dim " + std::to_string(params.head_dim) +
                              " is not compiled in this build");
}

}  // namespace

void plan_attn_fwd(AttnFwdParams& p, int num_sms) {
  const int kBlockM = attn::attn_block_m(p.head_dim);  // tiles of config.h
  constexpr int kBlockN = attn::kAttnBlockN;
  int base_units = 0;  // units without split-KV
  for (int i = 0; i < p.num_problems; ++i) {
    AttnProblem& pr = p.problems[i];
    pr.m_blocks = (pr.q_len + kBlockM - 1) / kBlockM;
    base_units += pr.m_blocks * p.heads_q * p.batch;
  }
  p.num_units = 0;
  for (int i = 0; i < p.num_problems; ++i) {
    AttnProblem& pr = p.problems[i];
    pr.num_splits = 1;
    // (not with a sched workspace: the partials of a split must not span two launches; not
    // with done flags: the merge after the kernel would write rows already reported done)
    if (p.sched == nullptr && pr.done == nullptr && base_units > 0 && base_units < num_sms &&
        pr.m_blocks > 0) {
      // the longest query tile (the last one) bounds the useful split
      const int tiles = attn::SegmentMask::total_tiles<kBlockN>(
          p, pr, (pr.m_blocks - 1) * kBlockM, pr.q_len - 1);
      const int want = (2 * num_sms + base_units - 1) / base_units;  // about two waves
      pr.num_splits = std::max(1, std::min({want, tiles / 4, 32}));
    }
    pr.unit_begin = p.num_units;
    p.num_units += pr.m_blocks * pr.num_splits * p.heads_q * p.batch;
  }
}

void prepare_attn_fwd() {
  AttnFwdParams p{};  // no units: each instantiation only prepares its kernel
  for (int i = 0; i < kNumAttnFwdHeadDims; ++i) {
    p.head_dim = kAttnFwdHeadDims[i];
    run_for_dtype<cutlass::bfloat16_t>(p, nullptr);
    run_for_dtype<cutlass::half_t>(p, nullptr);
  }
}

void run_attn_fwd(const AttnFwdParams& params, cudaStream_t stream) {
  switch (params.dtype) {
    case DType::kBFloat16: return run_for_dtype<cutlass::bfloat16_t>(params, stream);
    case DType::kFloat16: return run_for_dtype<cutlass::half_t>(params, stream);
    default: break;
  }
  throw std::invalid_argument("spava::attn_fwd: CUDA kernels take bf16 or fp16 inputs");
}

}  // namespace spava
