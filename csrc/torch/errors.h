// The errors of the spava ops, raised in Python as ValueError, TypeError, NotImplementedError
// and RuntimeError, with the message exactly as built here ("spava::<op>: ...").
//
// The one piece of torch's unstable ABI in the glue. The stable ABI raises only
// std::runtime_error (STD_TORCH_CHECK; Python RuntimeError, the message prefixed with the
// function, file and line), and c10::ValueError and its kin are built by libc10 constructors
// whose symbols differ between releases (torch 2.14 gives each class its own constructor), so
// code throwing them loads only under the torch it was compiled against. Instead, the typed
// errors derive from torch::PyTorchError, which torch's Python bindings translate to the
// exception type its python_type() returns (CATCH_CORE_ERRORS, torch/csrc/Exceptions.h). It
// is declared below as torch declares it (identical in torch 2.11 through 2.15): torch uses
// it only through its vtable (what(), python_type()) and its type name (catch clauses compare
// type_info by name across shared objects), so no torch symbol is linked for it. Called from
// C++ rather than Python, the errors are std::exceptions with the same what().
#pragma once

#include <Python.h>

#include <exception>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace torch {

struct PyTorchError : public std::exception {
  PyTorchError() = default;
  explicit PyTorchError(std::string msg_) : msg(std::move(msg_)) {}
  virtual PyObject* python_type() = 0;
  const char* what() const noexcept override { return msg.c_str(); }
  std::string msg;
};

}  // namespace torch

namespace spava {

struct ValueError : torch::PyTorchError {
  using PyTorchError::PyTorchError;
  PyObject* python_type() override { return PyExc_ValueError; }
};

struct TypeError : torch::PyTorchError {
  using PyTorchError::PyTorchError;
  PyObject* python_type() override { return PyExc_TypeError; }
};

struct NotImplementedError : torch::PyTorchError {
  using PyTorchError::PyTorchError;
  PyObject* python_type() override { return PyExc_NotImplementedError; }
};

// The arguments streamed into one string.
template <typename... Args>
std::string str(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}

}  // namespace spava

// Raise Error with the message "spava::<op>: <args...>" unless cond holds; the message is
// built only on failure.
#define SPAVA_CHECK_AS(Error, cond, op, ...)                                  \
  do {                                                                        \
    if (!(cond)) throw Error(::spava::str("spava::", op, ": ", __VA_ARGS__)); \
  } while (0)
#define SPAVA_CHECK_VALUE(cond, op, ...) SPAVA_CHECK_AS(::spava::ValueError, cond, op, __VA_ARGS__)
#define SPAVA_CHECK_TYPE(cond, op, ...) SPAVA_CHECK_AS(::spava::TypeError, cond, op, __VA_ARGS__)
#define SPAVA_CHECK_NOT_IMPLEMENTED(cond, op, ...) \
  SPAVA_CHECK_AS(::spava::NotImplementedError, cond, op, __VA_ARGS__)
#define SPAVA_CHECK(cond, op, ...) SPAVA_CHECK_AS(std::runtime_error, cond, op, __VA_ARGS__)
