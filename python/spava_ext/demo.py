"""`spava demo`: Spava attention on a synthetic video layer over W CPU ranks vs dense."""

from __future__ import annotations

import os
import socket
import tempfile
import time

import torch

__all__ = ["cmd_demo"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _demo_inputs(args):
    from .synthetic import video_like_layer

    return video_like_layer(args.frames, args.tokens_per_frame, args.prefix, args.question,
                            args.heads_q, args.heads_kv, args.head_dim, seed=args.seed)


def _demo_layouts(args, L) -> dict:
    """name -> layout: the paper's passing length p (or --passing), 4p, and exact mode."""
    from .layout import SpavaLayout

    auto = SpavaLayout.auto(L, args.question, args.world_size)
    anchor = auto.anchor_len if args.anchor is None else args.anchor
    p = auto.passing_len if args.passing is None else args.passing
    return {name: SpavaLayout(L, anchor, args.question, args.world_size, passing)
            for name, passing in ((f"p={p}", p), (f"p={4 * p}", 4 * p), ("exact", None))}


def _demo_rank(rank: int, args, port: int, result_dir: str) -> None:
    import torch.distributed as dist

    from .attention import spava_attention

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // args.world_size))
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=args.world_size)
    try:
        layer = _demo_inputs(args)
        result = {}
        for name, layout in _demo_layouts(args, layer.q.shape[1]).items():
            shard = [layout.shard(t, rank) for t in (layer.q, layer.k, layer.v)]
            spava_attention(*shard, layout)  # warm-up
            times = []
            for _ in range(args.repeats):
                dist.barrier()
                t0 = time.perf_counter()
                out = spava_attention(*shard, layout)
                times.append(time.perf_counter() - t0)
            result[name] = (out, sorted(times)[len(times) // 2])
        torch.save(result, os.path.join(result_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """(relative L2 error, max abs error) of a against b."""
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item(), (a - b).abs().max().item()


def cmd_demo(args) -> int:
    import torch.multiprocessing as mp
    import torch.nn.functional as F

    layer = _demo_inputs(args)
    B, L, Hq, D = layer.q.shape
    layouts = _demo_layouts(args, L)
    approx = next(iter(layouts.values()))
    print(f"spava demo: synthetic video layer, {args.frames} frames x {args.tokens_per_frame} "
          f"tokens + prefix {args.prefix} + question {args.question} = {L} tokens; heads "
          f"{Hq}/{layer.k.shape[2]}, D {D}; needle frames {layer.needle_frames}")
    print(approx.describe())
    print(f"running {args.world_size} CPU ranks (gloo processes), {len(layouts)} layouts, "
          f"{args.repeats} timed calls each ...", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        mp.start_processes(_demo_rank, args=(args, _free_port(), tmp), nprocs=args.world_size,
                           join=True, start_method="spawn")
        results = [torch.load(os.path.join(tmp, f"rank{r}.pt"), weights_only=False)
                   for r in range(args.world_size)]

    # dense causal attention on the full sequence, one process (GQA by repeating kv heads)
    G = Hq // layer.k.shape[2]
    qd, kd, vd = (t.transpose(1, 2) for t in (layer.q, layer.k.repeat_interleave(G, 2),
                                              layer.v.repeat_interleave(G, 2)))
    t0 = time.perf_counter()
    dense = F.scaled_dot_product_attention(qd, kd, vd, is_causal=True).transpose(1, 2)
    dense_s = time.perf_counter() - t0

    got = {name: lay.unshard([res[name][0] for res in results]) for name, lay in layouts.items()}
    a, qs = approx.anchor_len, approx.question_start
    c0_end = approx.chunk_bounds(0)[1]
    classes = [("anchor rows", 0, a, "exact"), ("C0 rows", a, c0_end, "exact"),
               ("C1.. rows", c0_end, qs, "approximate"), ("question rows", qs, L, "exact"),
               ("all rows", 0, L, "")]
    print("\nrelative L2 error against dense causal attention (fp32):")
    print(f"{'row class':<15}{'rows':>7}" + "".join(f"{n:>12}" for n in layouts) + "   expected")
    for cname, s, e, kind in classes:
        if e > s:
            errs = "".join(f"{_rel_err(t[:, s:e], dense[:, s:e])[0]:>12.2e}"
                           for t in got.values())
            print(f"{cname:<15}{e - s:>7}{errs}   {kind}")
    for name, lay in layouts.items():
        kept = sum(lay.passing_sizes[:-1]) / max(1, sum(lay.chunk_sizes[:-1]))
        print(f"  {name}: passing blocks keep {kept:.1%} of each chunk's keys (pool "
              f"{lay.pool_kernel})")
    print(f"\n{'CPU time per layer, median':<28}" + "".join(f"{n:>12}" for n in layouts))
    for r, res in enumerate(results):
        print(f"  spava rank {r:<16}" + "".join(f"{res[n][1]:>11.3f}s" for n in layouts))
    print(f"  dense SDPA, one process   {dense_s:>11.3f}s")
    print(f"(the {args.world_size} ranks share this machine's {os.cpu_count()} cores: CPU times "
          "show that the schedule runs; speed is measured on GPUs, see BENCHMARKS.md)")
    return 0


