"""The ``spava`` command (also ``python -m spava_ext``).

    spava demo [--world-size W] [--frames F] ...   Spava attention on a synthetic video layer
                                                   over W ranks vs dense attention
    spava bench --simulate-world-size W [...]      one GPU plays every rank of a W-rank layer:
                                                   per-rank times, critical path, bytes sent,
                                                   predicted overlap, ring / APB / dense baselines
    torchrun --nproc-per-node N -m spava_ext generate --model DIR --video FILE --question TEXT
                                                   answer a question about a video (Qwen2.5-VL,
                                                   Qwen3-VL, InternVL3, LLaVA-OneVision ...)
"""

from __future__ import annotations

import argparse
import sys

import torch

__all__ = ["main"]


# ---------------------------------------------------------------------------------- bench
def cmd_bench(args) -> int:
    import datetime
    import json

    from . import envs
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
    res["date"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    res["commit"] = envs.commit() or "unknown (set SPAVA_COMMIT)"
    print(f"spava bench on {res['card']}")
    print(format_report(res))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
        print(f"wrote {args.json}")
    return 0


def cmd_demo(args) -> int:
    from .demo import cmd_demo as run

    return run(args)


def cmd_generate(args) -> int:
    from .session import cmd_generate as run

    return run(args)


def cmd_eval(args) -> int:
    from .session import cmd_eval as run

    return run(args)


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
    gen.add_argument("--model", required=True,
                     help="local model directory; its config's model_type picks the family "
                          "(docs/models.md)")
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
