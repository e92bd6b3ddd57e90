// Host launcher of select_passing: qsum -> scores -> select + gather, chained with programmatic
// dependent launch where the kernels' binaries support it.
#include "select_passing/select_passing.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>

#include "common/kernel_setup.h"
#include "common/tma.h"
#include "select_passing/select_cluster_kernel.cuh"
#include "select_passing/select_gather_kernel.cuh"
#include "select_passing/select_passing_kernel.cuh"
#include "spava/check.h"
#include "spava/static_switch.h"

namespace spava {
namespace {

using namespace select;

// Chain kernels 2 and 3 to their predecessors with programmatic dependent launch, unless the
// environment has SPAVA_SELECT_PDL=0 (plain stream order: same results, for A/B timing). Read
// once per process.
bool pdl_enabled() {
  static const bool on = [] {
    const char* v = std::getenv("SPAVA_SELECT_PDL");
    return v == nullptr || std::strcmp(v, "0") != 0;
  }();
  return on;
}

// ---- launch shapes, reasoned from bytes in flight (not yet tuned by measurement); the key
// shape: 2 chunks x 8064 rows x 4 kv heads, D 128, 132 SMs
// Kernel 1: at least kQsumLoads rows per row group, so a thread's loads are in flight together;
// at most kMaxQsumSplits partials (64 x 7 rows, D 128: 14 CTAs per kv head).
void plan_qsum(SelectPassingParams& p) {
  const int groups = kQsumThreads / (p.head_dim / 8);
  const int64_t rows = int64_t(p.q_len) * (p.heads_q / p.heads_kv);
  const int64_t per =
      std::max<int64_t>(groups * kQsumLoads, (rows + kMaxQsumSplits - 1) / kMaxQsumSplits);
  p.qsum_rows = int(per);
  p.qsum_splits = int((rows + per - 1) / per);
}

// Kernel 2: a tile plus its pool halo fills one round of loads (64 KB, 252 rows at D 128: 256
// CTAs, one wave at 2 CTAs per SM) unless the halo leaves fewer than kMinScoreRows rows.
void plan_scores(SelectPassingParams& p, int max_sel_len) {
  const int round_rows = score_round_rows(p.head_dim / 8);
  p.score_rows = std::max(kMinScoreRows, round_rows - 2 * (p.pool_kernel / 2));
  p.score_tiles = (max_sel_len + p.score_rows - 1) / p.score_rows;
}

// Kernel 3: one round of kGatherPairs (row, 8-column chunk) pairs per thread, every K and V
// load in flight at once (64 rows, 128 CTAs at the key shape: 32 KB of loads per SM). Its
// shared key cache fits the longest selecting chunk of at most kMaxCachedKeys keys (longer
// chunks read their keys at L2 in every pass), rounded up to 16 keys (see fill_cache).
void plan_gather(SelectPassingParams& p) {
  p.gather_rows = gather_rows(p.head_dim / 8);
  p.gather_tiles = (p.capacity + p.gather_rows - 1) / p.gather_rows;
  p.smem_keys = 0;
  for (int c = 0; c < p.num_chunks; ++c)
    if (p.passing_len < p.chunk_len[c] && p.chunk_len[c] <= kMaxCachedKeys)
      p.smem_keys = std::max(p.smem_keys, (p.chunk_len[c] + 15) / 16 * 16);
}

// PDL needs griddepcontrol in the kernel's binary (compiled for sm_90+ only, see pdl_wait): a
// kernel built for an older arch must not start before its predecessor ends. Cached for the
// process (one build's binary is the same on every device of one arch).
template <auto kKernel>
bool binary_has_pdl() {
  static std::atomic<int> cached{-1};
  int has = cached.load(std::memory_order_relaxed);
  if (has < 0) {
    cudaFuncAttributes attr{};
    SPAVA_CUDA_CHECK(cudaFuncGetAttributes(&attr, kKernel));
    has = attr.binaryVersion >= 90;
    cached.store(has, std::memory_order_relaxed);
  }
  return has != 0;
}

// kKernel<<<grid, threads, smem, stream>>>(p); with `pdl` it may start before the previous grid
// on the stream ends (it calls pdl_wait() before touching that grid's outputs).
// (with cluster > 0: thread-block clusters of that many CTAs along x). args: the kernel's.
template <auto kKernel, typename... Args>
void launch(dim3 grid, int threads, int smem, bool pdl, cudaStream_t stream, int cluster,
            const Args&... args) {
  cudaLaunchAttribute attrs[2]{};
  int n = 0;
  if (pdl && binary_has_pdl<kKernel>()) {
    attrs[n].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attrs[n++].val.programmaticStreamSerializationAllowed = 1;
  }
  if (cluster > 0) {
    attrs[n].id = cudaLaunchAttributeClusterDimension;
    attrs[n++].val.clusterDim = {unsigned(cluster), 1, 1};
  }
  cudaLaunchConfig_t config{};
  config.gridDim = grid;
  config.blockDim = dim3(threads);
  config.dynamicSmemBytes = size_t(smem);
  config.stream = stream;
  config.attrs = attrs;
  config.numAttrs = n;
  SPAVA_CUDA_CHECK(cudaLaunchKernelEx(&config, kKernel, args...));
}

// Lets the cluster kernel (both dtypes) use its shared memory and clusters of 16 on the current
// device, once per device.
void setup_cluster_kernel() {
  static std::atomic<uint64_t> done{0};  // bit d: device d
  int device = 0;
  SPAVA_CUDA_CHECK(cudaGetDevice(&device));
  const uint64_t bit = device < 64 ? uint64_t(1) << device : 0;
  if (done.load(std::memory_order_relaxed) & bit) return;
  for (const void* f : {reinterpret_cast<const void*>(cluster_select_kernel<cutlass::bfloat16_t>),
                        reinterpret_cast<const void*>(cluster_select_kernel<cutlass::half_t>)}) {
    SPAVA_CUDA_CHECK(cudaFuncSetAttribute(f, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                          int(sizeof(ClusterShared))));
    SPAVA_CUDA_CHECK(cudaFuncSetAttribute(f, cudaFuncAttributeNonPortableClusterSizeAllowed, 1));
  }
  done.fetch_or(bit, std::memory_order_relaxed);
}

// Clusters of C CTAs of the cluster kernel that fit on the current device at once (cached per
// device and C; 0 when none).
int max_active_clusters(int C) {
  static std::atomic<int> cached[64][5];  // [device][log2 C] + 1, 0: not yet asked
  int device = 0;
  SPAVA_CUDA_CHECK(cudaGetDevice(&device));
  int log2c = 0;
  while ((1 << log2c) < C) ++log2c;
  if (device < 64) {
    const int v = cached[device][log2c].load(std::memory_order_relaxed);
    if (v > 0) return v - 1;
  }
  setup_cluster_kernel();
  cudaLaunchAttribute attr{};
  attr.id = cudaLaunchAttributeClusterDimension;
  attr.val.clusterDim = {unsigned(C), 1, 1};
  cudaLaunchConfig_t config{};
  config.gridDim = dim3(C * 16);
  config.blockDim = dim3(kClusterThreads);
  config.dynamicSmemBytes = sizeof(ClusterShared);
  config.attrs = &attr;
  config.numAttrs = 1;
  int n = 0;
  if (cudaOccupancyMaxActiveClusters(&n, cluster_select_kernel<cutlass::bfloat16_t>, &config) !=
      cudaSuccess) {
    (void)cudaGetLastError();  // e.g. a cluster size the device refuses: not usable
    n = 0;
  }
  if (device < 64) cached[device][log2c].store(n + 1, std::memory_order_relaxed);
  return n;
}

// Kernel 2c (one cluster per item) where the chunks, capacity and pool fit it and the device
// has the sm_90 binary: the cluster size C is the one that finishes the items' rows soonest,
// waves of co-resident clusters x (rows + 2 x slots) per CTA (ties: the smaller C). 0: kernels
// 2 + 3.
// SPAVA_SELECT_IMPL=grid forces kernels 2 + 3, SPAVA_SELECT_CLUSTER=<C> a cluster size (A/B
// timing and tests; both read at every call).
int plan_cluster(const SelectPassingParams& p, int items, int max_sel_len) {
  const char* impl = std::getenv("SPAVA_SELECT_IMPL");
  if (impl != nullptr && std::strcmp(impl, "grid") == 0) return 0;
  if (p.pool_kernel / 2 > kMaxPoolHalf || p.head_dim > kMaxClusterHeadDim) return 0;
  if (!binary_has_pdl<cluster_select_kernel<cutlass::bfloat16_t>>()) return 0;  // no sm_90 binary
  const char* forced = std::getenv("SPAVA_SELECT_CLUSTER");
  int best = 0;
  int64_t best_cost = 0;
  for (int C = 1; C <= kMaxCluster; C *= 2) {
    if (forced != nullptr && C != std::atoi(forced)) continue;
    const int rows = (max_sel_len + C - 1) / C;
    if (rows > kMaxCtaRows || (p.capacity + C - 1) / C > kMaxCtaSlots) continue;
    const int active = max_active_clusters(C);
    if (active < 1) continue;
    const int64_t cost =
        int64_t((items + active - 1) / active) * (rows + 2 * ((p.capacity + C - 1) / C));
    if (best == 0 || cost < best_cost) best = C, best_cost = cost;
  }
  return best;
}

}  // namespace

void run_select_passing(SelectPassingParams p, cudaStream_t stream) {
  const int items = p.num_chunks * p.batch * p.heads_kv;
  if (items == 0 || p.capacity == 0) return;
  int max_sel_len = 0;  // longest chunk that selects (passing_len < len)
  for (int c = 0; c < p.num_chunks; ++c)
    if (p.passing_len < p.chunk_len[c]) max_sel_len = std::max(max_sel_len, p.chunk_len[c]);
  const bool selects = max_sel_len > 0, pdl = pdl_enabled();
  plan_qsum(p);
  const int cluster = plan_cluster(p, items, max_sel_len);
  if (cluster > 0) {
    setup_cluster_kernel();
    SPAVA_HALF_DTYPE_SWITCH(p.dtype, T, [&] {
      if (selects)
        launch<qsum_kernel<T>>(dim3(p.qsum_splits, p.heads_kv, p.batch), kQsumThreads, 0, false,
                               stream, 0, p);
      int rows = 1;  // K rows any chunk reaches (the map's extent; past it TMA reads zeros)
      for (int c = 0; c < p.num_chunks; ++c) rows = std::max(rows, p.chunk_start[c] + p.chunk_len[c]);
      const CUtensorMap kmap = make_rows_tensor_map(
          p.k, p.dtype, p.batch, rows, p.heads_kv, p.head_dim, p.k_batch_stride, p.k_row_stride,
          p.k_head_stride, p.head_dim, cluster_stage_rows(p.head_dim), 0);
      launch<cluster_select_kernel<T>>(dim3(cluster * items), kClusterThreads,
                                       int(sizeof(ClusterShared)), pdl && selects, stream,
                                       cluster, p, kmap);
    });
    return;
  }
  plan_scores(p, max_sel_len);
  plan_gather(p);
  SPAVA_HALF_DTYPE_SWITCH(p.dtype, T, [&] {
    if (selects) {
      launch<qsum_kernel<T>>(dim3(p.qsum_splits, p.heads_kv, p.batch), kQsumThreads, 0, false,
                             stream, 0, p);
      launch<score_kernel<T>>(dim3(p.score_tiles * items), kScoreThreads, 0, pdl, stream, 0, p);
    }
    const int smem = 4 * p.smem_keys;
    if (smem > 0) set_max_dynamic_smem<gather_kernel<T>>(4 * kMaxCachedKeys);
    launch<gather_kernel<T>>(dim3(p.gather_tiles * items), kSelectThreads, smem, pdl && selects,
                             stream, 0, p);
  });
}

}  // namespace spava
