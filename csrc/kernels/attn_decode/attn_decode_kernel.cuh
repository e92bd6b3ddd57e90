// attn_decode kernels (docs/kernels/attn_decode.md). Main kernel: one CTA per (split, kv head,
// batch entry) computes the partial state of the rows of one kv head (q_len * group <= 16 rows,
// one m16n8k16 row tile) over its key tiles; K and V cross memory once per kv head. Each warp
// takes 16 keys of every tile with its own online softmax (fp32, exp2); at the end the warps'
// states are LSE-merged (lse.h). The merge of the splits is attn_decode_combine.cuh.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cutlass/numeric_types.h>

#include <cute/arch/copy_sm75.hpp>
#include <cute/arch/mma_sm80.hpp>
#include <type_traits>

#include "attn_decode/attn_decode.h"
#include "attn_decode/config.h"
#include "common/device_utils.cuh"
#include "spava/lse.h"

namespace spava {
namespace decode {

// The m16n8k16 MMA (fp32 accumulators) of the element type, and two floats packed into one
// 32-bit register of it (the first in the low half: the lower column of an A fragment).
template <typename T>
struct Mma16 {
  using Atom = std::conditional_t<std::is_same_v<T, cutlass::bfloat16_t>,
                                  cute::SM80_16x8x16_F32BF16BF16F32_TN,
                                  cute::SM80_16x8x16_F32F16F16F32_TN>;

  __device__ __forceinline__ static void fma(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                             uint32_t b1) {
    Atom::fma(d[0], d[1], d[2], d[3], a[0], a[1], a[2], a[3], b0, b1, d[0], d[1], d[2], d[3]);
  }

  __device__ __forceinline__ static uint32_t pack(float lo, float hi) {
    if constexpr (std::is_same_v<T, cutlass::bfloat16_t>) {
      const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
      return *reinterpret_cast<const uint32_t*>(&v);
    } else {
      const __half2 v = __floats2half2_rn(lo, hi);
      return *reinterpret_cast<const uint32_t*>(&v);
    }
  }
};

template <typename T>
__device__ __forceinline__ uint32_t lds32(const T* p) {
  return *reinterpret_cast<const uint32_t*>(p);
}

// Position in the tile sequence: global tile index and its segment (index within the problem).
struct TileCursor {
  int tile, seg;

  __device__ TileCursor(const AttnDecodePlan& plan, int num_segments, int t) : tile(t), seg(0) {
    settle(plan, num_segments);
  }
  __device__ void settle(const AttnDecodePlan& plan, int num_segments) {
    while (seg + 1 < num_segments && plan.tile_end[seg] <= tile) ++seg;
  }
  __device__ void next(const AttnDecodePlan& plan, int num_segments) {
    ++tile;
    settle(plan, num_segments);
  }
  // first key of the tile, in its segment
  __device__ int key0(const AttnDecodePlan& plan) const {
    return (tile - (seg > 0 ? plan.tile_end[seg - 1] : 0)) * kBlockN;
  }
};

// cp.async of one K and V tile ([kBlockN, kHeadDim] of kv head `kvh`, batch entry `b`) into
// sK / sV; keys past the segment's visible ones are zero-filled.
template <typename T, int kHeadDim>
__device__ __forceinline__ void load_tile(const AttnDecodeParams& p, const TileCursor& c, int b,
                                          int kvh, T* sK, T* sV) {
  constexpr int kChunks = kHeadDim / 8;  // 16-byte chunks per row
  constexpr int kPitch = Smem<kHeadDim>::kPitch;
  const KvSegment& seg = p.args.segments[p.args.problems[0].seg_begin + c.seg];
  const int k0 = c.key0(p.plan);
  const int keys = p.plan.seg_keys[c.seg];
  const T* kb = static_cast<const T*>(seg.k) + b * seg.k_batch_stride + kvh * seg.k_head_stride;
  const T* vb = static_cast<const T*>(seg.v) + b * seg.v_batch_stride + kvh * seg.v_head_stride;
  static_assert(kBlockN * kChunks % kThreads == 0, "tile chunks must divide among the threads");
#pragma unroll
  for (int i = threadIdx.x; i < kBlockN * kChunks; i += kThreads) {
    const int n = i / kChunks, ch = i % kChunks;
    const bool valid = k0 + n < keys;
    const int64_t key = valid ? k0 + n : 0;
    cp_async_16(sK + n * kPitch + ch * 8, kb + key * seg.k_row_stride + ch * 8, valid);
    cp_async_16(sV + n * kPitch + ch * 8, vb + key * seg.v_row_stride + ch * 8, valid);
  }
}

// Q rows of the CTA into sQ [kMaxRows, kPitch] (rows past plan.rows zero); row r is query row
// r / group of head kvh * group + r % group.
template <typename T, int kHeadDim>
__device__ __forceinline__ void load_q(const AttnDecodeParams& p, int b, int kvh, T* sQ) {
  constexpr int kChunks = kHeadDim / 8;
  const AttnProblemArgs& pr = p.args.problems[0];
  const int G = p.plan.group;
  for (int i = threadIdx.x; i < kMaxRows * kChunks; i += kThreads) {
    const int r = i / kChunks, ch = i % kChunks;
    uint4 val = make_uint4(0, 0, 0, 0);
    if (r < p.plan.rows) {
      const T* src = static_cast<const T*>(pr.q) + b * pr.q_batch_stride +
                     (r / G) * pr.q_row_stride + (kvh * G + r % G) * pr.q_head_stride + ch * 8;
      val = *reinterpret_cast<const uint4*>(src);
    }
    *reinterpret_cast<uint4*>(sQ + r * Smem<kHeadDim>::kPitch + ch * 8) = val;
  }
}

// The online-softmax state of one warp's rows g and g + 8 (g = lane / 4): running maxima of
// the raw scores, this lane's part of the row sums, and the m16 x kHeadDim output accumulators
// (o[n][0..1]: row g, columns 8n + 2 (lane % 4) + 0..1; o[n][2..3]: row g + 8).
template <int kHeadDim>
struct WarpState {
  float m[2] = {-INFINITY, -INFINITY};
  float l[2] = {0.f, 0.f};
  float o[kHeadDim / 8][4] = {};

  // Takes a tile's scores s (row g + 8h: s[j][2h + e]; masked keys -inf): raises the maxima,
  // rescales l and o, and leaves in s the probabilities exp2((s - m) * scale_log2), 0 where masked.
  __device__ __forceinline__ void softmax(float (&s)[2][4], float scale_log2) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      float mx = fmaxf(fmaxf(s[0][2 * h], s[0][2 * h + 1]), fmaxf(s[1][2 * h], s[1][2 * h + 1]));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      const float m_new = fmaxf(m[h], mx);
      // a row that has seen no key keeps m = -inf and offset 0: every exp2 is 0, never NaN
      const float offset = m_new == -INFINITY ? 0.f : m_new * scale_log2;
      const float correction = fast_exp2(m[h] * scale_log2 - offset);
      m[h] = m_new;
      float sum = 0.f;
#pragma unroll
      for (int j = 0; j < 2; ++j) {
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          s[j][2 * h + e] = fast_exp2(fmaf(s[j][2 * h + e], scale_log2, -offset));
          sum += s[j][2 * h + e];
        }
      }
      l[h] = l[h] * correction + sum;
#pragma unroll
      for (int n = 0; n < kHeadDim / 8; ++n) {
        o[n][2 * h] *= correction;
        o[n][2 * h + 1] *= correction;
      }
    }
  }
};

// Last visible key of query row i in the current tile (tile-local; -1: none).
__device__ __forceinline__ int last_visible(const KvSegment& seg, int keys, int k0, int i) {
  return i >= seg.row_begin ? min(i + seg.diag, keys - 1) - k0 : -1;
}

// One tile for one warp: S = Q K^T over its 16 keys, mask, online softmax, O += P V.
template <typename T, int kHeadDim>
__device__ __forceinline__ void tile_step(WarpState<kHeadDim>& st,
                                          const uint32_t (&qa)[kHeadDim / 16][4], const T* sK,
                                          const T* sV, const int (&limit)[2], float scale_log2) {
  constexpr int kPitch = Smem<kHeadDim>::kPitch;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int g = lane / 4, t = lane % 4;
  const T* k_warp = sK + warp * kWarpKeys * kPitch;
  float s[2][4] = {};  // s[j]: keys 8j + 2t + 0..1 of the warp's 16; rows g (0..1), g + 8 (2..3)
#pragma unroll
  for (int j = 0; j < 2; ++j) {
    const T* krow = k_warp + (8 * j + g) * kPitch + 2 * t;
#pragma unroll
    for (int kk = 0; kk < kHeadDim / 16; ++kk) {
      Mma16<T>::fma(s[j], qa[kk], lds32(krow + 16 * kk), lds32(krow + 16 * kk + 8));
    }
  }
  const int n0 = warp * kWarpKeys + 2 * t;  // tile-local key of s[j][e] is n0 + 8j + e
#pragma unroll
  for (int j = 0; j < 2; ++j) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      if (n0 + 8 * j + (e & 1) > limit[e / 2]) s[j][e] = -INFINITY;
    }
  }
  st.softmax(s, scale_log2);
  // P as the A fragment of the k16 step over the warp's keys: columns 2t (s[0]) and 8 + 2t (s[1])
  const uint32_t pa[4] = {Mma16<T>::pack(s[0][0], s[0][1]), Mma16<T>::pack(s[0][2], s[0][3]),
                          Mma16<T>::pack(s[1][0], s[1][1]), Mma16<T>::pack(s[1][2], s[1][3])};
  // V^T fragments: ldmatrix.trans of the 8x8 blocks (keys 0-7 | 8-15) x (columns d | d + 8)
  const T* v_lane = sV + (warp * kWarpKeys + lane % 8 + 8 * ((lane / 8) % 2)) * kPitch +
                    8 * (lane / 16);
#pragma unroll
  for (int d = 0; d < kHeadDim / 16; ++d) {
    uint32_t b[4];
    cute::SM75_U16x8_LDSM_T::copy(*reinterpret_cast<const cute::uint128_t*>(v_lane + 16 * d),
                                  b[0], b[1], b[2], b[3]);
    Mma16<T>::fma(st.o[2 * d], pa, b[0], b[1]);
    Mma16<T>::fma(st.o[2 * d + 1], pa, b[2], b[3]);
  }
}

// Writes row r's value at column d (and, for d == 0, its lse): into the problem's out / lse
// with one split, else into this split's slot of the workspace.
template <typename T, int kHeadDim>
__device__ __forceinline__ void store_row(const AttnDecodeParams& p, int b, int kvh, int split,
                                          int r, int d, float value, float lse) {
  const AttnProblemArgs& pr = p.args.problems[0];
  const int G = p.plan.group, q_row = r / G, h = kvh * G + r % G;
  if (p.plan.num_splits > 1) {
    const int64_t item = (int64_t(b) * pr.q_len + q_row) * p.args.heads_q + h;
    const int64_t slot = item * p.plan.num_splits + split;
    p.split_out[slot * kHeadDim + d] = value;
    if (d == 0) p.split_lse[slot] = lse;
    return;
  }
  const int64_t o = b * pr.out_batch_stride + q_row * pr.out_row_stride + h * pr.out_head_stride;
  if (pr.out_fp32) {
    static_cast<float*>(pr.out)[o + d] = value;
  } else {
    static_cast<T*>(pr.out)[o + d] = static_cast<T>(value);
  }
  if (d == 0 && pr.lse != nullptr) {
    pr.lse[b * pr.lse_batch_stride + h * pr.lse_head_stride + q_row * pr.lse_row_stride] = lse;
  }
}

// The warps' states -> the CTA's (normalised output, lse) per row, LSE-merged (lse.h).
template <typename T, int kHeadDim>
__device__ __forceinline__ void epilogue(const AttnDecodeParams& p, WarpState<kHeadDim>& st,
                                         float* smem, int b, int kvh, int split) {
  using S = Smem<kHeadDim>;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int g = lane / 4, t = lane % 4;
  float* sO = smem;                                  // [kWarps, kMaxRows, kOPitch]
  float* sLse = sO + kWarps * kMaxRows * S::kOPitch;  // [kWarps, kMaxRows]
  float* sW = sLse + kWarps * kMaxRows;              // [kWarps, kMaxRows] merge weights
  float* sTotal = sW + kWarps * kMaxRows;            // [kMaxRows]
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    float l = st.l[h];
    l += __shfl_xor_sync(0xffffffffu, l, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);
    // l > 0 iff the row saw a key (its maximum key contributes exp2(0) = 1)
    const float inv = l > 0.f ? 1.f / l : 0.f;
    const int row = warp * kMaxRows + g + 8 * h;
#pragma unroll
    for (int n = 0; n < kHeadDim / 8; ++n) {
      *reinterpret_cast<float2*>(sO + row * S::kOPitch + 8 * n + 2 * t) =
          make_float2(st.o[n][2 * h] * inv, st.o[n][2 * h + 1] * inv);
    }
    if (t == 0) sLse[row] = l > 0.f ? st.m[h] * p.args.softmax_scale + logf(l) : -INFINITY;
  }
  __syncthreads();
  const int rows = p.plan.rows;
  if (threadIdx.x < rows) {
    const int r = threadIdx.x;
    float total = -INFINITY;
    for (int w = 0; w < kWarps; ++w) total = lse_combine(total, sLse[w * kMaxRows + r]);
    for (int w = 0; w < kWarps; ++w) sW[w * kMaxRows + r] = lse_weight(sLse[w * kMaxRows + r], total);
    sTotal[r] = total;
  }
  __syncthreads();
  for (int i = threadIdx.x; i < rows * kHeadDim; i += kThreads) {
    const int r = i / kHeadDim, d = i % kHeadDim;
    float acc = 0.f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) {
      acc += sW[w * kMaxRows + r] * sO[(w * kMaxRows + r) * S::kOPitch + d];
    }
    store_row<T, kHeadDim>(p, b, kvh, split, r, d, acc, sTotal[r]);
  }
}

template <typename T, int kHeadDim>
__global__ void __launch_bounds__(kThreads)
    attn_decode_kernel(const __grid_constant__ AttnDecodeParams p) {
  using S = Smem<kHeadDim>;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* sQ = reinterpret_cast<T*>(smem_raw);
  T* sK = sQ + S::kQElems;                    // [kStages, kBlockN, kPitch]
  T* sV = sK + kStages * S::kTileElems;       // [kStages, kBlockN, kPitch]
  const int split = blockIdx.x, kvh = blockIdx.y, b = blockIdx.z;
  const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const AttnProblemArgs& pr = p.args.problems[0];
  const int num_segments = pr.num_segments;

  load_q<T, kHeadDim>(p, b, kvh, sQ);
  __syncthreads();
  uint32_t qa[kHeadDim / 16][4];  // A fragments of Q: rows g, g + 8; columns 16kk + 2t (+8)
#pragma unroll
  for (int kk = 0; kk < kHeadDim / 16; ++kk) {
    const T* q0 = sQ + g * S::kPitch + 16 * kk + 2 * t;
    const T* q1 = q0 + 8 * S::kPitch;
    qa[kk][0] = lds32(q0);
    qa[kk][1] = lds32(q1);
    qa[kk][2] = lds32(q0 + 8);
    qa[kk][3] = lds32(q1 + 8);
  }
  // query rows of this lane's two rows
  const int q_row[2] = {g / p.plan.group, (g + 8) / p.plan.group};

  const int64_t tiles = p.plan.num_tiles;
  const int t_begin = int(split * tiles / p.plan.num_splits);
  const int t_end = int((split + 1) * tiles / p.plan.num_splits);
  TileCursor load(p.plan, num_segments, t_begin), comp(p.plan, num_segments, t_begin);
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (load.tile < t_end) {
      load_tile<T, kHeadDim>(p, load, b, kvh, sK + s * S::kTileElems, sV + s * S::kTileElems);
      load.next(p.plan, num_segments);
    }
    cp_async_commit();
  }
  WarpState<kHeadDim> st;
  for (int it = 0; comp.tile < t_end; ++it) {
    cp_async_wait<kStages - 2>();  // this thread's copies of tile `it` have landed
    __syncthreads();               // everyone's have, and tile it - 1 is consumed
    if (load.tile < t_end) {
      const int s = (it + kStages - 1) % kStages;
      load_tile<T, kHeadDim>(p, load, b, kvh, sK + s * S::kTileElems, sV + s * S::kTileElems);
      load.next(p.plan, num_segments);
    }
    cp_async_commit();
    const KvSegment& seg = p.args.segments[pr.seg_begin + comp.seg];
    const int keys = p.plan.seg_keys[comp.seg], k0 = comp.key0(p.plan);
    const int limit[2] = {last_visible(seg, keys, k0, q_row[0]),
                          last_visible(seg, keys, k0, q_row[1])};
    const int s = it % kStages;
    tile_step<T, kHeadDim>(st, qa, sK + s * S::kTileElems, sV + s * S::kTileElems, limit,
                           p.args.softmax_scale_log2);
    comp.next(p.plan, num_segments);
  }
  cp_async_wait<0>();
  __syncthreads();  // the K / V tiles are free for the epilogue's state
  epilogue<T, kHeadDim>(p, st, reinterpret_cast<float*>(sK), b, kvh, split);
}

}  // namespace decode
}  // namespace spava
