# Torch as an imported target `spava::torch`, described by the Python interpreter's own torch.
# (find_package(Torch) drags in the legacy FindCUDA and needs several workarounds with pip-installed
# CUDA; what an extension needs is only torch's headers, its libraries and its C++ ABI flag.)
execute_process(
  COMMAND "${Python_EXECUTABLE}" -c
    "import os, torch, torch.utils.cpp_extension as c; print(','.join(c.include_paths())); print(os.path.join(os.path.dirname(torch.__file__), 'lib')); print(int(torch._C._GLIBCXX_USE_CXX11_ABI)); print(torch.__version__); print(torch.version.cuda or '')"
  OUTPUT_VARIABLE _spava_torch_out
  RESULT_VARIABLE _spava_torch_rc
  OUTPUT_STRIP_TRAILING_WHITESPACE)
if(NOT _spava_torch_rc EQUAL 0)
  message(FATAL_ERROR "spava: could not import torch with ${Python_EXECUTABLE}")
endif()
string(REPLACE "\n" ";" _spava_torch_lines "${_spava_torch_out}")
list(GET _spava_torch_lines 0 _inc)
list(GET _spava_torch_lines 1 SPAVA_TORCH_LIB_DIR)
list(GET _spava_torch_lines 2 SPAVA_TORCH_CXX11_ABI)
list(GET _spava_torch_lines 3 SPAVA_TORCH_FULL_VERSION)  # e.g. 2.14.1+cpu
string(REGEX REPLACE "\\+.*" "" SPAVA_TORCH_VERSION "${SPAVA_TORCH_FULL_VERSION}")
list(LENGTH _spava_torch_lines _n)
set(SPAVA_TORCH_CUDA "")
if(_n GREATER 4)
  list(GET _spava_torch_lines 4 SPAVA_TORCH_CUDA)
endif()
string(REPLACE "," ";" SPAVA_TORCH_INCLUDE_DIRS "${_inc}")
message(STATUS "spava: torch ${SPAVA_TORCH_FULL_VERSION} (cuda '${SPAVA_TORCH_CUDA}') at ${SPAVA_TORCH_LIB_DIR}")

set(_libs c10 torch torch_cpu torch_python)
if(SPAVA_WITH_CUDA)
  list(APPEND _libs c10_cuda torch_cuda)
endif()
add_library(spava_torch INTERFACE)
add_library(spava::torch ALIAS spava_torch)
foreach(_lib ${_libs})
  find_library(_path_${_lib} NAMES ${_lib} PATHS "${SPAVA_TORCH_LIB_DIR}" NO_DEFAULT_PATH REQUIRED)
  target_link_libraries(spava_torch INTERFACE "${_path_${_lib}}")
endforeach()
target_include_directories(spava_torch SYSTEM INTERFACE ${SPAVA_TORCH_INCLUDE_DIRS})
target_compile_definitions(spava_torch INTERFACE
  TORCH_API_INCLUDE_EXTENSION_H TORCH_EXTENSION_NAME=_C
  _GLIBCXX_USE_CXX11_ABI=${SPAVA_TORCH_CXX11_ABI})

# torch >= 2.13 headers require C++20; torch 2.11 (the H100 box) builds as C++17.
if(SPAVA_TORCH_VERSION VERSION_GREATER_EQUAL 2.13)
  set(SPAVA_TORCH_CXX_STANDARD 20)
else()
  set(SPAVA_TORCH_CXX_STANDARD 17)
endif()
