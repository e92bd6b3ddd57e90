// attn_decode_applies and plan_attn_decode: which launches take the decode kernel, and their
// splits (host code).
#include <algorithm>
#include <cstdint>

#include "attn_decode/attn_decode.h"
#include "attn_decode/config.h"

namespace spava {

bool attn_decode_applies(const AttnFwdArgs& a) {
  if (a.num_problems != 1 || a.sched != nullptr || a.finish || a.sm_budget != 0) return false;
  const AttnProblemArgs& pr = a.problems[0];
  if (pr.ready != nullptr || pr.done != nullptr || pr.q_len < 1) return false;
  if (a.heads_kv < 1 || a.heads_q % a.heads_kv != 0) return false;
  if (a.dtype == DType::kFloat32 || a.head_dim % 16 != 0) return false;
  const int64_t rows = int64_t(pr.q_len) * (a.heads_q / a.heads_kv);
  return rows <= decode::kMaxRows && a.batch <= 65535 && a.heads_kv <= 65535;
}

AttnDecodePlan plan_attn_decode(const AttnFwdArgs& a, int num_sms) {
  using namespace decode;
  const AttnProblemArgs& pr = a.problems[0];
  AttnDecodePlan p{};
  p.group = a.heads_q / a.heads_kv;
  p.rows = pr.q_len * p.group;
  int64_t tiles = 0;
  for (int s = 0; s < pr.num_segments; ++s) {
    const KvSegment& seg = a.segments[pr.seg_begin + s];
    // the last row (q_len - 1) sees the most: keys j <= q_len - 1 + diag, if row_begin allows
    const int64_t keys = seg.row_begin < pr.q_len
                             ? std::clamp<int64_t>(int64_t(pr.q_len) + seg.diag, 0, seg.len)
                             : 0;
    p.seg_keys[s] = int(keys);
    tiles += (keys + kBlockN - 1) / kBlockN;
    p.tile_end[s] = int(tiles);
  }
  p.num_tiles = int(tiles);
  const int64_t heads = int64_t(a.batch) * a.heads_kv;  // CTAs per split
  int64_t splits = (int64_t(kCtasPerSm) * std::max(num_sms, 1) + heads - 1) / heads;
  splits = std::min<int64_t>({splits, tiles / kMinTilesPerSplit, kMaxSplits});
  p.num_splits = int(std::max<int64_t>(splits, 1));
  if (p.num_splits > 1) {
    const size_t items = size_t(a.batch) * pr.q_len * a.heads_q;
    p.workspace_floats = items * p.num_splits * (a.head_dim + 1);
  }
  return p;
}

}  // namespace spava
