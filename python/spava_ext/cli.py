"""The ``spava`` command (also ``python -m spava_ext``).

    spava demo [--world-size W] [--frames F] ...   Spava attention on a synthetic video layer
                                                   over W ranks vs dense attention
    spava bench --simulate-world-size W [...]      one GPU plays every rank of a W-rank layer:
                                                   per-rank times, critical path, bytes sent,
                                                   predicted overlap, ring / APB / dense baselines
    torchrun --nproc-per-node N -m spava_ext generate --model DIR --video FILE --question TEXT
                                                   answer a question about a video (Qwen2.5-VL)
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import tempfile
import time

import torch

__all__ = ["main"]


# ---------------------------------------------------------------------------------- demo
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

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // args.world_size))
    dist.init_process_group("gloo", rank=rank, world_size=args.world_size)
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


# ---------------------------------------------------------------------------------- bench
def cmd_bench(args) -> int:
    import json

    from .simulate import SimConfig, format_report, simulate

    if not torch.cuda.is_available():
        print("spava bench: --simulate-world-size runs the ranks' work on a CUDA GPU; none found",
              file=sys.stderr)
        return 2
    try:
        hq, hkv = (int(x) for x in args.heads.split("/"))
    except ValueError:
        print(f"spava bench: --heads must look like 28/4, got {args.heads!r}", file=sys.stderr)
        return 2
    cfg = SimConfig(context=args.context, question=args.question,
                    world=args.simulate_world_size, heads_q=hq, heads_kv=hkv,
                    head_dim=args.head_dim, anchor=args.anchor, passing=args.passing,
                    bandwidths_gbs=[float(b) for b in args.bandwidth.split(",")],
                    repeats=args.repeats, dense=not args.no_dense)
    res = simulate(cfg)
    res["card"] = torch.cuda.get_device_name()
    print(f"spava bench on {res['card']}")
    print(format_report(res))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
        print(f"wrote {args.json}")
    return 0


# ---------------------------------------------------------------------------------- generate
class _FirstTokenClock:
    """A generate() streamer that notes when the first new token arrives (dense baseline)."""

    def __init__(self):
        self.calls, self.first = 0, None

    def put(self, value):
        self.calls += 1
        if self.calls == 2 and self.first is None:  # call 1 is the prompt
            self.first = time.perf_counter()

    def end(self):
        pass


def cmd_generate(args) -> int:
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    for what, path, ok in (("model directory", args.model, os.path.isdir(args.model)),
                           ("video file", args.video, os.path.isfile(args.video))):
        if not ok:
            print(f"spava generate: {what} '{path}' not found (local files only, no downloads)",
                  file=sys.stderr)
            return 2
    import transformers

    from .integrations.transformers import generate
    from .video import read_video

    cuda = torch.cuda.is_available()
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))) if cuda else "cpu"
    if cuda:
        torch.cuda.set_device(device)
    if world > 1:
        dist.init_process_group("nccl" if cuda else "gloo",
                                device_id=device if cuda else None)
    say = print if rank == 0 else (lambda *a, **k: None)
    try:
        t0 = time.perf_counter()
        model = transformers.AutoModelForImageTextToText.from_pretrained(
            args.model, dtype=torch.bfloat16 if cuda else torch.float32, local_files_only=True)
        model = model.to(device).eval()
        processor = transformers.AutoProcessor.from_pretrained(args.model, local_files_only=True)
        frames, fps = read_video(args.video, args.fps, args.max_frames)
        messages = [{"role": "user", "content": [{"type": "video"},
                                                 {"type": "text", "text": args.question}]}]
        text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        inputs = processor(text=[text], videos=[frames], return_tensors="pt").to(device)
        say(f"spava generate: {len(frames)} frames at {fps:.2f} fps -> "
            f"{inputs['input_ids'].shape[1]} prompt tokens; attention {args.attention}, "
            f"{world} rank(s); loading took {time.perf_counter() - t0:.1f}s", flush=True)
        timings: dict = {}
        if args.attention == "spava":
            passing = None if args.passing_len == "exact" else (
                "auto" if args.passing_len == "auto" else int(args.passing_len))
            anchor = "auto" if args.anchor_len == "auto" else int(args.anchor_len)
            bar = None
            if rank == 0 and args.max_new_tokens > 1:
                from tqdm import tqdm
                bar = tqdm(total=args.max_new_tokens, desc="decode", unit="tok", leave=False)
            ids = generate(model, dict(inputs), max_new_tokens=args.max_new_tokens,
                           passing_len=passing, anchor_len=anchor, timings=timings,
                           on_token=(lambda step, tok: bar.update(1)) if bar else None)
            if bar:
                bar.close()
        else:  # dense: the model's own generate on rank 0, the reference for a comparison
            if rank != 0:
                return 0
            clock = _FirstTokenClock()
            start = time.perf_counter()
            with torch.no_grad():
                out = model.generate(**inputs, max_new_tokens=args.max_new_tokens,
                                     do_sample=False, streamer=clock)
            end = time.perf_counter()
            ids = out[:, inputs["input_ids"].shape[1]:]
            first = clock.first or end
            timings = {"first_token": first - start, "decode": end - first,
                       "decode_tokens": max(0, ids.shape[1] - 1)}
        answer = processor.batch_decode(ids, skip_special_tokens=True)[0]
        say(f"answer: {answer}")
        parts = [f"{k} {timings[k]:.3f}s" for k in ("vision+embed", "prefill", "first_token",
                                                      "decode") if k in timings]
        if timings.get("decode_tokens"):
            parts.append(f"{timings['decode_tokens'] / max(timings['decode'], 1e-9):.1f} tokens/s")
        say("timing: " + ", ".join(parts))
        if "layout" in timings:
            say(f"layout: {timings['layout']}")
        return 0
    finally:
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()


# ---------------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spava", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="Spava attention on a synthetic video layer vs dense")
    demo.add_argument("--world-size", type=int, default=4)
    demo.add_argument("--frames", type=int, default=64)
    demo.add_argument("--tokens-per-frame", type=int, default=96)
    demo.add_argument("--prefix", type=int, default=32, help="system-prompt tokens")
    demo.add_argument("--question", type=int, default=32, help="question tokens")
    demo.add_argument("--heads-q", type=int, default=16)
    demo.add_argument("--heads-kv", type=int, default=2)
    demo.add_argument("--head-dim", type=int, default=64)
    demo.add_argument("--anchor", type=int, default=None, help="default: the paper's")
    demo.add_argument("--passing", type=int, default=None, help="default: the paper's")
    demo.add_argument("--repeats", type=int, default=3)
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=cmd_demo)
    bench = sub.add_parser("bench", help="single-GPU simulation of a W-rank Spava layer")
    bench.add_argument("--simulate-world-size", type=int, required=True, metavar="W")
    bench.add_argument("--context", type=int, default=131072, help="context tokens (anchor incl.)")
    bench.add_argument("--question", type=int, default=64)
    bench.add_argument("--heads", default="28/4", help="query/kv heads (Qwen2.5-VL-7B: 28/4)")
    bench.add_argument("--head-dim", type=int, default=128)
    bench.add_argument("--anchor", type=int, default=None, help="default: the paper's")
    bench.add_argument("--passing", type=int, default=None, help="default: the paper's")
    bench.add_argument("--bandwidth", default="450,50", help="link GB/s per direction, comma list")
    bench.add_argument("--repeats", type=int, default=10)
    bench.add_argument("--no-dense", action="store_true", help="skip the dense SDPA baselines")
    bench.add_argument("--json", default=None, help="write the full result here")
    bench.set_defaults(func=cmd_bench)
    gen = sub.add_parser("generate", help="answer a question about a video (run with torchrun)")
    gen.add_argument("--model", required=True, help="local model directory (Qwen2.5-VL)")
    gen.add_argument("--video", required=True)
    gen.add_argument("--question", required=True)
    gen.add_argument("--max-frames", type=int, default=64)
    gen.add_argument("--fps", type=float, default=1.0)
    gen.add_argument("--max-new-tokens", type=int, default=128)
    gen.add_argument("--attention", choices=["spava", "dense"], default="spava")
    gen.add_argument("--passing-len", default="auto", help="an int, 'auto' or 'exact'")
    gen.add_argument("--anchor-len", default="auto", help="an int or 'auto'")
    gen.set_defaults(func=cmd_generate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "world_size", 1) < 1 or getattr(args, "simulate_world_size", 1) < 1:
        print("spava: the world size must be >= 1", file=sys.stderr)
        return 2
    return args.func(args)
