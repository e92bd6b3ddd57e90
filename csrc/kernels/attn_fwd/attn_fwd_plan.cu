// plan_attn_fwd: the schedule of one attn_fwd launch (host only).
//
// Units (scheduler.cuh) are 128 (D = 64: 192) query rows x one head x one batch entry, handed to
// a persistent grid of C = min(units, SMs, sm_budget) CTAs; with CTA pairs (pair.cuh: even
// heads_q, D a multiple of 64) pairs of units to C / 2 clusters of 2 CTAs, and the model below
// runs on pairs. Two things decide how well the grid is used, and the plan picks both:
//  * Split-KV. A launch with fewer units than SMs cuts every query tile's key tiles into up to 32
//    ranges (about two waves). A launch of several rounds whose last round leaves CTAs idle (a
//    "tail": e.g. 1008 units of ~170 key tiles on 132 CTAs: the 8th round is 64 % full, ~3.8 %
//    of the launch lost) splits the last query tiles of its last problem 2-4 ways instead.
//  * The picker: static snake rounds, or the atomic counter (greedy: a CTA takes the next unit
//    when it is free), which evens out units of uneven cost (causal rows).
// The choice comes from a model of the makespan: a unit costs its key tiles plus kUnitOverhead
// tile-times (Q load, first GEMM without overlap, epilogue), the model of
// benchmarks/schedule_model.py. Plans are cached per thread by launch shape, since a model runs
// over every unit and a model's layers repeat the same shapes.
#include <algorithm>
#include <functional>
#include <map>
#include <queue>
#include <vector>

#include "attn_fwd/attn_fwd.h"
#include "attn_fwd/config.h"
#include "attn_fwd/mask.cuh"

namespace spava {
namespace {

constexpr double kUnitOverhead = 3.0;  // tile-times per unit beyond its key tiles (model)
constexpr int kMaxModelRounds = 64;    // beyond this a tail costs < ~1.6 %: not modelled
constexpr double kMinGain = 0.01;      // a plan other than static / no tail split must win 1 %

// A candidate plan: problem `tail_problem` splits its first `split_tiles` query tiles
// `splits` ways (0 tiles: no tail split); `counter`: greedy picker.
struct Plan {
  int tail_problem = -1, split_tiles = 0, splits = 1;
  bool counter = false;
};

// Key tiles of every query tile of every problem: tiles[problem][m_block].
using TileCounts = std::vector<std::vector<int>>;

// Unit costs in unit order (scheduler.cuh's numbering) under `plan`.
std::vector<double> unit_costs(const TileCounts& tiles, int heads_batch, const Plan& plan) {
  std::vector<double> c;
  for (size_t pi = 0; pi < tiles.size(); ++pi) {
    const auto& t = tiles[pi];
    const int m_blocks = int(t.size());
    const int split = int(pi) == plan.tail_problem ? plan.split_tiles : 0;
    for (int m = m_blocks - 1; m >= split; --m)
      c.insert(c.end(), heads_batch, t[m] + kUnitOverhead);
    for (int m = split - 1; m >= 0; --m) {
      for (int s = 0; s < plan.splits; ++s) {  // the kernel's ranges: total * s / splits
        const int n = t[m] * (s + 1) / plan.splits - t[m] * s / plan.splits;
        c.insert(c.end(), heads_batch, n + kUnitOverhead);
      }
    }
  }
  return c;
}

double static_makespan(const std::vector<double>& costs, int ctas) {
  std::vector<double> load(ctas, 0.0);
  for (size_t i = 0; i < costs.size(); ++i) {
    const int round = int(i / ctas), j = int(i % ctas);
    load[(round & 1) ? ctas - 1 - j : j] += costs[i];
  }
  return *std::max_element(load.begin(), load.end());
}

double greedy_makespan(const std::vector<double>& costs, int ctas) {
  std::priority_queue<double, std::vector<double>, std::greater<double>> free_at;
  for (int j = 0; j < ctas; ++j) free_at.push(0.0);
  double end = 0.0;
  for (double c : costs) {
    const double t = free_at.top() + c;
    free_at.pop();
    free_at.push(t);
    end = std::max(end, t);
  }
  return end;
}

// Whether a launch can run as CTA pairs: a cluster of 2 CTAs fits on the device, heads_q is
// even, and head_dim has the 128-byte swizzle (head dims without it load K / V in narrow boxes,
// D = 80: 5 boxes of 16 columns per half tile; paired, D = 80 measured 7.7 % slower); a budget
// of one CTA runs unpaired.
bool can_pair(const AttnFwdCommonArgs& a, int max_pairs) {
  return max_pairs > 0 && a.heads_q % 2 == 0 && a.head_dim % 64 == 0 && a.sm_budget != 1;
}

// The best plan for a launch of several rounds, by the model.
Plan choose_plan(const TileCounts& tiles, int heads_batch, int ctas) {
  Plan best;
  const auto cost_of = [&](const Plan& plan) {
    const auto c = unit_costs(tiles, heads_batch, plan);
    return plan.counter ? greedy_makespan(c, ctas) : static_makespan(c, ctas);
  };
  const double plain = cost_of(best);
  double best_cost = plain;
  const auto consider = [&](const Plan& plan) {
    const double c = cost_of(plan);
    if (c < best_cost) best_cost = c, best = plan;
  };
  consider(Plan{-1, 0, 1, true});
  // tail splits of the last problem with query tiles: the tiles that the last round holds
  int last = int(tiles.size()) - 1;
  while (last >= 0 && tiles[last].empty()) --last;
  if (last >= 0) {
    int units = 0;
    for (const auto& t : tiles) units += int(t.size()) * heads_batch;
    const int tail_units = units % ctas;
    const int m_blocks = int(tiles[last].size());
    const int first = (tail_units + heads_batch - 1) / heads_batch;
    for (int n = first; tail_units > 0 && n <= std::min(first + 2, m_blocks); ++n) {
      for (int s = 2; s <= 4; ++s) {
        consider(Plan{last, n, s, false});
        consider(Plan{last, n, s, true});
      }
    }
  }
  return best_cost < plain * (1.0 - kMinGain) ? best : Plan{};
}

// Plans by launch shape (per thread; a few hundred shapes at most, then cleared).
using PlanKey = std::vector<int64_t>;

PlanKey plan_key(const AttnFwdParams& p, int ctas) {
  PlanKey k{ctas, p.pairs, p.batch, p.heads_q, p.head_dim, p.num_problems};
  for (int i = 0; i < p.num_problems; ++i) {
    const AttnProblem& pr = p.problems[i];
    k.insert(k.end(), {pr.q_len, pr.seg_begin, pr.num_segments});
  }
  for (int s = 0; s < p.num_segments; ++s)
    k.insert(k.end(), {p.segments[s].len, p.segments[s].row_begin, p.segments[s].diag});
  return k;
}

// The caller's fields of every problem, without a schedule yet (one query tile range, no split).
AttnFwdParams params_of(const AttnFwdArgs& args, int kBlockM) {
  AttnFwdParams p{};
  static_cast<AttnFwdCommonArgs&>(p) = args;
  p.num_problems = args.num_problems;
  for (int i = 0; i < args.num_problems; ++i) {
    AttnProblem& pr = p.problems[i];
    static_cast<AttnProblemArgs&>(pr) = args.problems[i];
    pr.m_blocks = (pr.q_len + kBlockM - 1) / kBlockM;
    pr.num_splits = 1;
  }
  return p;
}

// A launch with fewer units than `slots`: split-KV of every query tile, about two waves.
void split_small_grid(AttnFwdParams& p, int base_units, int slots, int kBlockM) {
  for (int i = 0; i < p.num_problems; ++i) {
    AttnProblem& pr = p.problems[i];
    if (pr.m_blocks == 0 || pr.done != nullptr) continue;
    // the longest query tile (the last one) bounds the useful split
    const int tiles = attn::SegmentMask::total_tiles<attn::kAttnBlockN>(
        p, pr, (pr.m_blocks - 1) * kBlockM, pr.q_len - 1);
    const int want = (2 * slots + base_units - 1) / base_units;
    pr.num_splits = std::max(1, std::min({want, tiles / 4, 32}));
    pr.split_m_blocks = pr.num_splits > 1 ? pr.m_blocks : 0;
  }
}

// A launch of several rounds: the model's plan (cached by shape), applied to p.
void apply_model_plan(AttnFwdParams& p, int ctas, int kBlockM) {
  static thread_local std::map<PlanKey, Plan> cache;
  const PlanKey key = plan_key(p, ctas);
  auto it = cache.find(key);
  if (it == cache.end()) {
    TileCounts tiles(p.num_problems);
    for (int i = 0; i < p.num_problems; ++i) {
      const AttnProblem& pr = p.problems[i];
      for (int m = 0; m < pr.m_blocks; ++m)
        tiles[i].push_back(attn::SegmentMask::total_tiles<attn::kAttnBlockN>(
            p, pr, m * kBlockM, std::min(pr.q_len, (m + 1) * kBlockM) - 1));
    }
    if (cache.size() >= 256) cache.clear();
    // with pairs the model schedules pairs of equal units on pairs of CTAs
    const int per_claim = p.pairs ? 2 : 1;
    it = cache.emplace(key, choose_plan(tiles, p.heads_q * p.batch / per_claim, ctas / per_claim))
             .first;
  }
  const Plan& plan = it->second;
  if (plan.split_tiles > 0) {
    AttnProblem& pr = p.problems[plan.tail_problem];
    pr.num_splits = plan.splits;
    pr.split_m_blocks = plan.split_tiles;
  }
  p.wants_sched = plan.counter;
}

}  // namespace

AttnFwdParams plan_attn_fwd(const AttnFwdArgs& args, int num_sms, int max_pairs) {
  const int kBlockM = attn::attn_block_m(args.head_dim);  // tiles of config.h
  const int heads_batch = args.heads_q * args.batch;
  AttnFwdParams p = params_of(args, kBlockM);
  int base_units = 0;  // units without split-KV
  bool flags = false;  // ready or done flags: the plan stays static, without a tail split
  for (int i = 0; i < p.num_problems; ++i) {
    base_units += p.problems[i].m_blocks * heads_batch;
    flags |= p.problems[i].ready != nullptr || p.problems[i].done != nullptr;
  }
  // CTA pairs (pair.cuh): units 2v, 2v + 1 are two heads of one query tile, on `slots` CTAs
  p.pairs = can_pair(args, max_pairs);
  const int slots = p.pairs ? 2 * std::min(max_pairs, num_sms / 2) : num_sms;
  const int ctas = attn_fwd_grid_ctas(base_units, slots, p.sm_budget, p.pairs);
  // Split-KV not with a sched workspace (the partials of a split must not span two launches)
  // nor with done flags (the merge after the kernel would write rows already reported done).
  // The counter and tail splits not with ready flags either (the counter defers units whose
  // flag is late, for a finishing launch that only the caller can queue).
  if (p.sched == nullptr && base_units > 0 && base_units < slots) {
    split_small_grid(p, base_units, slots, kBlockM);
  } else if (p.sched == nullptr && !flags && base_units > 0 &&
             base_units <= kMaxModelRounds * ctas) {
    apply_model_plan(p, ctas, kBlockM);
  }
  p.num_units = 0;
  for (int i = 0; i < p.num_problems; ++i) {
    AttnProblem& pr = p.problems[i];
    pr.split_len = std::min(pr.q_len, pr.split_m_blocks * kBlockM);
    pr.unit_begin = p.num_units;
    pr.units = (pr.m_blocks + (pr.num_splits - 1) * pr.split_m_blocks) * heads_batch;
    p.num_units += pr.units;
  }
  p.grid_ctas = attn_fwd_grid_ctas(p.num_units, slots, p.sm_budget, p.pairs);
  return p;
}

}  // namespace spava
