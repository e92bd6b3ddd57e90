// at::ScalarType -> spava::DType (the only place the two meet).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include "spava/dtype.h"

namespace spava {

inline DType to_dtype(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return DType::kFloat32;
    case at::kBFloat16: return DType::kBFloat16;
    case at::kHalf: return DType::kFloat16;
    default: break;
  }
  TORCH_CHECK_TYPE(false, "spava: unsupported dtype ", t);
  return DType::kFloat32;  // unreachable
}

}  // namespace spava
