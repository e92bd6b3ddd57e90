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
from typing import Optional

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


class _Session:
    """One process of a (torchrun) job: device, process group, model, processor."""

    def __init__(self, model_dir: str):
        import torch.distributed as dist
        import transformers

        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        cuda = torch.cuda.is_available()
        self.device = (torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))) if cuda
                       else torch.device("cpu"))
        if cuda:
            torch.cuda.set_device(self.device)
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if cuda else "gloo",
                                    device_id=self.device if cuda else None)
        self.model = transformers.AutoModelForImageTextToText.from_pretrained(
            model_dir, dtype=torch.bfloat16 if cuda else torch.float32, local_files_only=True)
        self.model = self.model.to(self.device).eval()
        self.processor = transformers.AutoProcessor.from_pretrained(model_dir,
                                                                    local_files_only=True)

    def say(self, *args, **kwargs):
        if self.rank == 0:
            print(*args, **kwargs)

    def close(self):
        import torch.distributed as dist

        if self.world > 1 and dist.is_initialized():
            dist.destroy_process_group()

    def inputs(self, video: str, question: str, fps: float, max_frames: int):
        from .video import read_video

        frames, used_fps = read_video(video, fps, max_frames)
        messages = [{"role": "user", "content": [{"type": "video"},
                                                 {"type": "text", "text": question}]}]
        text = self.processor.apply_chat_template(messages, add_generation_prompt=True,
                                                  tokenize=False)
        inputs = self.processor(text=[text], videos=[frames], return_tensors="pt")
        return inputs.to(self.device), len(frames), used_fps

    def answer(self, inputs, args, progress: bool = False) -> tuple[Optional[str], dict]:
        """The decoded answer (None on ranks > 0 with dense attention) and timings."""
        from .integrations.transformers import generate

        timings: dict = {}
        if args.attention == "spava":
            passing = None if args.passing_len == "exact" else (
                "auto" if args.passing_len == "auto" else int(args.passing_len))
            anchor = "auto" if args.anchor_len == "auto" else int(args.anchor_len)
            bar = None
            if progress and self.rank == 0 and args.max_new_tokens > 1:
                from tqdm import tqdm
                bar = tqdm(total=args.max_new_tokens, desc="decode", unit="tok", leave=False)
            ids = generate(self.model, dict(inputs), max_new_tokens=args.max_new_tokens,
                           passing_len=passing, anchor_len=anchor, timings=timings,
                           on_token=(lambda step, tok: bar.update(1)) if bar else None)
            if bar:
                bar.close()
        else:  # dense: the model's own generate on rank 0, the reference for a comparison
            if self.rank != 0:
                return None, timings
            clock = _FirstTokenClock()
            start = time.perf_counter()
            with torch.no_grad():
                out = self.model.generate(**inputs, max_new_tokens=args.max_new_tokens,
                                          do_sample=False, streamer=clock)
            end = time.perf_counter()
            ids = out[:, inputs["input_ids"].shape[1]:]
            first = clock.first or end
            timings = {"first_token": first - start, "decode": end - first,
                       "decode_tokens": max(0, ids.shape[1] - 1)}
        return self.processor.batch_decode(ids, skip_special_tokens=True)[0], timings


def _check_paths(cmd: str, paths) -> bool:
    for what, path, ok in paths:
        if not ok:
            print(f"spava {cmd}: {what} '{path}' not found (local files only, no downloads)",
                  file=sys.stderr)
            return False
    return True


def cmd_generate(args) -> int:
    if not _check_paths("generate", [("model directory", args.model, os.path.isdir(args.model)),
                                     ("video file", args.video, os.path.isfile(args.video))]):
        return 2
    t0 = time.perf_counter()
    ses = _Session(args.model)
    try:
        inputs, n_frames, fps = ses.inputs(args.video, args.question, args.fps, args.max_frames)
        ses.say(f"spava generate: {n_frames} frames at {fps:.2f} fps -> "
                f"{inputs['input_ids'].shape[1]} prompt tokens; attention {args.attention}, "
                f"{ses.world} rank(s); loading took {time.perf_counter() - t0:.1f}s", flush=True)
        answer, timings = ses.answer(inputs, args, progress=True)
        if answer is None:
            return 0
        ses.say(f"answer: {answer}")
        parts = [f"{k} {timings[k]:.3f}s" for k in ("vision+embed", "prefill", "first_token",
                                                      "decode") if k in timings]
        if timings.get("decode_tokens"):
            parts.append(f"{timings['decode_tokens'] / max(timings['decode'], 1e-9):.1f} tokens/s")
        ses.say("timing: " + ", ".join(parts))
        if "layout" in timings:
            ses.say(f"layout: {timings['layout']}")
        return 0
    finally:
        ses.close()


def cmd_eval(args) -> int:
    import json

    from . import evaluation

    if not _check_paths("eval", [("model directory", args.model, os.path.isdir(args.model)),
                                 ("dataset directory", args.data, os.path.isdir(args.data))]):
        return 2
    items = (evaluation.load_longvideobench(args.data, args.annotations or "lvb_val.json")
             if args.bench == "longvideobench" else
             evaluation.load_vnbench(args.data, args.annotations or "VNBench-main-4try.json"))
    items = items[: args.limit] if args.limit else items
    ses = _Session(args.model)
    try:
        def answer(item):
            inputs, _, _ = ses.inputs(item.video, item.prompt, args.fps, args.max_frames)
            text, _ = ses.answer(inputs, args)
            return text or ""

        out = args.out or f"{args.bench}_{args.attention}_results.jsonl"
        if ses.rank != 0:  # the other ranks only take part in the Spava runs
            out = os.devnull
        records = evaluation.run_benchmark(
            items, answer, out, on_item=lambda i, r: ses.say(
                f"[{i + 1}/{len(items)}] {r['id']}: {r['pred']} (answer {r['answer']})",
                flush=True))
        if ses.rank == 0:
            result = evaluation.score(records, args.bench)
            print(json.dumps(result, indent=1))
            print(f"wrote {out}")
        return 0
    finally:
        ses.close()


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
    gen.set_defaults(func=cmd_generate)
    ev = sub.add_parser("eval", help="LongVideoBench / VNBench accuracy (run with torchrun)")
    ev.add_argument("--bench", choices=["longvideobench", "vnbench"], required=True)
    ev.add_argument("--data", required=True, help="dataset root directory")
    ev.add_argument("--annotations", default=None,
                    help="annotation file in --data (default lvb_val.json / "
                         "VNBench-main-4try.json)")
    ev.add_argument("--model", required=True, help="local model directory (Qwen2.5-VL)")
    ev.add_argument("--limit", type=int, default=0, help="first N items only")
    ev.add_argument("--out", default=None, help="results .jsonl (default <bench>_<attn>_...)")
    for a in (gen, ev):
        a.add_argument("--max-frames", type=int, default=64)
        a.add_argument("--fps", type=float, default=1.0)
        a.add_argument("--max-new-tokens", type=int, default=128 if a is gen else 8)
        a.add_argument("--attention", choices=["spava", "dense"], default="spava")
        a.add_argument("--passing-len", default="auto", help="an int, 'auto' or 'exact'")
        a.add_argument("--anchor-len", default="auto", help="an int or 'auto'")
    ev.set_defaults(func=cmd_eval)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "world_size", 1) < 1 or getattr(args, "simulate_world_size", 1) < 1:
        print("spava: the world size must be >= 1", file=sys.stderr)
        return 2
    return args.func(args)
