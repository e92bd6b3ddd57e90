// Which implementation of attn_fwd / attn_fwd_group serves a device: the sm_90a kernels on
// compute capability 9.x, else the ATen path (attn_fwd_aten: the same results within dtype
// tolerance, fp32 scores materialised tile by tile, several times slower). set_attn_fallback
// sends every GPU to the ATen path, to test it on an H100 (SPAVA_ATTN_FALLBACK in
// python/spava_ext/envs.py). set_attn_decode lets attn_fwd calls of few query rows take the
// split-KV decode kernel on the sm_90a path (SPAVA_ATTN_DECODE).
#include <atomic>

#ifdef SPAVA_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

#include "ops.h"

namespace spava {
namespace {

std::atomic<bool> g_attn_fallback{false};
std::atomic<bool> g_attn_decode{false};

}  // namespace

void set_attn_fallback(bool on) { g_attn_fallback.store(on); }

void set_attn_decode(bool on) { g_attn_decode.store(on); }

bool attn_decode_enabled() { return g_attn_decode.load(); }

bool uses_sm90(Device device) {
#ifdef SPAVA_WITH_CUDA
  if (!device.is_cuda() || g_attn_fallback.load()) return false;
  int index = device.index();
  if (index < 0) cudaGetDevice(&index);  // the current device
  int major = 0;  // stays 0 (the ATen path) if the query fails
  cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, index);
  return major == 9;
#else
  return false;
#endif
}

}  // namespace spava
