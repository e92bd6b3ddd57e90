// CTA pairs of attn_fwd (AttnFwdParams::pairs): the two CTAs of a thread-block cluster of 2.
//
// Pair v is the units 2v and 2v + 1 (scheduler.cuh numbers the query head fastest): two query
// heads of one (problem, query tile, split, batch entry), so both CTAs walk the same key tiles
// with the same masks, in lock step. When both heads read the same kv head ("shared" pair), CTA
// r TMA-loads rows [64 r, 64 r + 64) of every K / V tile into the same stage of both CTAs
// (multicast): each tile crosses L2 -> SM once per pair instead of once per CTA. A pair whose
// heads straddle two GQA groups (odd group sizes, e.g. 7 query heads per kv head) loads its own
// tiles, both halves. Either way:
//   * a stage's full barrier expects the whole tile's bytes in each CTA;
//   * a stage's empty barrier counts one arrival per consumer warpgroup of *both* CTAs (a
//     producer writes into its partner's stage), so the rings of the two CTAs advance together;
//   * under the atomic counter the leader (rank 0) claims the pair and sends its index to the
//     partner through a 2-slot mailbox in the partner's shared memory (PairMailbox), and so
//     its verdict on a ready flag (wait, or give the pair back); without the counter each CTA
//     computes the same static claims and waits for the same flags itself;
//   * a producer leaves only after every stage it filled was released by both CTAs (no remote
//     arrival may target a CTA that has exited), and the leader after the partner acknowledged
//     every message.
#pragma once

#include <cstdint>

#include <cute/arch/util.hpp>
#include <cutlass/arch/barrier.h>

namespace spava::attn {

__device__ __forceinline__ uint32_t cluster_cta_rank() {
  uint32_t r;
  asm volatile("mov.u32 %0, %%cluster_ctarank;" : "=r"(r));
  return r;
}

// The shared::cluster address of `smem` (an address in this CTA's shared memory) in CTA `cta`
// of the cluster.
__device__ __forceinline__ uint32_t cluster_addr(const void* smem, uint32_t cta) {
  const uint32_t local = cute::cast_smem_ptr_to_uint(smem);
  uint32_t remote;
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(remote) : "r"(local), "r"(cta));
  return remote;
}

// Arrive on the mbarrier at `smem` in CTA `cta` (this CTA too), release at cluster scope.
__device__ __forceinline__ void arrive_cluster(const uint64_t* smem, uint32_t cta) {
  asm volatile("mbarrier.arrive.release.cluster.shared::cluster.b64 _, [%0];" ::"r"(
                   cluster_addr(smem, cta))
               : "memory");
}

// The same without ordering at cluster scope (no fence: the default .release.cta), for a
// consumer's release of a stage that only its wgmmas read (the async proxy, completed).
__device__ __forceinline__ void arrive_cluster_stage(const uint64_t* smem, uint32_t cta) {
  asm volatile("mbarrier.arrive.shared::cluster.b64 _, [%0];" ::"r"(cluster_addr(smem, cta))
               : "memory");
}

// Wait for phase `parity` of a local mbarrier with acquire at cluster scope: what a remote CTA
// wrote before its arrival is visible after.
__device__ __forceinline__ void wait_cluster(const uint64_t* smem, uint32_t parity) {
  const uint32_t addr = cute::cast_smem_ptr_to_uint(smem);
  asm volatile(
      "{\n\t.reg .pred p;\n\t"
      "WAIT_%=:\n\t"
      "mbarrier.try_wait.parity.acquire.cluster.shared::cta.b64 p, [%0], %1;\n\t"
      "@!p bra WAIT_%=;\n\t}" ::"r"(addr),
      "r"(parity)
      : "memory");
}

__device__ __forceinline__ void cluster_sync_all() {
  asm volatile("barrier.cluster.arrive.release.aligned;\n\tbarrier.cluster.wait.acquire.aligned;"
               ::
                   : "memory");
}

// The leader's decisions, sent to the partner (scheduler.cuh, UnitPicker): message k goes to
// slot k % 2 of the partner's mailbox; `full` (partner, 1 arrival) tells it is there, `empty`
// (leader, 1 arrival) that the partner has read it. One thread per CTA (the producer) uses it.
struct PairMailbox {
  int msg[2];
  uint64_t full[2], empty[2];

  __device__ __forceinline__ void init() {
    for (int s = 0; s < 2; ++s) {
      cutlass::arch::ClusterBarrier::init(&full[s], 1);
      cutlass::arch::ClusterBarrier::init(&empty[s], 1);
    }
  }

  // Leader: message k into the partner (rank 1), once it has read message k - 2.
  __device__ __forceinline__ void send(int k, int value) {
    const int s = k & 1;
    if (k >= 2) wait_cluster(&empty[s], ((k >> 1) - 1) & 1);
    asm volatile("st.shared::cluster.u32 [%0], %1;" ::"r"(cluster_addr(&msg[s], 1)), "r"(value)
                 : "memory");
    arrive_cluster(&full[s], 1);
  }

  // Partner: message k, acknowledged once read.
  __device__ __forceinline__ int receive(int k) {
    const int s = k & 1;
    wait_cluster(&full[s], (k >> 1) & 1);
    const int value = *reinterpret_cast<volatile int*>(&msg[s]);
    arrive_cluster(&empty[s], 0);
    return value;
  }

  // Leader, before it exits, having sent `sent` messages: the partner's acknowledgements of
  // the last two (send waited for those before), so that none targets an exited CTA.
  __device__ __forceinline__ void drain(int sent) {
    for (int k = sent >= 2 ? sent - 2 : 0; k < sent; ++k) wait_cluster(&empty[k & 1], (k >> 1) & 1);
  }
};

}  // namespace spava::attn
