// torch's ScalarType -> spava::DType (the only place the two meet).
#pragma once

#include "errors.h"
#include "spava/dtype.h"
#include "tensor.h"

namespace spava {

inline DType to_dtype(ScalarType t) {
  switch (t) {
    case ScalarType::Float: return DType::kFloat32;
    case ScalarType::BFloat16: return DType::kBFloat16;
    case ScalarType::Half: return DType::kFloat16;
    default: break;
  }
  throw TypeError(str("spava: unsupported dtype ", t));
  return DType::kFloat32;  // unreachable
}

}  // namespace spava
