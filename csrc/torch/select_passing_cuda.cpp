// CUDA glue of spava::select_passing: checks -> workspaces -> SelectPassingParams -> launch.
#include <algorithm>

#include "checks.h"
#include "cuda_checks.h"
#include "cuda_context.h"
#include "dtype_map.h"
#include "ops.h"
#include "select_passing/select_passing.h"
#include "trace.h"

namespace spava {

void select_passing_cuda(const Tensor& q, const Tensor& k, const Tensor& v,
                         const IntList& chunk_starts,
                         const IntList& chunk_lens, int64_t passing_len,
                         int64_t pool_kernel, const Tensor& indices, const Tensor& kv) {
  const SelectPassingDims d = check_select_passing(q, k, v, chunk_starts, chunk_lens, passing_len,
                                                   pool_kernel, indices, kv);
  SPAVA_CHECK_TYPE(q.scalar_type() == ScalarType::BFloat16 || q.scalar_type() == ScalarType::Half,
                   "select_passing", "CUDA kernels take bf16 or fp16 q/k/v, got ",
                   q.scalar_type());
  SPAVA_CHECK_VALUE(d.num_chunks <= kMaxSelectChunks, "select_passing", "at most ",
                    kMaxSelectChunks, " chunks per call on CUDA, got ", d.num_chunks);
  SPAVA_CHECK_VALUE(d.head_dim % 8 == 0 && d.head_dim <= 512, "select_passing",
                    "CUDA needs head_dim % 8 == 0 and <= 512, got ", d.head_dim);
  SPAVA_CHECK_VALUE(pool_kernel <= 127, "select_passing", "CUDA supports pool_kernel <= 127, got ",
                    pool_kernel);
  int64_t max_len = 0;
  bool selects = false;  // some chunk keeps fewer keys than it has
  for (int64_t c = 0; c < d.num_chunks; ++c) {
    max_len = std::max(max_len, chunk_lens[c]);
    selects |= passing_len < chunk_lens[c];
  }
  SPAVA_CHECK_VALUE(max_len < (int64_t(1) << 31) && d.kv_len < (int64_t(1) << 31) &&
                        d.q_len * d.heads_q < (int64_t(1) << 31),
                    "select_passing", "sequence of ", d.kv_len, " rows (", d.q_len,
                    " question rows) is too long");
  SPAVA_CHECK_VALUE(!selects || d.capacity <= 32768, "select_passing",
                    "capacity ", d.capacity, " > 32768 is not supported on CUDA");
  check_rows_aligned("select_passing", "q", q);
  check_rows_aligned("select_passing", "k", k);
  check_rows_aligned("select_passing", "v", v);
  check_rows_aligned("select_passing", "kv", kv);
  const int32_t device = q.get_device_index();
  const DeviceGuard guard(device);

  // One workspace (only when some chunk selects): qsum partials (fp32), then the top-digit
  // histograms and the keys (int32); every part starts 16-byte aligned (head_dim % 8 == 0,
  // kRadixBins % 4 == 0).
  const auto up4 = [](int64_t n) { return (n + 3) / 4 * 4; };
  const int64_t items = d.num_chunks * d.batch * d.heads_kv;
  const int64_t key_stride = up4(max_len);
  const int64_t qsum_len = kMaxQsumSplits * d.batch * d.heads_kv * d.head_dim;
  const int64_t hist_len = items * kRadixBins;
  const int64_t work_len = selects ? qsum_len + hist_len + items * key_stride : 0;
  const Tensor work =
      torch::stable::empty({work_len}, ScalarType::Int, std::nullopt, q.device());

  SelectPassingParams p{};
  p.q = q.const_data_ptr();
  p.q_batch_stride = q.stride(0);
  p.q_row_stride = q.stride(1);
  p.q_head_stride = q.stride(2);
  p.k = k.const_data_ptr();
  p.v = v.const_data_ptr();
  p.k_batch_stride = k.stride(0);
  p.k_row_stride = k.stride(1);
  p.k_head_stride = k.stride(2);
  p.v_batch_stride = v.stride(0);
  p.v_row_stride = v.stride(1);
  p.v_head_stride = v.stride(2);
  if (selects) {
    int* base = work.mutable_data_ptr<int>();
    p.qsum = reinterpret_cast<float*>(base);
    p.hist = base + qsum_len;
    p.keys = reinterpret_cast<uint32_t*>(p.hist + hist_len);
  }
  p.key_stride = key_stride;
  p.indices = indices.mutable_data_ptr<int64_t>();
  p.kv = kv.mutable_data_ptr();
  p.batch = int(d.batch);
  p.q_len = int(d.q_len);
  p.heads_q = int(d.heads_q);
  p.heads_kv = int(d.heads_kv);
  p.head_dim = int(d.head_dim);
  p.num_chunks = int(d.num_chunks);
  p.capacity = int(d.capacity);
  p.passing_len = int(std::min<int64_t>(passing_len, int64_t(1) << 30));
  p.pool_kernel = int(pool_kernel);
  for (int64_t c = 0; c < d.num_chunks; ++c) {
    p.chunk_start[c] = int(chunk_starts[c]);
    p.chunk_len[c] = int(chunk_lens[c]);
  }
  cudaDeviceGetAttribute(&p.num_sms, cudaDevAttrMultiProcessorCount, device);
  p.dtype = to_dtype(q.scalar_type());
  const std::string trace = trace_file();
  run_select_passing(p, current_stream(device), trace.c_str());
}

}  // namespace spava
