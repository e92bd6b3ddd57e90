"""Multi-GPU runs over NCCL (routine ``multi-gpu``: one process per GPU, started by torchrun, as
scripts/multi_gpu.sh does).

    torchrun --nproc-per-node W benchmarks/bench.py --routine multi-gpu [--skip-speed]

1. Correctness: spava_attention and decode over NCCL against the full-sequence reference on
   irregular shapes (bf16 and fp16), and a layer captured in a CUDA graph and replayed.
2. Overlap, per variant of the schedule (VARIANTS: SMs left to the collectives, CTAs per NCCL
   kernel, how long a CTA polls a ready flag): each rank's layer time with real gathers
   against the same rank's compute-only time (SimulatedComm, the simulator's measure) and the
   time of its gathers alone; hidden share = 1 - exposed / gathers. ``--trace-dir``: every
   variant's kernel timeline per rank (profiler), to see where exposed time goes.
3. Speed: the layer at 128K tokens (Qwen2.5-VL-7B heads) against dense cuDNN attention on one
   GPU and the simulator's ZigZag ring per-rank work at the same W (rank 0).
Rank 0 prints a table and writes benchmarks/results/multi_gpu_w<W>_<date>_<card>.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from utils import assert_attn_close, grid_inputs  # noqa: E402  (the tests' checks)

import spava_ext  # noqa: E402
from bench_utils import environment, gpu_time, int_list, local_rank, write_result  # noqa: E402
from spava_ext import SpavaKVCache, SpavaLayout, reference  # noqa: E402
from spava_ext.attention import spava_attention_rank  # noqa: E402
from spava_ext.comm import GroupComm, SimulatedComm, nccl_options  # noqa: E402

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
    """Prefill and decode of every case over NCCL against the references, then the reserved-SM
    and CUDA-graph checks; a failure raises. Returns one line per check passed."""
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
    reserved_sms(rank, world)
    lines.append("correct: case 0 with 6 SMs left to the gathers")
    progress(rank, lines[-1])
    graph_replay(rank, world)
    lines.append("correct: CUDA-graph capture and replay of a layer over NCCL")
    progress(rank, lines[-1])
    return lines


def reserved_sms(rank: int, world: int) -> None:
    """Case 0 again with SMs left free for the gathers (a smaller attention grid)."""
    L, a, nq, Hq, Hkv, D, p, dtype = CASES[0]
    layout = SpavaLayout(L, a, nq, world, p)
    q, k, v = grid_inputs(1, L, Hq, Hkv, D, dtype=dtype, seed=700, device="cuda")
    shard = [layout.shard(t, rank) for t in (q, k, v)]
    with environment(SPAVA_RESERVE_SMS=6):
        out = spava_ext.spava_attention(*shard, layout)
    mine = reference.spava_attention(q.cpu(), k.cpu(), v.cpu(), layout)
    low = reference.spava_attention(q.cpu(), k.cpu(), v.cpu(), layout, upcast=False)
    assert_attn_close(f"W={world} case 0, 6 SMs free", out,
                      layout.shard(mine, rank), layout.shard(low, rank))


def graph_replay(rank: int, world: int) -> None:
    """A layer captured in a CUDA graph, replayed on new data, equals an eager call."""
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


# (name, SMs left free by the attention launch (None: the default, SPAVA_RESERVE_SMS or 4),
# CTAs per NCCL kernel (None: the process group's, nccl_options' default = the reserve; 0:
# NCCL's choice), microseconds a CTA polls a ready flag before it gives its unit back (None:
# attn_fwd_group's default))
VARIANTS = [("default: set_flag, 4 SMs free", None, None, None),
            ("set_flag, 2 SMs free, NCCL <= 2 CTAs", 2, 2, None),
            ("set_flag, 8 SMs free, NCCL <= 8 CTAs", 8, 8, None),
            ("set_flag, all SMs, poll 2 ms", 0, 0, 2000)]


def queued_ms(fn, calls: int = 8, repeats: int = 3) -> float:
    """Device milliseconds per call of ``calls`` calls queued back to back (the host runs
    ahead), every rank starting together (a barrier first), median of ``repeats``."""
    times = []
    for _ in range(repeats):
        dist.barrier()
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(calls):
            fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / calls)
    return sorted(times)[len(times) // 2]


def kernel_trace(fn, layers: int = 3) -> list:
    """GPU activity of ``layers`` calls of ``fn`` (queued back to back), from the profiler:
    [name, stream, start us, duration us] per kernel, memset and memcpy, start relative to the
    first."""
    import tempfile

    from torch.profiler import ProfilerActivity, profile
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(layers):
            fn()
        torch.cuda.synchronize()
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        prof.export_chrome_trace(f.name)
        events = json.load(open(f.name))["traceEvents"]
    gpu = [e for e in events if e.get("cat") in ("kernel", "gpu_memset", "gpu_memcpy")]
    t0 = min((e["ts"] for e in gpu), default=0)
    return [[e["name"][:80], e.get("tid"), round(e["ts"] - t0, 2), round(e.get("dur", 0), 2)]
            for e in sorted(gpu, key=lambda e: e["ts"])]


def speed(rank: int, world: int, trace_dir: str | None, which: list[int]) -> list[dict]:
    """Each variant's (VARIANTS[i], i in ``which``) layer time with NCCL against the same
    rank's compute-only time, at 128K tokens with Qwen2.5-VL-7B heads; with ``trace_dir``, the
    kernel timeline of each variant's layer on this rank."""
    layout = SpavaLayout.auto(131072 + 64, 64, world)
    g = torch.Generator(device="cuda").manual_seed(rank)
    n = layout.local_len(rank)
    q = torch.randn(1, n, 28, 128, device="cuda", dtype=torch.bfloat16, generator=g)
    k = torch.randn(1, n, 4, 128, device="cuda", dtype=torch.bfloat16, generator=g)
    v = torch.randn_like(k)
    rows = []
    for i in which:
        name, reserve, nccl_ctas, spin_us = VARIANTS[i]
        comm = variant_comm(reserve, nccl_ctas)
        real_fn = lambda: spava_attention_rank(q, k, v, layout, comm)  # noqa: E731
        with environment(SPAVA_READY_SPIN_US=spin_us):
            row = {"variant": name, "rank": rank, "reserve_sms": comm.reserve_sms,
                   "nccl_max_ctas": nccl_ctas, "ready_spin_us": spin_us,
                   **speed_variant(layout, rank, comm, q, k, v)}
            if trace_dir:
                dist.barrier()
                slug = name.split(":")[0].split(",")[0].replace(" ", "_")
                path = Path(trace_dir) / (f"trace_w{world}_{i}_{slug}_r{comm.reserve_sms}"
                                          f"_rank{rank}.json")
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(kernel_trace(real_fn)))
        rows.append(row)
        progress(rank, f"{name}: rank 0 layer {row['layer_ms']:.3f} / pipelined "
                       f"{row['layer_pipelined_ms']:.3f} ms (host {row['host_enqueue_ms']:.2f}"
                       f" ms per call), compute only "
                       f"{row['compute_only_ms']:.3f} / {row['compute_only_pipelined_ms']:.3f}")
        dist.barrier()
    return rows


def variant_comm(reserve: int | None, nccl_ctas: int | None) -> GroupComm:
    """The communicator of a variant: its own process group where it caps NCCL's CTAs."""
    group = None if nccl_ctas is None else dist.new_group(
        backend="nccl", pg_options=nccl_options(max_ctas=nccl_ctas))
    return GroupComm(group, reserve_sms=reserve)


def speed_variant(layout, rank: int, comm: GroupComm, q, k, v) -> dict:
    """The rank's layer with real gathers over ``comm``: one synchronised call (host
    included), then 8 queued back to back (host ahead, as in a model's forward pass:
    ``queued_ms``); the same for the compute-only schedule (SimulatedComm, the same SMs left
    free); the gathers alone; the hidden share of the gathers."""
    sim_comm = SimulatedComm(rank, layout.world_size, reserve_sms=comm.reserve_sms)
    real_fn = lambda: spava_attention_rank(q, k, v, layout, comm)  # noqa: E731
    sim_fn = lambda: spava_attention_rank(q, k, v, layout, sim_comm)  # noqa: E731
    row = {"layer_ms": gpu_time(real_fn, warmup=3, repeats=20)["ms"],
           "host_enqueue_ms": host_enqueue_ms(real_fn),
           "compute_only_ms": gpu_time(sim_fn, warmup=3, repeats=20)["ms"],
           "layer_pipelined_ms": queued_ms(real_fn),
           "compute_only_pipelined_ms": queued_ms(sim_fn)}
    send = torch.randn(layout.passing_cap, 2, 1, 4, 128, device="cuda", dtype=torch.bfloat16)
    recv = torch.empty((layout.world_size,) + send.shape, device="cuda", dtype=torch.bfloat16)
    row["gathers_ms"] = gpu_time(
        lambda: [comm.all_gather(recv, send, "probe").wait() for _ in range(2)],
        warmup=3, repeats=20)["ms"]
    for key in ("", "_pipelined"):
        exposed = max(0.0, row[f"layer{key}_ms"] - row[f"compute_only{key}_ms"])
        row[f"hidden{key}"] = 1 - min(1.0, exposed / row["gathers_ms"])
    return row


def host_enqueue_ms(fn, calls: int = 5) -> float:
    """The host's time to queue one call (median of ``calls``; it should not wait for the
    device)."""
    host = []
    for _ in range(calls):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        host.append((time.perf_counter() - t0) * 1e3)
    torch.cuda.synchronize()
    return sorted(host)[calls // 2]


def single_gpu_baselines(world: int) -> dict:
    """Rank 0 alone: dense causal cuDNN SDPA over the whole sequence on one GPU, and the
    simulator's ZigZag ring per-rank work at this W (compute only)."""
    from spava_ext.simulate import SimConfig, _dense, _zigzag_ring
    layout = SpavaLayout.auto(131072 + 64, 64, world)
    cfg = SimConfig(world=world, repeats=5)
    dense = _dense(cfg, layout.seq_len)
    ring = _zigzag_ring(cfg, layout.seq_len)
    return {"dense_ms": dense, "zigzag_ring_ms": ring, "zigzag_ring_critical_ms": max(ring)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--trace-dir", default=None,
                        help="write each variant's kernel timeline per rank here")
    parser.add_argument("--skip-baselines", action="store_true")
    parser.add_argument("--skip-correctness", action="store_true")
    parser.add_argument("--variants", type=variant_list, default=list(range(len(VARIANTS))),
                        help="comma-separated indices into VARIANTS (default: all): "
                             + "; ".join(f"{i}: {v[0]}" for i, v in enumerate(VARIANTS)))


def variant_list(text: str) -> list[int]:
    """An argparse type: indices into VARIANTS."""
    which = int_list(text)
    if any(not 0 <= i < len(VARIANTS) for i in which):
        raise argparse.ArgumentTypeError(f"variant indices are 0..{len(VARIANTS) - 1}, got "
                                         f"{text!r}")
    return which


def run(args: argparse.Namespace) -> int:
    local = local_rank()
    torch.cuda.set_device(local)
    dist.init_process_group("nccl", device_id=torch.device("cuda", local),
                            pg_options=nccl_options())
    rank, world = dist.get_rank(), dist.get_world_size()
    try:
        lines = [] if args.skip_correctness else correctness(rank, world)
        result = {"world": world, "correctness": lines}
        if not args.skip_speed:
            every = [None] * world
            dist.all_gather_object(every, speed(rank, world, args.trace_dir, args.variants))
            result["speed"] = [row for rows in every for row in rows]
            if rank == 0 and not args.skip_baselines:
                result["single_gpu"] = single_gpu_baselines(world)
            dist.barrier()
        if rank == 0:
            print_table(result)
            print(f"wrote {write_result(f'multi_gpu_w{world}', result)}")
    finally:
        dist.destroy_process_group()
    return 0


def print_table(result: dict) -> None:
    print(f"{'variant':<40} {'rank':>4} {'layer':>7} {'compute':>7} {'piped':>7} "
          f"{'compute':>7} {'gathers':>7} {'hidden':>6} {'piped':>6}")
    for r in result.get("speed", []):
        print(f"{r['variant']:<40} {r['rank']:>4} {r['layer_ms']:7.3f} "
              f"{r['compute_only_ms']:7.3f} {r['layer_pipelined_ms']:7.3f} "
              f"{r['compute_only_pipelined_ms']:7.3f} {r['gathers_ms']:7.3f} "
              f"{100 * r['hidden']:5.0f}% {100 * r['hidden_pipelined']:5.0f}%")
    if "single_gpu" in result:
        b = result["single_gpu"]
        print(f"one GPU dense cuDNN {b['dense_ms']['cudnn']:.1f} ms, flash "
              f"{b['dense_ms']['flash']:.1f} ms; ZigZag ring per-rank work (compute "
              f"only) {b['zigzag_ring_critical_ms']:.2f} ms")
