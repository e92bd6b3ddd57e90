// Element types crossing the torch / kernel boundary (kernels never see at::ScalarType).
#pragma once

namespace spava {

enum class DType : int { kFloat32 = 0, kBFloat16 = 1, kFloat16 = 2 };

}  // namespace spava
