"""A CPU model of the persistent attn_fwd schedule of one rank (no GPU needed).

Each unit (128 query rows x one head) costs its key tiles (SegmentMask.trip_count's rule) plus
a fixed per-unit overhead ``c0`` in tile-equivalents (Q load, first GEMM without overlap,
epilogue). The model compares the makespan over 132 CTAs of
  * the rank's three problems in one launch, local order, static snake rounds (the default),
  * the same with an atomic counter (greedy list scheduling),
  * a cost-sorted (LPT) unit order, static and greedy,
  * three launches (one per problem, each with its own tail),
against the ideal (total work / CTAs). It showed that a cost-sorted order is not worth a
device table (the design notes of attn_fwd).

``--plan`` prints instead what plan_attn_fwd (csrc/kernels/attn_fwd/attn_fwd_plan.cu; ported
here as ``choose_plan``) picks for each single call and for the one launch of the rank: a tail
split (last query tiles split-KV 2-4 ways) and / or the atomic counter, and the modelled gain.

    python tools/schedule_model.py [--world 8] [--n 131072] [--heads 28] [--plan]
"""

from __future__ import annotations

import argparse
import heapq
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "python"))
from spava_ext import SpavaLayout  # noqa: E402
from spava_ext.attention import host1_keys, host2_keys, question_keys  # noqa: E402

BLOCK_M = BLOCK_N = 128


def unit_tiles(segs, m0: int, m_last: int) -> int:
    """Key tiles a query tile [m0, m_last] visits (the kernel's trip-count rule)."""
    n = 0
    for length, row_begin, diag in segs:
        if m_last < row_begin:
            continue
        end = min(length, m_last + diag + 1)
        n += 0 if end <= 0 else (end + BLOCK_N - 1) // BLOCK_N
    return n


def rank_units(layout: SpavaLayout, rank: int, heads: int) -> dict:
    """Per problem, the tile count of every unit in the kernel's order (last query tile first)."""
    s = layout.local_segments(rank)
    local = torch.empty(1, layout.local_len(rank), 1, 8, device="meta")
    recv = torch.empty(layout.world_size, layout.passing_cap, 2, 1, 1, 8, device="meta")
    problems = {"host2": (s.chunk2, host2_keys(local, local, layout, rank, recv, recv)),
                "question": (s.question, question_keys(local, local, layout, rank)),
                "host1": (s.anchor + s.chunk1, host1_keys(local, local, layout, rank, recv))}
    units = {}
    for name, (rows, keys) in problems.items():
        segs = [(k.shape[1], rb, min(d, 2**30)) for k, rb, d in zip(keys.k, keys.row_begin,
                                                                     keys.diag)]
        blocks = (rows + BLOCK_M - 1) // BLOCK_M
        units[name] = [unit_tiles(segs, m * BLOCK_M, min(m * BLOCK_M + BLOCK_M, rows) - 1)
                       for m in reversed(range(blocks)) for _ in range(heads)]
    return units


def static_makespan(costs, ctas: int) -> float:
    load = [0.0] * ctas
    for i, c in enumerate(costs):
        r, j = divmod(i, ctas)
        load[j if r % 2 == 0 else ctas - 1 - j] += c
    return max(load)


def greedy_makespan(costs, ctas: int) -> float:
    heap = [(0.0, i) for i in range(ctas)]
    for c in costs:
        t, i = heapq.heappop(heap)
        heapq.heappush(heap, (t + c, i))
    return max(t for t, _ in heap)


# ---- port of attn_fwd_plan.cu's choose_plan (keep the two in step)
PLAN_OVERHEAD = 3.0  # kUnitOverhead: tile-times per unit beyond its key tiles


def plan_costs(tiles, heads_batch: int, plan) -> list:
    """Unit costs in the kernel's unit order; tiles[problem][m_block] = key tiles;
    plan = (tail problem, split tiles, splits, counter)."""
    tail_problem, split_tiles, splits, _ = plan
    costs = []
    for pi, t in enumerate(tiles):
        split = split_tiles if pi == tail_problem else 0
        for m in range(len(t) - 1, split - 1, -1):
            costs += [t[m] + PLAN_OVERHEAD] * heads_batch
        for m in range(split - 1, -1, -1):
            for s in range(splits):
                n = t[m] * (s + 1) // splits - t[m] * s // splits
                costs += [n + PLAN_OVERHEAD] * heads_batch
    return costs


def choose_plan(tiles, heads_batch: int, ctas: int):
    """(plan, modelled gain over the plain plan): the C++ rule, a 1 % minimum gain."""
    def cost(plan):
        c = plan_costs(tiles, heads_batch, plan)
        return greedy_makespan(c, ctas) if plan[3] else static_makespan(c, ctas)

    plain_plan = (-1, 0, 1, False)
    plain = best_cost = cost(plain_plan)
    best = plain_plan
    candidates = [(-1, 0, 1, True)]
    last = max((i for i, t in enumerate(tiles) if t), default=-1)
    tail = sum(len(t) for t in tiles) * heads_batch % ctas
    if last >= 0 and tail:
        first = -(-tail // heads_batch)
        for n in range(first, min(first + 2, len(tiles[last])) + 1):
            for s in (2, 3, 4):
                candidates += [(last, n, s, False), (last, n, s, True)]
    for plan in candidates:
        c = cost(plan)
        if c < best_cost:
            best_cost, best = c, plan
    if best_cost < plain * 0.99:
        return best, plain / best_cost - 1
    return plain_plan, 0.0


def print_plans(layout: SpavaLayout, world: int, heads: int, ctas: int) -> None:
    for rank in (0, world - 1):
        units = rank_units(layout, rank, heads)
        per_tile = {n: u[::heads][::-1] for n, u in units.items()}  # by m_block
        for name in ("host2", "question", "host1"):
            c = min(ctas, len(units[name]))
            if len(units[name]) < ctas:
                print(f"rank {rank} {name}: {len(units[name])} units < {ctas} SMs: split-KV "
                      "of every query tile (small-grid rule)")
                continue
            plan, gain = choose_plan([per_tile[name]], heads, c)
            print(f"rank {rank} {name}: plan {plan}, modelled gain {gain:+.1%}")
        plan, gain = choose_plan([per_tile[n] for n in ("host2", "question", "host1")], heads,
                                 ctas)
        print(f"rank {rank} one launch: plan {plan}, modelled gain {gain:+.1%}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=131072)
    parser.add_argument("--world", type=int, default=8)
    parser.add_argument("--heads", type=int, default=28)
    parser.add_argument("--ctas", type=int, default=132)
    parser.add_argument("--plan", action="store_true", help="print plan_attn_fwd's choices")
    args = parser.parse_args()
    layout = SpavaLayout.auto(args.n + 64, 64, args.world)
    if args.plan:
        print_plans(layout, args.world, args.heads, args.ctas)
        return 0
    for rank in (0, args.world - 1):
        units = rank_units(layout, rank, args.heads)
        for c0 in (2, 4):
            per = {n: [c + c0 for c in u] for n, u in units.items()}
            local = per["host2"] + per["question"] + per["host1"]
            lpt = sorted(local, reverse=True)
            ideal = sum(local) / args.ctas
            rows = {"one launch, static": static_makespan(local, args.ctas),
                    "one launch, counter": greedy_makespan(local, args.ctas),
                    "LPT, static": static_makespan(lpt, args.ctas),
                    "LPT, counter": greedy_makespan(lpt, args.ctas),
                    "three launches": sum(static_makespan(u, args.ctas) for u in per.values())}
            print(f"rank {rank}, c0 = {c0} tiles: ideal {ideal:.0f} tile-times; "
                  + "; ".join(f"{k} {v / ideal - 1:+.1%}" for k, v in rows.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
