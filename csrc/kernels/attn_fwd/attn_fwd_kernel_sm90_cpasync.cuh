// attn_fwd for sm_90a, v1: wgmma (SS for Q.K^T, RS for P.V) with cp.async K/V loads one tile
// ahead, two warpgroups of 64 query rows each, online softmax in fp32, natural-log LSE out.
//
// One CTA = one tile of kBlockM query rows x one query head x one batch. It visits, in order,
// every (segment, key tile) pair that some row of the tile may see (SegmentMask), so keys are
// read straight from each segment's tensor (any strides), never concatenated.
//
// Pipeline per key tile t (stage = t % 2):
//   issue cp.async of tile t+1 into stage (t+1) % 2 | wait tile t | fence.proxy.async + barrier
//   S = Q K_t^T (wgmma SS) | mask (partial tiles only) | online softmax | P = bf16(S)
//   O += P V_t (wgmma RS) | barrier (stage t % 2 is refilled next iteration)
#pragma once

#include <cute/tensor.hpp>
#include <cutlass/array.h>
#include <cutlass/numeric_conversion.h>

#include "attn_fwd/config.h"
#include "attn_fwd/mask.cuh"
#include "common/device_utils.cuh"
#include "spava/params.h"

namespace spava::attn {

using namespace cute;

// Walks the visible (segment, key tile) pairs of one query tile, in segment order.
struct TileCursor {
  int seg = -1, tile = 0, n_tiles = 0;

  template <int kBlockN>
  __device__ __forceinline__ bool advance(const AttnFwdParams& p, int m0, int m_last) {
    if (++tile < n_tiles) return true;
    while (++seg < p.num_segments) {
      n_tiles = SegmentMask::trip_count<kBlockN>(p.segments[seg], m0, m_last);
      if (n_tiles > 0) {
        tile = 0;
        return true;
      }
    }
    return false;
  }
};

// wgmma accumulator ((2, 2, N/8), MMA_M, MMA_N) viewed as (row = (2, MMA_M), col = (2, N/8, MMA_N)).
template <class Layout>
__device__ __forceinline__ auto acc_rowcol(Layout l) {
  return make_layout(make_layout(get<0, 1>(l), get<1>(l)),
                     make_layout(get<0, 0>(l), get<0, 2>(l), get<2>(l)));
}

// The same registers viewed as the A operand of an RS wgmma with K = 16:
// ((2, 2, N/8), MMA_M, MMA_N) -> ((2, 2, 2), MMA_M, (N/16, MMA_N)).
template <class Layout>
__device__ __forceinline__ auto acc_as_a_operand(Layout l) {
  auto m0 = logical_divide(get<0>(l), Shape<Underscore, Underscore, _2>{});  // (2, 2, (2, N/16))
  return make_layout(make_layout(get<0>(m0), get<1>(m0), get<2, 0>(m0)), get<1>(l),
                     make_layout(get<2, 1>(m0), get<2>(l)));
}

// Max / sum over the 4 threads of a quad (they hold the same accumulator row).
__device__ __forceinline__ float quad_max(float x) {
  x = fmaxf(x, __shfl_xor_sync(0xffffffff, x, 1));
  return fmaxf(x, __shfl_xor_sync(0xffffffff, x, 2));
}
__device__ __forceinline__ float quad_sum(float x) {
  x += __shfl_xor_sync(0xffffffff, x, 1);
  return x + __shfl_xor_sync(0xffffffff, x, 2);
}

// cp.async `rows` x kHeadDim elements from `g` (row stride in elements) into the swizzled smem
// tile `s`; rows >= rows_valid are zero-filled.
template <int kThreads, int kHeadDim, class SmemTile, typename T>
__device__ __forceinline__ void load_tile(SmemTile s, const T* g, int64_t row_stride,
                                          int rows_valid, int tid) {
  constexpr int kRows = size<0>(SmemTile{});
  constexpr int kChunks = kHeadDim / 8;  // 16-byte chunks per row
  static_assert(kRows * kChunks % kThreads == 0, "tile must split evenly over the threads");
#pragma unroll
  for (int i = 0; i < kRows * kChunks / kThreads; ++i) {
    const int idx = tid + i * kThreads;
    const int r = idx / kChunks, c = idx % kChunks;
    const bool valid = r < rows_valid;
    cp_async_16(&s(r, c * 8), g + (valid ? r * row_stride : 0) + c * 8, valid);
  }
}

template <class Cfg>
__global__ void __launch_bounds__(Cfg::kThreads, 1)
    attn_fwd_sm90_kernel(const __grid_constant__ AttnFwdParams p) {
  using T = typename Cfg::Element;
  constexpr int kBlockM = Cfg::kBlockM, kBlockN = Cfg::kBlockN, kHeadDim = Cfg::kHeadDim;
  constexpr int kThreads = Cfg::kThreads;

  extern __shared__ __align__(1024) char smem_raw[];
  auto& smem = *reinterpret_cast<typename Cfg::SharedStorage*>(smem_raw);
  Tensor sQ = make_tensor(make_smem_ptr(smem.q), typename Cfg::SmemLayoutQ{});
  Tensor sK = make_tensor(make_smem_ptr(smem.k), typename Cfg::SmemLayoutKV{});
  Tensor sV = make_tensor(make_smem_ptr(smem.v), typename Cfg::SmemLayoutKV{});
  Tensor sVt = make_tensor(make_smem_ptr(smem.v), typename Cfg::SmemLayoutVt{});

  const int tid = threadIdx.x;
  const int m_block = gridDim.x - 1 - blockIdx.x;  // longest (latest) rows first
  const int hq = blockIdx.y, b = blockIdx.z;
  const int hk = hq / (p.heads_q / p.heads_kv);
  const int m0 = m_block * kBlockM;
  const int m_last = min(m0 + kBlockM, p.q_len) - 1;

  // ---- prologue: Q and the first K/V tile
  const T* q = static_cast<const T*>(p.q) + b * p.q_batch_stride + int64_t(m0) * p.q_row_stride +
               hq * p.q_head_stride;
  load_tile<kThreads, kHeadDim>(sQ, q, p.q_row_stride, p.q_len - m0, tid);
  auto load_kv = [&](const TileCursor& c, int stage) {
    const KvSegment& s = p.segments[c.seg];
    const int n0 = c.tile * kBlockN;
    const T* k = static_cast<const T*>(s.k) + b * s.k_batch_stride + hk * s.k_head_stride +
                 int64_t(n0) * s.k_row_stride;
    const T* v = static_cast<const T*>(s.v) + b * s.v_batch_stride + hk * s.v_head_stride +
                 int64_t(n0) * s.v_row_stride;
    load_tile<kThreads, kHeadDim>(sK(_, _, stage), k, s.k_row_stride, s.len - n0, tid);
    load_tile<kThreads, kHeadDim>(sV(_, _, stage), v, s.v_row_stride, s.len - n0, tid);
  };
  TileCursor cur;
  bool has = cur.advance<kBlockN>(p, m0, m_last);
  if (has) load_kv(cur, 0);
  cp_async_commit();

  // ---- MMA partitions
  typename Cfg::MmaQK mma_qk;
  typename Cfg::MmaPV mma_pv;
  auto thr_qk = mma_qk.get_thread_slice(tid);
  auto thr_pv = mma_pv.get_thread_slice(tid);
  Tensor tSrQ = thr_qk.partition_fragment_A(sQ);    // (MMA, MMA_M, MMA_K)
  Tensor tSrK = thr_qk.partition_fragment_B(sK);    // (MMA, MMA_N, MMA_K, stage)
  Tensor tOrVt = thr_pv.partition_fragment_B(sVt);  // (MMA, MMA_N, MMA_K, stage)
  Tensor tSrS = partition_fragment_C(mma_qk, Shape<Int<kBlockM>, Int<kBlockN>>{});
  Tensor tOrO = partition_fragment_C(mma_pv, Shape<Int<kBlockM>, Int<kHeadDim>>{});
  clear(tOrO);
  Tensor S = make_tensor(tSrS.data(), acc_rowcol(tSrS.layout()));  // (rows, cols) of this thread
  Tensor O = make_tensor(tOrO.data(), acc_rowcol(tOrO.layout()));
  // (row, col) coordinates of each element of S, in S's (rows, cols) order
  Tensor tScS = thr_qk.partition_C(make_identity_tensor(Shape<Int<kBlockM>, Int<kBlockN>>{}));
  Tensor cS = make_tensor(tScS.data(), acc_rowcol(tScS.layout()));
  constexpr int kRows = size<0>(S.shape());
  static_assert(kRows == size<0>(O.shape()));

  float row_max[kRows], row_sum[kRows];
#pragma unroll
  for (int i = 0; i < kRows; ++i) {
    row_max[i] = -INFINITY;
    row_sum[i] = 0.f;
  }
  const float scale_log2 = p.softmax_scale_log2;

  int stage = 0;
  while (has) {
    TileCursor next = cur;
    const bool has_next = next.advance<kBlockN>(p, m0, m_last);
    if (has_next) load_kv(next, stage ^ 1);
    cp_async_commit();
    cp_async_wait<1>();  // everything but the group just issued has landed
    fence_proxy_async_shared();
    __syncthreads();

    // S = Q K^T
    mma_qk.accumulate_ = GMMA::ScaleOut::Zero;
    warpgroup_fence_operand(tSrS);
    warpgroup_arrive();
#pragma unroll
    for (int kb = 0; kb < size<2>(tSrQ); ++kb) {
      cute::gemm(mma_qk, tSrQ(_, _, kb), tSrK(_, _, kb, stage), tSrS);
      mma_qk.accumulate_ = GMMA::ScaleOut::One;
    }
    warpgroup_commit_batch();
    warpgroup_wait<0>();
    warpgroup_fence_operand(tSrS);

    const KvSegment& seg = p.segments[cur.seg];
    const int n0 = cur.tile * kBlockN;
    if (!SegmentMask::tile_is_full<kBlockM, kBlockN>(seg, m0, n0)) {
#pragma unroll
      for (int i = 0; i < size(S); ++i) {
        const auto c = cS(i);
        if (!SegmentMask::visible(seg, m0 + get<0>(c), n0 + get<1>(c))) S(i) = -INFINITY;
      }
    }

    // online softmax (raw scores; exp2 with the scale folded in)
#pragma unroll
    for (int i = 0; i < kRows; ++i) {
      float mx = row_max[i];
#pragma unroll
      for (int j = 0; j < size<1>(S.shape()); ++j) mx = fmaxf(mx, S(i, j));
      mx = quad_max(mx);
      const float m_scaled = mx == -INFINITY ? 0.f : mx * scale_log2;
      const float correction = fast_exp2(row_max[i] * scale_log2 - m_scaled);
      row_max[i] = mx;
      float sum = 0.f;
#pragma unroll
      for (int j = 0; j < size<1>(S.shape()); ++j) {
        const float e = fast_exp2(S(i, j) * scale_log2 - m_scaled);
        S(i, j) = e;
        sum += e;
      }
      row_sum[i] = row_sum[i] * correction + sum;  // per-thread partial; quad-summed at the end
#pragma unroll
      for (int j = 0; j < size<1>(O.shape()); ++j) O(i, j) *= correction;
    }

    // O += P V
    constexpr int kN = decltype(size(tSrS))::value;
    cutlass::NumericArrayConverter<T, float, kN> to_t;
    auto p_frag = to_t(*reinterpret_cast<const cutlass::Array<float, kN>*>(tSrS.data()));
    Tensor tOrP = make_tensor(make_rmem_ptr<T>(&p_frag), acc_as_a_operand(tSrS.layout()));
    warpgroup_fence_operand(tOrO);
    warpgroup_arrive();
#pragma unroll
    for (int kb = 0; kb < size<2>(tOrP); ++kb) {
      cute::gemm(mma_pv, tOrP(_, _, kb), tOrVt(_, _, kb, stage), tOrO);
    }
    warpgroup_commit_batch();
    warpgroup_wait<0>();
    warpgroup_fence_operand(tOrO);
    __syncthreads();  // every warp is done with `stage` before it is refilled

    cur = next;
    has = has_next;
    stage ^= 1;
  }
  cp_async_wait<0>();

  // ---- epilogue: normalise, write out and lse
  Tensor tOcO = thr_pv.partition_C(make_identity_tensor(Shape<Int<kBlockM>, Int<kHeadDim>>{}));
  Tensor cO = make_tensor(tOcO.data(), acc_rowcol(tOcO.layout()));
  const int64_t out_base = b * p.out_batch_stride + hq * p.out_head_stride;
#pragma unroll
  for (int i = 0; i < kRows; ++i) {
    const float sum = quad_sum(row_sum[i]);
    const float inv = sum > 0.f ? 1.f / sum : 0.f;
    const int row = m0 + get<0>(cO(i, 0));
    if (row >= p.q_len) continue;
    const int64_t row_off = out_base + int64_t(row) * p.out_row_stride;
#pragma unroll
    for (int j = 0; j < size<1>(O.shape()); ++j) {
      const int col = get<1>(cO(i, j));
      const float val = O(i, j) * inv;
      if (p.out_fp32) {
        static_cast<float*>(p.out)[row_off + col] = val;
      } else {
        static_cast<T*>(p.out)[row_off + col] = static_cast<T>(val);
      }
    }
    if (p.lse != nullptr && (tid % 4) == 0) {
      p.lse[b * p.lse_batch_stride + hq * p.lse_head_stride + int64_t(row) * p.lse_row_stride] =
          sum > 0.f ? row_max[i] * p.softmax_scale + logf(sum) : -INFINITY;
    }
  }
}

}  // namespace spava::attn
