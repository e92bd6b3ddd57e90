# CUDA toolchain, CUTLASS headers and per-source -gencode flags.
#   SPAVA_CUDA_ARCHS  archs for arch-generic kernels, e.g. "90a" or "80;90a" (default 90a)
#   sources named *_sm90.cu are compiled for sm_90a only (wgmma / TMA code).
set(CMAKE_CUDA_ARCHITECTURES OFF)
set(CMAKE_CUDA_RUNTIME_LIBRARY Shared)
enable_language(CUDA)
find_package(CUDAToolkit REQUIRED)
set(CMAKE_CUDA_STANDARD 17)  # kernels are torch-free, valid C++17
set(CMAKE_CUDA_STANDARD_REQUIRED ON)

if(NOT SPAVA_CUTLASS_INCLUDE_DIR)
  execute_process(
    COMMAND "${Python_EXECUTABLE}" -c
      "import importlib.util, os; s = importlib.util.find_spec('cutlass_library'); print(os.path.join(s.submodule_search_locations[0], 'source', 'include') if s else '')"
    OUTPUT_VARIABLE SPAVA_CUTLASS_INCLUDE_DIR OUTPUT_STRIP_TRAILING_WHITESPACE)
endif()
if(NOT EXISTS "${SPAVA_CUTLASS_INCLUDE_DIR}/cute/tensor.hpp")
  message(FATAL_ERROR "spava: CUTLASS headers not found ('${SPAVA_CUTLASS_INCLUDE_DIR}'). "
    "Install them with: pip install --no-deps nvidia-cutlass==4.2.0.0, or set SPAVA_CUTLASS_INCLUDE_DIR")
endif()
message(STATUS "spava: CUTLASS headers at ${SPAVA_CUTLASS_INCLUDE_DIR}")

if(NOT SPAVA_CUDA_ARCHS)
  set(SPAVA_CUDA_ARCHS "90a")
endif()
set(SPAVA_CUDA_FLAGS -O3 -lineinfo --expt-relaxed-constexpr --expt-extended-lambda
    -Xptxas=--warn-on-spills -DNDEBUG)

# spava_set_gencode(<sources>): per-file -gencode from the file-name suffix.
function(spava_set_gencode)
  foreach(_src ${ARGN})
    set(_flags "")
    if(_src MATCHES "_sm90\\.cu$")
      list(APPEND _flags "-gencode=arch=compute_90a,code=sm_90a")
    else()
      foreach(_arch ${SPAVA_CUDA_ARCHS})
        list(APPEND _flags "-gencode=arch=compute_${_arch},code=sm_${_arch}")
      endforeach()
    endif()
    set_property(SOURCE ${_src} APPEND PROPERTY COMPILE_OPTIONS ${_flags})
  endforeach()
endfunction()
