# Torch as an imported target `spava::torch`, described by the Python interpreter's own torch.
# The glue uses only the LibTorch stable ABI (torch/csrc/stable, torch/headeronly) at
# TORCH_TARGET_VERSION = SPAVA_OLDEST_TORCH, so _C loads under that torch and every later one,
# whichever of them it was built against. What it needs of torch is the headers and the
# library that exports the stable C shims (libtorch_cpu; libtorch_cuda for the CUDA stream).

# The oldest torch the wheel runs under (setup.py reads it here for the wheel's Requires-Dist).
set(SPAVA_OLDEST_TORCH 2.11)

execute_process(
  COMMAND "${Python_EXECUTABLE}" -c
    "import os, torch; print(os.path.join(os.path.dirname(torch.__file__), 'include')); print(os.path.join(os.path.dirname(torch.__file__), 'lib')); print(torch.__version__); print(torch.version.cuda or '')"
  OUTPUT_VARIABLE _spava_torch_out
  RESULT_VARIABLE _spava_torch_rc
  OUTPUT_STRIP_TRAILING_WHITESPACE)
if(NOT _spava_torch_rc EQUAL 0)
  message(FATAL_ERROR "spava: could not import torch with ${Python_EXECUTABLE}")
endif()
string(REPLACE "\n" ";" _spava_torch_lines "${_spava_torch_out}")
list(GET _spava_torch_lines 0 SPAVA_TORCH_INCLUDE_DIR)
list(GET _spava_torch_lines 1 SPAVA_TORCH_LIB_DIR)
list(GET _spava_torch_lines 2 SPAVA_TORCH_FULL_VERSION)  # e.g. 2.14.1+cpu
string(REGEX REPLACE "\\+.*" "" SPAVA_TORCH_VERSION "${SPAVA_TORCH_FULL_VERSION}")
list(LENGTH _spava_torch_lines _n)
set(SPAVA_TORCH_CUDA "")
if(_n GREATER 3)
  list(GET _spava_torch_lines 3 SPAVA_TORCH_CUDA)
endif()
message(STATUS "spava: torch ${SPAVA_TORCH_FULL_VERSION} (cuda '${SPAVA_TORCH_CUDA}') at ${SPAVA_TORCH_LIB_DIR}, "
               "stable ABI of torch ${SPAVA_OLDEST_TORCH}")
if(SPAVA_TORCH_VERSION VERSION_LESS SPAVA_OLDEST_TORCH)
  message(FATAL_ERROR "spava: needs torch >= ${SPAVA_OLDEST_TORCH} to build, found ${SPAVA_TORCH_FULL_VERSION}")
endif()

set(_libs torch_cpu)
if(SPAVA_WITH_CUDA)
  list(APPEND _libs torch_cuda)
endif()
add_library(spava_torch INTERFACE)
add_library(spava::torch ALIAS spava_torch)
foreach(_lib ${_libs})
  find_library(_path_${_lib} NAMES ${_lib} PATHS "${SPAVA_TORCH_LIB_DIR}" NO_DEFAULT_PATH REQUIRED)
  target_link_libraries(spava_torch INTERFACE "${_path_${_lib}}")
endforeach()
target_include_directories(spava_torch SYSTEM INTERFACE "${SPAVA_TORCH_INCLUDE_DIR}")
# TORCH_TARGET_VERSION: 0xMMmm000000000000 (major, minor bytes), hiding every stable API newer
# than SPAVA_OLDEST_TORCH.
string(REPLACE "." ";" _spava_oldest "${SPAVA_OLDEST_TORCH}")
list(GET _spava_oldest 0 _major)
list(GET _spava_oldest 1 _minor)
math(EXPR _spava_target "(${_major} << 56) | (${_minor} << 48)" OUTPUT_FORMAT HEXADECIMAL)
target_compile_definitions(spava_torch INTERFACE TORCH_TARGET_VERSION=${_spava_target}ULL)

# torch >= 2.13 headers require C++20; torch 2.11 builds as C++17.
if(SPAVA_TORCH_VERSION VERSION_GREATER_EQUAL 2.13)
  set(SPAVA_TORCH_CXX_STANDARD 20)
else()
  set(SPAVA_TORCH_CXX_STANDARD 17)
endif()
