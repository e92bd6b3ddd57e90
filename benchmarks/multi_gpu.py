"""Multi-GPU runs over NCCL (one process per GPU, started by scripts/multi_gpu.sh via torchrun).

    torchrun --nproc-per-node W benchmarks/multi_gpu.py [--skip-speed]

1. Correctness: spava_attention and decode over NCCL against the full-sequence reference on
   irregular shapes (bf16 and fp16), and a layer captured in a CUDA graph and replayed.
2. Overlap: each rank's layer time with real gathers against the same rank's compute-only time
   (SimulatedComm) and the time of its gathers alone; hidden share = 1 - exposed / gathers.
3. Speed: the layer at 128K tokens (Qwen2.5-VL-7B heads) against dense cuDNN attention on one
   GPU, and the simulator's prediction for the same W.
Rank 0 prints a table and writes benchmarks/results/multi_gpu_<date>_<card>.json.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from bench_utils import write_result  # noqa: E402
from utils import assert_attn_close, grid_inputs  # noqa: E402

import spava_ext  # noqa: E402
from spava_ext import SpavaKVCache, SpavaLayout, reference  # noqa: E402
from spava_ext.attention import spava_attention_rank  # noqa: E402
from spava_ext.comm import GroupComm, SimulatedComm, nccl_options  # noqa: E402
from spava_ext.timing import gpu_time  # noqa: E402

CASES = [  # (L, a, nq, Hq, Hkv, D, p, dtype)
    (3001, 129, 17, 28, 4, 128, 100, torch.bfloat16),
    (2050, 0, 1, 16, 2, 128, 37, torch.float16),
    (999, 40, 9, 8, 8, 64, None, torch.bfloat16),
    (5000, 300, 64, 14, 2, 80, 500, torch.bfloat16),
]


def progress(rank: int, line: str) -> None:
    """Rank 0 reports each step as it ends (a stall shows where it is)."""
    if rank == 0:
        print(line, flush=True)


def correctness(rank: int, world: int) -> list[str]:
    lines = []
    for i, (L, a, nq, Hq, Hkv, D, p, dtype) in enumerate(CASES):
        layout = SpavaLayout(L, a, nq, world, p)
        q, k, v = grid_inputs(1, L + 3, Hq, Hkv, D, dtype=dtype, seed=500 + i, device="cuda")
        shard = [layout.shard(t[:, :L], rank) for t in (q, k, v)]
        out = spava_ext.spava_attention(*shard, layout)
        sizes = [layout.local_len(r) for r in range(world)]  # shards differ by a row or two
        padded = out.new_zeros(1, max(sizes), Hq, D)
        padded[:, : out.shape[1]] = out
        gathered = [torch.empty_like(padded) for _ in range(world)]
        dist.all_gather(gathered, padded)
        full = layout.unshard([g[:, :n] for g, n in zip(gathered, sizes)])
        ref = reference.spava_attention(q[:, :L].cpu(), k[:, :L].cpu(), v[:, :L].cpu(), layout)
        low = reference.spava_attention(q[:, :L].cpu(), k[:, :L].cpu(), v[:, :L].cpu(), layout,
                                        upcast=False)
        assert_attn_close(f"W={world} case {i}", full, ref, low)
        cache = SpavaKVCache(layout, rank, 1, 1, Hkv, D, dtype, "cuda", 3)
        cache.store_prefill(0, shard[1], shard[2])
        dec = spava_ext.decode_attention(q[:, L:], k[:, L:], v[:, L:], cache, 0)
        dense = reference.dense_causal_attention(q.cpu(), k.cpu(), v.cpu())[:, L:]
        assert_attn_close(f"W={world} decode {i}", dec, dense, eps=2e-2)
        lines.append(f"correct: case {i} (L={L}, a={a}, nq={nq}, {Hq}/{Hkv}, D={D}, p={p}, "
                     f"{dtype}) prefill + decode")
        progress(rank, lines[-1])
    # a layer captured in a CUDA graph, replayed on new data
    L, a, nq, Hq, Hkv, D, p, dtype = CASES[0]
    layout = SpavaLayout(L, a, nq, world, p)
    q, k, v = (layout.shard(t, rank) for t in grid_inputs(1, L, Hq, Hkv, D, dtype=dtype,
                                                         seed=600, device="cuda"))
    spava_ext.spava_attention(q, k, v, layout)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = spava_ext.spava_attention(q, k, v, layout)
    q2, k2, v2 = (layout.shard(t, rank) for t in grid_inputs(1, L, Hq, Hkv, D, dtype=dtype,
                                                            seed=601, device="cuda"))
    q.copy_(q2), k.copy_(k2), v.copy_(v2)
    graph.replay()
    assert torch.equal(captured, spava_ext.spava_attention(q2, k2, v2, layout))
    lines.append("correct: CUDA-graph capture and replay of a layer over NCCL")
    progress(rank, lines[-1])
    return lines


def speed(rank: int, world: int) -> dict:
    layout = SpavaLayout.auto(131072 + 64, 64, world)
    g = torch.Generator(device="cuda").manual_seed(rank)
    n = layout.local_len(rank)
    q = torch.randn(1, n, 28, 128, device="cuda", dtype=torch.bfloat16, generator=g)
    k = torch.randn(1, n, 4, 128, device="cuda", dtype=torch.bfloat16, generator=g)
    v = torch.randn_like(k)
    comm = GroupComm(None)
    real = gpu_time(lambda: spava_attention_rank(q, k, v, layout, comm), warmup=3,
                    repeats=20)["ms"]
    sim_comm = SimulatedComm(rank, world)  # one instance: its random "received" buffers are
    sim = gpu_time(lambda: spava_attention_rank(q, k, v, layout, sim_comm),  # made once
                   warmup=3, repeats=20)["ms"]
    send = torch.randn(layout.passing_cap, 2, 1, 4, 128, device="cuda", dtype=torch.bfloat16)
    recv = torch.empty((world,) + send.shape, device="cuda", dtype=torch.bfloat16)
    gathers = gpu_time(lambda: [comm.all_gather(recv, send, "probe").wait() for _ in range(2)],
                       warmup=3, repeats=20)["ms"]
    exposed = max(0.0, real - sim)
    return {"rank": rank, "layer_ms": real, "compute_only_ms": sim, "gathers_ms": gathers,
            "hidden_fraction": 1 - min(1.0, exposed / gathers) if gathers > 0 else 1.0}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip-speed", action="store_true")
    args = parser.parse_args()
    local = int(os.environ.get("LOCAL_RANK", "0"))
    torch.cuda.set_device(local)
    dist.init_process_group("nccl", device_id=torch.device("cuda", local),
                            pg_options=nccl_options())
    rank, world = dist.get_rank(), dist.get_world_size()
    try:
        lines = correctness(rank, world)
        result = {"world": world, "correctness": lines}
        if not args.skip_speed:
            mine = speed(rank, world)
            every = [None] * world
            dist.all_gather_object(every, mine)
            result["speed"] = every
        if rank == 0:
            for r in result.get("speed", []):
                print(f"rank {r['rank']}: layer {r['layer_ms']:.3f} ms with NCCL, "
                      f"{r['compute_only_ms']:.3f} ms compute only, gathers alone "
                      f"{r['gathers_ms']:.3f} ms, hidden {100 * r['hidden_fraction']:.0f}%")
            print(f"wrote {write_result(f'multi_gpu_w{world}', result)}")
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
