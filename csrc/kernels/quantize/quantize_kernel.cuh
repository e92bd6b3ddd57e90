// quantize_fp8 kernel: one CTA per block (b, j, h) of rows [j * block, +block) of head h.
//
// Thread mapping: a row of head_dim elements is `chunks` = head_dim / 8 chunks of 8 elements (one
// 16-byte load); thread t holds chunk t % chunks of row t / chunks of a round of
// rows_per_round = kQuantThreads / chunks rows (threads past rows_per_round * chunks idle).
// Two passes over the block: (1) load (and rotate) every round, keeping the first kQuantRounds
// rounds in registers (raw, or rotated fp32), and reduce amax(|y|) over the CTA; (2) scale,
// convert to e4m3 and store, reloading (from L2) only rounds past kQuantRounds. Memory-bound:
// each byte of x is read from HBM once and each byte of values written once.
//
// Rotation (fwht): the butterflies of the Walsh-Hadamard transform in stage order h = 1, 2, 4,
// ..., head_dim / 2, element i (bit h clear) and i + h becoming (a + b, a - b); stages h < 8 in
// registers, h = 8m between lanes t and t ^ m (a row's chunks are consecutive lanes of one warp,
// since chunks divides 32). Then * rotate_scale. The same fp32 operations in the same order as
// the CPU op and spava_ext.fp8.rotate, so all three give the same bytes.
//
// Transposed output: pass 2 goes over windows of kQuantRounds rounds; each window's e4m3 rows
// go to a shared tile [rows][head_dim + 4] (the 4-byte pad makes the row-quad reads below hit 8
// banks instead of 1), then the tile is written as columns of [b, h, d, len_pad]: 4 x 4 byte
// blocks transposed with byte permutes and written as 32-bit words (block % 4 == 0), else one
// byte per thread. The last block's CTA also writes the zero columns [len, len_pad).
#pragma once

#include <cuda_fp8.h>

#include <cfloat>
#include <cstdint>

#include "spava/quantize_params.h"

namespace spava {

constexpr int kQuantThreads = 256;
constexpr int kQuantVec = 8;     // elements per thread and round: one 16-byte load
constexpr int kQuantRounds = 8;  // rounds a thread keeps in registers between the two passes
constexpr float kE4m3Max = 448.f;

// Where a CTA's block lies and how its threads cover it.
struct QuantBlock {
  int b, j, h;
  int rows;            // rows of x in the block
  int chunks;          // 8-element chunks per row
  int rows_per_round;  // rows one round of the CTA covers
  int k, r;            // this thread's chunk and row within a round (r >= rows_per_round: idle)
};

__device__ __forceinline__ QuantBlock quant_block(const QuantizeFp8Params& p) {
  QuantBlock q;
  q.h = int(blockIdx.x % unsigned(p.heads));
  q.j = int((blockIdx.x / unsigned(p.heads)) % unsigned(p.num_blocks));
  q.b = int(blockIdx.x / (unsigned(p.heads) * unsigned(p.num_blocks)));
  q.rows = min(p.block, p.len - q.j * p.block);
  q.chunks = p.head_dim / kQuantVec;
  q.rows_per_round = kQuantThreads / q.chunks;
  q.k = int(threadIdx.x) % q.chunks;
  q.r = int(threadIdx.x) / q.chunks;
  return q;
}

// y *= H_D / sqrt(D) on the row held by `chunks` consecutive lanes (8 elements each).
__device__ __forceinline__ void fwht(float (&v)[kQuantVec], int chunks, float scale) {
#pragma unroll
  for (int h = 1; h < kQuantVec; h <<= 1) {
#pragma unroll
    for (int i = 0; i < kQuantVec; ++i) {
      if (i & h) continue;
      const float a = v[i], b = v[i + h];
      v[i] = a + b;
      v[i + h] = a - b;
    }
  }
  for (int m = 1; m < chunks; m <<= 1) {
    const bool upper = (threadIdx.x & unsigned(m)) != 0;  // bit m of the chunk index
#pragma unroll
    for (int i = 0; i < kQuantVec; ++i) {
      const float other = __shfl_xor_sync(0xffffffffu, v[i], m);
      v[i] = upper ? other - v[i] : v[i] + other;
    }
  }
#pragma unroll
  for (int i = 0; i < kQuantVec; ++i) v[i] *= scale;
}

// The 16 bytes of round `round` this thread loads (zeros for rows past the block and for idle
// threads): predicated loads, so a thread's rounds can all be in flight at once.
template <typename T>
__device__ __forceinline__ uint4 load_round(const QuantizeFp8Params& p, const QuantBlock& q,
                                            int round) {
  const int row = round * q.rows_per_round + q.r;
  const int64_t at = q.b * p.x_batch_stride + int64_t(q.j * p.block + row) * p.x_row_stride +
                     q.h * p.x_head_stride + q.k * kQuantVec;
  const bool valid = q.r < q.rows_per_round && row < q.rows;
  return valid ? __ldg(reinterpret_cast<const uint4*>(static_cast<const T*>(p.x) + at))
               : make_uint4(0, 0, 0, 0);
}

// The fp32 values y of a loaded chunk (rotated when kRotate). With kRotate every thread of the
// CTA must call it together (the rotation's shuffles need whole warps).
template <typename T, bool kRotate>
__device__ __forceinline__ void round_values(const QuantizeFp8Params& p, const QuantBlock& q,
                                             const uint4& raw, float (&v)[kQuantVec]) {
  const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
  for (int i = 0; i < kQuantVec; ++i) v[i] = static_cast<float>(e[i]);
  if (kRotate) fwht(v, q.chunks, p.rotate_scale);
}

__device__ __forceinline__ float abs_max(float amax, const float (&v)[kQuantVec]) {
#pragma unroll
  for (int i = 0; i < kQuantVec; ++i) amax = fmaxf(amax, fabsf(v[i]));
  return amax;
}

// max over the CTA of each thread's `value` (every thread gets it).
__device__ __forceinline__ float block_max(float value, float* warp_max) {
#pragma unroll
  for (int m = 16; m >= 1; m >>= 1) value = fmaxf(value, __shfl_xor_sync(0xffffffffu, value, m));
  if (threadIdx.x % 32 == 0) warp_max[threadIdx.x / 32] = value;
  __syncthreads();
  value = warp_max[0];
#pragma unroll
  for (int w = 1; w < kQuantThreads / 32; ++w) value = fmaxf(value, warp_max[w]);
  return value;
}

// 8 e4m3 bytes of v * inv (round to nearest even, saturated to +-448), element 0 in byte 0.
__device__ __forceinline__ uint2 to_e4m3(const float (&v)[kQuantVec], float inv) {
  uint32_t w[2];
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    uint32_t word = 0;
#pragma unroll
    for (int i = 0; i < 4; i += 2) {
      const float2 pair = make_float2(v[4 * half + i] * inv, v[4 * half + i + 1] * inv);
      const uint32_t two = __nv_cvt_float2_to_fp8x2(pair, __NV_SATFINITE, __NV_E4M3);
      word |= two << (8 * i);
    }
    w[half] = word;
  }
  return make_uint2(w[0], w[1]);
}

// Writes rows [0, n) of the shared tile [rows][pitch] to columns [col, col + n) of the transposed
// values of (b, h): dst[d * len_pad + col + r] = tile[r][d]. kWords: n, col and len_pad are
// multiples of 4.
template <bool kWords>
__device__ __forceinline__ void store_transposed(const QuantizeFp8Params& p, const uint8_t* tile,
                                                 int pitch, uint8_t* dst, int n) {
  const int D = p.head_dim;
  if (kWords) {
    const int quads = n / 4;
    for (int t = int(threadIdx.x); t < quads * (D / 4); t += kQuantThreads) {
      const int rq = t % quads, dw = t / quads;  // row quad, word of 4 columns d
      uint32_t in[4];
#pragma unroll
      for (int e = 0; e < 4; ++e)
        in[e] = *reinterpret_cast<const uint32_t*>(tile + (4 * rq + e) * pitch + 4 * dw);
      // in[e] byte c = tile[4 rq + e][4 dw + c]  ->  out[c] byte e
      const uint32_t lo01 = __byte_perm(in[0], in[1], 0x5140);  // in0.b0 in1.b0 in0.b1 in1.b1
      const uint32_t hi01 = __byte_perm(in[0], in[1], 0x7362);  // in0.b2 in1.b2 in0.b3 in1.b3
      const uint32_t lo23 = __byte_perm(in[2], in[3], 0x5140);
      const uint32_t hi23 = __byte_perm(in[2], in[3], 0x7362);
      const uint32_t out[4] = {__byte_perm(lo01, lo23, 0x5410), __byte_perm(lo01, lo23, 0x7632),
                               __byte_perm(hi01, hi23, 0x5410), __byte_perm(hi01, hi23, 0x7632)};
#pragma unroll
      for (int c = 0; c < 4; ++c)
        *reinterpret_cast<uint32_t*>(dst + int64_t(4 * dw + c) * p.len_pad + 4 * rq) = out[c];
    }
  } else {
    for (int t = int(threadIdx.x); t < n * D; t += kQuantThreads) {
      const int r = t % n, d = t / n;
      dst[int64_t(d) * p.len_pad + r] = tile[r * pitch + d];
    }
  }
}

template <typename T, bool kRotate, bool kTranspose>
__global__ void __launch_bounds__(kQuantThreads)
    quantize_fp8_kernel(const QuantizeFp8Params p) {
  extern __shared__ __align__(16) uint8_t tile[];  // kTranspose: [window rows][head_dim + 4]
  __shared__ float warp_max[kQuantThreads / 32];
  const QuantBlock q = quant_block(p);
  const int rounds = (q.rows + q.rows_per_round - 1) / q.rows_per_round;

  // Pass 1: amax over the block. Rounds < kQuantRounds stay in registers: raw 16-bit values,
  // or with kRotate the rotated fp32 values (recomputing would double the shuffles).
  uint4 raw[kQuantRounds];
  float cache[kRotate ? kQuantRounds : 1][kQuantVec];
#pragma unroll
  for (int i = 0; i < kQuantRounds; ++i) raw[i] = load_round<T>(p, q, i);
  float amax = 0.f;
#pragma unroll
  for (int i = 0; i < kQuantRounds; ++i) {
    if (i >= rounds) break;
    float v[kQuantVec];
    round_values<T, kRotate>(p, q, raw[i], v);
    amax = abs_max(amax, v);
    if (kRotate) {
#pragma unroll
      for (int e = 0; e < kQuantVec; ++e) cache[kRotate ? i : 0][e] = v[e];
    }
  }
  for (int i = kQuantRounds; i < rounds; ++i) {
    float v[kQuantVec];
    round_values<T, kRotate>(p, q, load_round<T>(p, q, i), v);
    amax = abs_max(amax, v);
  }
  amax = block_max(amax, warp_max);
  const float scale = amax > 0.f ? fmaxf(amax / kE4m3Max, FLT_MIN) : 1.f;
  const float inv = 1.f / scale;
  if (threadIdx.x == 0) {
    p.scales[q.b * p.scales_batch_stride + q.j * p.scales_block_stride +
             q.h * p.scales_head_stride] = scale;
  }

  // Pass 2: values. Transposed, the last block also covers the pad columns [len, len_pad).
  const int row0 = q.j * p.block;
  const int rows_out = kTranspose && q.j == p.num_blocks - 1 ? p.len_pad - row0 : q.rows;
  const int window = kQuantRounds * q.rows_per_round;
  const int pitch = p.head_dim + 4;
  uint8_t* dst_t = p.values + (int64_t(q.b) * p.heads + q.h) * p.head_dim * p.len_pad + row0;
  for (int w0 = 0; w0 < rows_out; w0 += window) {
    const int round0 = w0 / q.rows_per_round;
#pragma unroll
    for (int i = 0; i < kQuantRounds; ++i) {
      float v[kQuantVec];
      if (round0 + i >= rounds) {
#pragma unroll
        for (int e = 0; e < kQuantVec; ++e) v[e] = 0.f;
      } else if (w0 == 0 && kRotate) {
#pragma unroll
        for (int e = 0; e < kQuantVec; ++e) v[e] = cache[kRotate ? i : 0][e];
      } else {
        const bool cached = !kRotate && w0 == 0;
        round_values<T, kRotate>(p, q, cached ? raw[i] : load_round<T>(p, q, round0 + i), v);
      }
      if (q.r >= q.rows_per_round) continue;
      const uint2 bytes = to_e4m3(v, inv);
      const int row = (round0 + i) * q.rows_per_round + q.r;
      if (kTranspose) {
        uint32_t* at = reinterpret_cast<uint32_t*>(tile + (i * q.rows_per_round + q.r) * pitch +
                                                   q.k * kQuantVec);
        at[0] = bytes.x;
        at[1] = bytes.y;
      } else if (row < q.rows) {
        const int64_t at =
            ((int64_t(q.b) * p.len + row0 + row) * p.heads + q.h) * p.head_dim + q.k * kQuantVec;
        *reinterpret_cast<uint2*>(p.values + at) = bytes;
      }
    }
    if (kTranspose) {
      __syncthreads();
      const int n = min(window, rows_out - w0);
      if (p.block % 4 == 0) {
        store_transposed<true>(p, tile, pitch, dst_t + w0, n);
      } else {
        store_transposed<false>(p, tile, pitch, dst_t + w0, n);
      }
      __syncthreads();
    }
  }
}

}  // namespace spava
