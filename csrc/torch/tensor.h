// The LibTorch stable ABI as the glue uses it (torch/csrc/stable, torch/headeronly; built with
// TORCH_TARGET_VERSION = the oldest torch supported, cmake/torch.cmake): the tensor types,
// tensors in error messages, and the ATen ops the ATen paths call. Ops that
// torch/csrc/stable/ops.h lacks at that version are called through the dispatcher by schema
// (torch_call_dispatcher). A Scalar argument has no stable boxed form, so ops take their
// scalars as 0-dim tensors (the Tensor overloads, e.g. masked_fill_.Tensor).
#pragma once

#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>
#include <torch/headeronly/core/ScalarType.h>
#include <torch/headeronly/util/HeaderOnlyArrayRef.h>

#include <array>
#include <optional>
#include <string>
#include <vector>

namespace spava {

using Tensor = torch::stable::Tensor;
using Device = torch::stable::Device;
using ScalarType = torch::headeronly::ScalarType;
using IntArrayRef = torch::headeronly::HeaderOnlyArrayRef<int64_t>;
// A schema int[] as a boxed kernel receives it.
using IntList = std::vector<int64_t>;
// A schema Tensor[]? as a boxed kernel receives it.
using OptTensorList = std::optional<std::vector<Tensor>>;

// "[2, 3, 4]": a shape or an int list as error messages print it.
std::string dims_str(IntArrayRef v);
// "cpu", "cuda:0": a device as error messages print it.
std::string device_str(const Device& d);

namespace aten {

// The ATen op `name.overload` on args (every argument of its schema, in order; the C++ types
// of torch::stable::detail::from), returning its first result.
template <class... Args>
Tensor call(const char* name, const char* overload, const Args&... args) {
  std::array<StableIValue, sizeof...(Args)> stack{torch::stable::detail::from(args)...};
  TORCH_ERROR_CODE_CHECK(torch_call_dispatcher(name, overload, stack.data(), TORCH_ABI_VERSION));
  return torch::stable::detail::to<Tensor>(stack[0]);
}

inline Tensor permute(const Tensor& t, IntArrayRef dims) {
  return call("aten::permute", "", t, dims);
}
inline Tensor cat(const std::vector<Tensor>& ts, int64_t dim) {
  return call("aten::cat", "", ts, dim);
}
// Elements with column - row <= diagonal kept, others zeroed.
inline Tensor tril(const Tensor& t, int64_t diagonal) {
  return call("aten::tril", "", t, diagonal);
}
inline Tensor logical_not(const Tensor& t) { return call("aten::logical_not", "", t); }
inline Tensor logsumexp(const Tensor& t, int64_t dim, bool keepdim) {
  return call("aten::logsumexp", "", t, std::vector<int64_t>{dim}, keepdim);
}
inline Tensor exp_(const Tensor& t) { return call("aten::exp_", "", t); }
// In-place ops with a 0-dim tensor (scalar()) for their scalar.
inline Tensor mul_(const Tensor& t, const Tensor& other) {
  return call("aten::mul_", "Tensor", t, other);
}
inline Tensor masked_fill_(const Tensor& t, const Tensor& mask, const Tensor& value) {
  return call("aten::masked_fill_", "Tensor", t, mask, value);
}
// A 0-dim tensor holding value.
inline Tensor scalar(double value, ScalarType dtype, const Device& device) {
  return torch::stable::full(IntArrayRef(), value, dtype, std::nullopt, device);
}
inline Tensor to(const Tensor& t, ScalarType dtype) { return torch::stable::to(t, dtype); }
// torch::stable's narrow, zero_ and copy_ take a non-const reference to their tensor.
inline Tensor narrow(Tensor t, int64_t dim, int64_t start, int64_t length) {
  return torch::stable::narrow(t, dim, start, length);
}
inline Tensor zero_(Tensor t) { return torch::stable::zero_(t); }
inline Tensor copy_(Tensor dst, const Tensor& src) { return torch::stable::copy_(dst, src); }

}  // namespace aten
}  // namespace spava
