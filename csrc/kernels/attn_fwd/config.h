// Tile sizes and shared-memory layouts of attn_fwd (sm90 path), per head dim.
#pragma once

#include <type_traits>

#include <cute/tensor.hpp>
#include <cute/atom/mma_traits_sm90_gmma.hpp>
#include <cute/arch/mma_sm90.hpp>

#include "attn_fwd/pair.cuh"
#include "attn_fwd/work_unit.h"

namespace spava::attn {

using namespace cute;

// Largest K-major GMMA swizzle atom whose width divides the head dim (128B for D % 64 == 0,
// 32B for D = 80).
template <typename T, int kHeadDim>
constexpr auto k_major_smem_atom() {
  if constexpr (kHeadDim % 64 == 0) {
    return GMMA::Layout_K_SW128_Atom<T>{};
  } else if constexpr (kHeadDim % 32 == 0) {
    return GMMA::Layout_K_SW64_Atom<T>{};
  } else {
    static_assert(kHeadDim % 16 == 0, "head dim must be a multiple of 16");
    return GMMA::Layout_K_SW32_Atom<T>{};
  }
}

// Consumer warpgroups (64 query rows each) per CTA. D = 64 runs three: its GEMMs are half as
// long per softmax as D = 128's, so a third warpgroup keeps the tensor cores fed (and fits the
// register file at 160 per consumer thread).
constexpr __host__ __device__ int attn_consumer_warpgroups(int head_dim) {
  return head_dim <= 64 ? 3 : 2;
}
constexpr __host__ __device__ int attn_block_m(int head_dim) {
  return 64 * attn_consumer_warpgroups(head_dim);
}
constexpr int kAttnBlockN = 128;

// Warp-specialised TMA kernel: warpgroup 0 produces (one thread issues TMA loads of Q and of the
// K/V tiles into a kStages ring guarded by full/empty mbarriers), the consumer warpgroups take
// 64 query rows each and issue their GEMMs in turns (ping-pong / round robin) so that one
// warpgroup's softmax overlaps the others' GEMMs. Smem 192 KB at D = 128.
template <typename T, int kHeadDim_>
struct Sm90WsConfig {
  using Element = T;
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kConsumerWarpGroups = attn_consumer_warpgroups(kHeadDim);
  static constexpr int kBlockM = 64 * kConsumerWarpGroups;
  static constexpr int kBlockN = kAttnBlockN;
  static constexpr int kStages = 2;
  static constexpr int kConsumerThreads = kConsumerWarpGroups * 128;
  static constexpr int kThreads = kConsumerThreads + 128;
  // setmaxnreg: every thread starts with kLaunchRegs (the register file over kThreads); the
  // consumers' increase is served only from what the producer warpgroup releases, so the
  // release must cover it (else setmaxnreg.inc waits forever: a hang, seen with 32 / 240).
  static constexpr int kLaunchRegs = 65536 / kThreads / 8 * 8;
  static constexpr int kProducerRegs = kConsumerWarpGroups == 2 ? 24 : 32;
  static constexpr int kConsumerRegs = kConsumerWarpGroups == 2 ? 240 : 160;
  static_assert(128 * (kLaunchRegs - kProducerRegs) >=
                kConsumerThreads * (kConsumerRegs - kLaunchRegs));

  // Q in registers (RS wgmma for S = Q K^T): Q is read from shared memory once per unit
  // instead of at every key tile, and its buffer is released right after. D = 128 only (32
  // more registers of its 240): at D = 80 it measured no faster, and at D = 64 (three
  // warpgroups at 160 registers) ptxas serialises the wgmmas (docs/kernels/attn_fwd.md).
  static constexpr bool kQInRegs = kHeadDim == 128;
  using OneWarpGroup = Layout<Shape<_1, _1, _1>>;
  using MmaQK = std::conditional_t<
      kQInRegs,
      decltype(make_tiled_mma(
          GMMA::rs_op_selector<T, T, float, Shape<_64, Int<kBlockN>, Int<kHeadDim>>>(),
          OneWarpGroup{})),
      decltype(make_tiled_mma(
          GMMA::ss_op_selector<T, T, float, Shape<_64, Int<kBlockN>, Int<kHeadDim>>>(),
          OneWarpGroup{}))>;
  using MmaPV = decltype(make_tiled_mma(
      GMMA::rs_op_selector<T, T, float, Shape<_64, Int<kHeadDim>, Int<kBlockN>>, GMMA::Major::K,
                           GMMA::Major::MN>(),
      OneWarpGroup{}));

  using SmemAtom = decltype(k_major_smem_atom<T, kHeadDim>());
  static constexpr int kBoxCols = size<1>(SmemAtom{});  // columns per TMA box (= swizzle span)
  static constexpr int kBoxes = kHeadDim / kBoxCols;
  static constexpr int kSwizzleBytes = kBoxCols * int(sizeof(T));
  using SmemLayoutQ = decltype(tile_to_shape(SmemAtom{}, Shape<Int<kBlockM>, Int<kHeadDim>>{}));
  using SmemLayoutKV = decltype(tile_to_shape(
      SmemAtom{}, Shape<Int<kBlockN>, Int<kHeadDim>, Int<kStages>>{}));
  using SmemLayoutVt = decltype(composition(
      SmemLayoutKV{}, make_ordered_layout(Shape<Int<kHeadDim>, Int<kBlockN>, Int<kStages>>{},
                                          Step<_2, _1, _3>{})));

  // Output tile of the TMA-store epilogue (epilogue.cuh): Q-shaped, each consumer warpgroup
  // writes its 64 rows with stmatrix. Head dims with the 128-byte swizzle (64, 128).
  static constexpr bool kTmaStoreO = kHeadDim % 64 == 0;
  using SmemLayoutO = SmemLayoutQ;

  struct SharedStorage {
    alignas(1024) T q[cosize_v<SmemLayoutQ>];
    alignas(1024) T o[kTmaStoreO ? cosize_v<SmemLayoutO> : 8];
    alignas(1024) T k[cosize_v<SmemLayoutKV>];
    alignas(1024) T v[cosize_v<SmemLayoutKV>];
    alignas(8) uint64_t q_full, q_empty;
    uint64_t k_full[kStages], k_empty[kStages], v_full[kStages], v_empty[kStages];
    UnitSlot slots[2];  // by unit parity: the unit being loaded / computed (work_unit.h)
    PairMailbox mail;   // CTA pairs under the atomic counter: the leader's claims (pair.cuh)
  };
  static constexpr int kSmemBytes = int(sizeof(SharedStorage));
  static constexpr uint32_t kTileBytes = kBlockN * kHeadDim * sizeof(T);
  static constexpr int kHalfRows = kBlockN / 2;  // rows of K / V one CTA of a pair loads
  static constexpr uint32_t kQBytes = kBlockM * kHeadDim * sizeof(T);
};

}  // namespace spava::attn
