// The one definition of the softmax-state merge used by every kernel and CPU implementation.
//
// A partial attention state over a key set S is (o, lse) with
//   lse = log(sum_{j in S} exp(s_j))            natural log, fp32; -inf when S is empty
//   o   = sum_{j in S} exp(s_j - lse) * v_j     normalised; 0 when S is empty
// Merging disjoint parts p: lse = log(sum_p exp(lse_p)), o = sum_p exp(lse_p - lse) * o_p.
// Empty parts (lse_p = -inf) weigh exactly 0; if every part is empty the result is (0, -inf),
// never NaN. Kernels may work in log2 internally but convert to natural log at their boundary.
#pragma once

#include <cmath>

#if defined(__CUDACC__)
#define SPAVA_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define SPAVA_HOST_DEVICE inline
#endif

namespace spava {

// log(exp(a) + exp(b)), exact for -inf operands.
SPAVA_HOST_DEVICE float lse_combine(float a, float b) {
  const float hi = a > b ? a : b;
  const float lo = a > b ? b : a;
  if (hi == -INFINITY) return -INFINITY;
  return hi + log1pf(expf(lo - hi));
}

// Weight of a part with log-sum-exp `part` inside a merged state with log-sum-exp `total`.
SPAVA_HOST_DEVICE float lse_weight(float part, float total) {
  return part == -INFINITY ? 0.f : expf(part - total);
}

}  // namespace spava
