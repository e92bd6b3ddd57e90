// Runtime -> compile-time dispatch (lambda-IIFE switches, usable as expressions).
// Only kernel translation units include this (it pulls in CUTLASS numeric types).
#pragma once

#include <cutlass/numeric_types.h>

#include "spava/check.h"
#include "spava/dtype.h"

// DTYPE_SWITCH(spava::DType, T, [&] { ... T ... }): T is float, cutlass::bfloat16_t or half_t.
#define SPAVA_DTYPE_SWITCH(DTYPE, TYPE_NAME, ...)                     \
  [&] {                                                               \
    switch (DTYPE) {                                                  \
      case ::spava::DType::kFloat32: {                                \
        using TYPE_NAME = float;                                      \
        return __VA_ARGS__();                                         \
      }                                                               \
      case ::spava::DType::kBFloat16: {                               \
        using TYPE_NAME = ::cutlass::bfloat16_t;                      \
        return __VA_ARGS__();                                         \
      }                                                               \
      case ::spava::DType::kFloat16: {                                \
        using TYPE_NAME = ::cutlass::half_t;                          \
        return __VA_ARGS__();                                         \
      }                                                               \
    }                                                                 \
    throw std::invalid_argument("spava: unknown dtype");              \
  }()

// The same for kernels that take only 16-bit inputs.
#define SPAVA_HALF_DTYPE_SWITCH(DTYPE, TYPE_NAME, ...)                     \
  [&] {                                                                    \
    switch (DTYPE) {                                                       \
      case ::spava::DType::kBFloat16: {                                    \
        using TYPE_NAME = ::cutlass::bfloat16_t;                           \
        return __VA_ARGS__();                                              \
      }                                                                    \
      case ::spava::DType::kFloat16: {                                     \
        using TYPE_NAME = ::cutlass::half_t;                               \
        return __VA_ARGS__();                                              \
      }                                                                    \
      default: break;                                                      \
    }                                                                      \
    throw std::invalid_argument("spava: this kernel takes bf16 or fp16");  \
  }()

#define SPAVA_BOOL_SWITCH(COND, CONST_NAME, ...) \
  [&] {                                          \
    if (COND) {                                  \
      constexpr static bool CONST_NAME = true;   \
      return __VA_ARGS__();                      \
    } else {                                     \
      constexpr static bool CONST_NAME = false;  \
      return __VA_ARGS__();                      \
    }                                            \
  }()
