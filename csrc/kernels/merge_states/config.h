// Launch shape of merge_states: one warp per (batch, row, head) item.
#pragma once

namespace spava {

constexpr int kMergeThreads = 256;  // 8 items per block

}  // namespace spava
