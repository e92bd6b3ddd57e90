// Launch shape of attn_decode (docs/kernels/attn_decode.md): constants shared by the plan, the
// kernels and the launcher.
#pragma once

namespace spava {
namespace decode {

// Query rows of one CTA (q_len * group, one kv head): one m16n8k16 row tile. More rows would
// need a second accumulator tile per warp; past ~16 rows the prefill kernel's per-head tiles no
// longer waste most of their work.
constexpr int kMaxRows = 16;
constexpr int kWarps = 4;
constexpr int kThreads = 32 * kWarps;
constexpr int kWarpKeys = 16;                // keys per warp and tile: one k16 step of P V
constexpr int kBlockN = kWarpKeys * kWarps;  // keys per tile
constexpr int kStages = 3;                   // K / V tiles in flight: 2 loading, 1 computed
// Splits: the grid aims at kCtasPerSm CTAs per SM (the shared memory of D = 128 fits 2), each
// with at least kMinTilesPerSplit key tiles, and at most kMaxSplits per (batch, kv head).
constexpr int kCtasPerSm = 2;
constexpr int kMinTilesPerSplit = 2;
constexpr int kMaxSplits = 256;
constexpr int kCombineThreads = 256;  // the merge of the splits: one CTA per output row

// Shared memory of the main kernel: Q [kMaxRows, kPitch] and kStages tiles of K and V
// [kBlockN, kPitch], 16-bit; rows padded by 16 bytes so that the 8 rows a fragment load touches
// fall in distinct banks. The epilogue reuses the K / V tiles for the warps' states.
template <int kHeadDim>
struct Smem {
  static constexpr int kPitch = kHeadDim + 8;  // elements per row
  static constexpr int kOPitch = kHeadDim + 8;  // fp32 per row of a warp's output state
  static constexpr int kQElems = kMaxRows * kPitch;
  static constexpr int kTileElems = kBlockN * kPitch;
  static constexpr int kBytes = (kQElems + 2 * kStages * kTileElems) * 2;
  // epilogue: per warp kMaxRows rows of output, lse and merge weight; per row the total lse
  static constexpr int kEpilogueBytes =
      (kWarps * kMaxRows * (kOPitch + 2) + kMaxRows) * 4;
  static_assert(kEpilogueBytes <= 2 * kStages * kTileElems * 2, "epilogue state overflows");
  static_assert(kHeadDim % 16 == 0, "head dim must be a multiple of 16");
};

}  // namespace decode
}  // namespace spava
