// The persistent schedule of attn_fwd: a launch's work is a list of units
//   unit = (problem, query tile, split, head, batch),
// numbered problem by problem (in the caller's order), and inside a problem with the head
// fastest, then the batch, the split, and the query tile slowest, last tile first (causal rows
// see the most keys in the last tiles: longest first); the tiles [0, split_m_blocks) that
// plan_attn_fwd splits (split-KV) come last, num_splits units each. Consecutive units share a
// query tile and a GQA group's K/V, which keeps them in L2 while a wave of CTAs reads them.
// The producer thread of a CTA picks its next unit and publishes it to the consumers in shared
// memory before the unit's Q load (q_full); -1 ends the CTA. Two ways to pick (params.sched):
//   static:  CTA c of G takes units in rounds of G, in snake order (round k: c, or G - 1 - c when
//            k is odd), which evens out the sums of a sorted list;
//   dynamic: an atomic counter hands out units in order; units a CTA gave back (ready flag not
//            set in time) are handed out first by the finishing launch.
// With CTA pairs (params.pairs, pair.cuh) the same is done with pairs of units (2v, 2v + 1)
// and pairs of CTAs: the static picker over the grid's clusters, the counter by the leader.
#pragma once

#include <cstdint>

#include "attn_fwd/mask.cuh"
#include "attn_fwd/pair.cuh"
#include "attn_fwd/work_unit.h"
#include "spava/attn_params.h"

namespace spava::attn {

__device__ __forceinline__ int unit_of_round(int round, int cta, int ctas) {
  return round * ctas + ((round & 1) ? ctas - 1 - cta : cta);
}

// The problem that unit u belongs to.
__device__ __forceinline__ int problem_of(const AttnFwdParams& p, int u) {
  int pi = 0;
  while (pi + 1 < p.num_problems && u >= p.problems[pi + 1].unit_begin) ++pi;
  return pi;
}

template <int kBlockM, int kBlockN>
__device__ __forceinline__ WorkUnit decode_unit(const AttnFwdParams& p, int u) {
  const int pi = problem_of(p, u);
  const AttnProblem& pr = p.problems[pi];
  int local = u - pr.unit_begin;
  WorkUnit w;
  w.problem = pi;
  w.hq = local % p.heads_q;
  local /= p.heads_q;
  w.b = local % p.batch;
  local /= p.batch;
  // local now numbers (query tile, split): the whole tiles [split_m_blocks, m_blocks) first,
  // last tile first, then the split tiles [0, split_m_blocks), num_splits units each
  const int whole = pr.m_blocks - pr.split_m_blocks;
  int m_block, splits = 1;
  w.split = 0;
  if (local < whole) {
    m_block = pr.m_blocks - 1 - local;
  } else {
    local -= whole;
    splits = pr.num_splits;
    w.split = local % splits;
    m_block = pr.split_m_blocks - 1 - local / splits;
  }
  w.splits = splits;
  w.hk = w.hq / (p.heads_q / p.heads_kv);
  w.m0 = m_block * kBlockM;
  w.m_last = min(w.m0 + kBlockM, pr.q_len) - 1;
  const int total = SegmentMask::total_tiles<kBlockN>(p, pr, w.m0, w.m_last);
  // total * splits < 2^31 (total < 2^23 tiles, splits <= 32): int division, no 64-bit call
  const int begin = total * w.split / splits;
  w.range = {begin, total * (w.split + 1) / splits - begin};
  return w;
}

__device__ __forceinline__ uint64_t global_timer_ns() {
  uint64_t t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

// *ptr, read at L2 (relaxed, GPU scope): a counter other CTAs change.
__device__ __forceinline__ int load_relaxed(const int* ptr) {
  int v;
  asm volatile("ld.relaxed.gpu.global.b32 %0, [%1];" : "=r"(v) : "l"(ptr) : "memory");
  return v;
}

// Poll *flag (acquire, GPU scope) until it is != 0 or give_up_ns have passed; on success order
// the async proxy (TMA) after it. With trap = true, giving up traps (the launch fails with an
// error on the host) instead of returning false: a flag that is never set must not hang the
// device. Inlined and call-free: a function call anywhere in the kernel makes ptxas serialise
// every wgmma (C7510), so no printf here.
__device__ __forceinline__ bool wait_ready(const int* flag, int64_t give_up_ns, bool trap) {
  const uint64_t start = global_timer_ns();
  for (;;) {
    int v;
    asm volatile("ld.acquire.gpu.global.b32 %0, [%1];" : "=r"(v) : "l"(flag) : "memory");
    if (v != 0) break;
    if (int64_t(global_timer_ns() - start) > give_up_ns) {
      if (!trap) return false;
      asm volatile("trap;");
    }
    __nanosleep(256);
  }
  asm volatile("fence.proxy.async.global;" ::: "memory");
  return true;
}

// The producer's unit picker (one thread per CTA). With CTA pairs under the atomic counter
// (p.pairs && p.sched) the leader (rank 0) makes every decision, its claims and its ready-flag
// verdicts, and sends each to the partner through `mail` (pair.cuh), in the same order in
// which the partner asks for them: both CTAs make the same calls in the same order, since they
// run the same pairs of units.
struct UnitPicker {
  unsigned ready_seen = 0;  // problems whose ready flag this CTA has seen set
  PairMailbox* mail;        // this CTA's mailbox (used by the partner of a pair)
  int msgs = 0;             // messages sent (leader) or received (partner)
  int per_claim, rank;      // units per claim (2 with pairs), rank in the pair
  bool linked;              // pairs under the counter: decisions travel through `mail`

  bool may_defer = false;    // a counter-scheduled first launch with ready flags

  __device__ __forceinline__ UnitPicker(const AttnFwdParams& p, PairMailbox& m)
      : mail(&m), per_claim(p.pairs ? 2 : 1), rank(p.pairs ? int(cluster_cta_rank()) : 0),
        linked(p.pairs && p.sched != nullptr) {
    if (p.sched != nullptr && !p.finish) {
      for (int i = 0; i < p.num_problems; ++i) may_defer |= p.problems[i].ready != nullptr;
    }
  }

  // The k-th unit of this CTA, or -1 when none is left. Reads no flag: call keys_ready(u)
  // before the first K / V load of u (ready_known(u) tells whether that can wait). Every CTA
  // calls it for k = 0, 1, ... until it returns -1.
  __device__ __forceinline__ int claim(const AttnFwdParams& p, int k) {
    int c;  // the claim: a unit, or with pairs a pair of units (2c, 2c + 1)
    int* st = p.sched;
    if (st == nullptr) {
      c = unit_of_round(k, blockIdx.x / per_claim, gridDim.x / per_claim);
    } else if (linked && rank == 1) {  // the leader's claim
      c = mail->receive(msgs++);
      return c < 0 ? -1 : 2 * c + 1;
    } else if (p.finish) {  // deferred claims first, then those never handed out
      const int d = atomicAdd(st + 2, 1);
      c = d < st[1] ? st[kAttnSchedHeader + d] : atomicAdd(st, 1);
    } else if (may_defer && load_relaxed(st + 1) > 0) {
      // A unit was given back (a late flag): the launch winds down. No CTA claims another
      // unit, so the finishing launch runs what is left on every SM, instead of the CTAs that
      // have not met the flag yet grinding through it (a 47.6 ms launch instead of ~10.6 on
      // 4 x H100, docs/kernels/attn_fwd.md).
      c = -1;
    } else {
      c = atomicAdd(st, 1);
    }
    c = c < p.num_units / per_claim ? c : -1;
    if (linked) mail->send(msgs++, c);
    return c < 0 ? -1 : per_claim * c + rank;
  }

  // True when unit u's keys may be read without waiting for a flag. The finishing launch is
  // queued after the data has landed (the caller's stream waits for it): it reads no flag. A
  // flag is often set by a tiny kernel on another stream, and CTAs spinning on it there,
  // holding every SM, could keep that kernel from ever running.
  __device__ __forceinline__ bool ready_known(const AttnFwdParams& p, int u) const {
    if (p.finish) return true;
    const int pi = problem_of(p, u);
    return p.problems[pi].ready == nullptr || (ready_seen & (1u << pi));
  }

  // Waits until unit u's keys may be read (its problem's flag, once per problem). False: the
  // flag did not come within wait_spin_ns and u (its pair) was given back (atomic-counter
  // picker only; the static picker traps after wait_timeout_ns): the CTA stops.
  __device__ __forceinline__ bool keys_ready(const AttnFwdParams& p, int u) {
    if (ready_known(p, u)) return true;
    const int pi = problem_of(p, u);
    int* st = p.sched;
    bool ok;
    if (linked && rank == 1) {
      ok = mail->receive(msgs++) != 0;  // the leader's verdict
    } else {
      const bool may_defer = st != nullptr;
      ok = wait_ready(p.problems[pi].ready, may_defer ? p.wait_spin_ns : p.wait_timeout_ns,
                      !may_defer);
      if (!ok) st[kAttnSchedHeader + atomicAdd(st + 1, 1)] = u / per_claim;  // give it back
      if (linked) mail->send(msgs++, ok ? 1 : 0);
    }
    if (!ok) return false;
    ready_seen |= 1u << pi;
    return true;
  }

  // Before the producer leaves: the leader waits for the partner's last acknowledgements.
  __device__ __forceinline__ void finish() {
    if (linked && rank == 0) mail->drain(msgs);
  }
};

}  // namespace spava::attn
