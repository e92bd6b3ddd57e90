// run_attn_decode: runtime (dtype, head dim) -> the compiled instantiation.
#include <stdexcept>
#include <string>

#include "attn_decode/attn_decode.h"
#include "spava/check.h"
#include "spava/static_switch.h"

namespace spava {
namespace {

template <typename T>
void run_for_dtype(const AttnDecodeParams& params, cudaStream_t stream) {
  switch (params.args.head_dim) {
#ifndef SPAVA_DISABLE_HDIM64
    case 64: return run_attn_decode_<T, 64>(params, stream);
#endif
#ifndef SPAVA_DISABLE_HDIM80
    case 80: return run_attn_decode_<T, 80>(params, stream);
#endif
#ifndef SPAVA_DISABLE_HDIM128
    case 128: return run_attn_decode_<T, 128>(params, stream);
#endif
    default: break;
  }
  throw std::invalid_argument("spava::attn_fwd (decode): head dim " +
                              std::to_string(params.args.head_dim) +
                              " is not compiled in this build");
}

}  // namespace

void run_attn_decode(const AttnFwdArgs& args, const AttnDecodePlan& plan, float* workspace,
                     cudaStream_t stream) {
  SPAVA_HOST_CHECK(plan.workspace_floats == 0 || workspace != nullptr,
                   "attn_decode: the plan needs a workspace of " +
                       std::to_string(plan.workspace_floats) + " floats, got nullptr");
  AttnDecodeParams p{};
  p.args = args;
  p.plan = plan;
  if (plan.num_splits > 1) {
    const size_t items = size_t(args.batch) * args.problems[0].q_len * args.heads_q;
    p.split_out = workspace;
    p.split_lse = workspace + items * plan.num_splits * args.head_dim;
  }
  SPAVA_HALF_DTYPE_SWITCH(args.dtype, T, [&] { run_for_dtype<T>(p, stream); });
}

}  // namespace spava
