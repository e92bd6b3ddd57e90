"""The spava command (also: python -m spava_ext).

    spava demo [--world-size W] [--frames F] ...   Spava attention on a synthetic video layer
                                                   over W ranks vs dense attention
    spava bench --simulate-world-size W [...]      one GPU plays every rank of a W-rank layer:
                                                   per-rank times, critical path, bytes sent,
                                                   predicted overlap, ring / APB / dense baselines
    torchrun --nproc-per-node N -m spava_ext generate --model DIR --video FILE --question TEXT
                                                   answer a question about a video (Qwen2.5-VL,
                                                   Qwen3-VL, InternVL3, LLaVA-OneVision ...)
    torchrun --nproc-per-node N -m spava_ext eval --bench NAME --data DIR --model DIR
                                                   LongVideoBench / VNBench accuracy

Every argument is checked before a model, a video or a rank process is loaded or started.
"""

from __future__ import annotations

import argparse
import math
import sys

import torch

__all__ = ["main"]


# ---------------------------------------------------------------------------------- argument types
def int_at_least(minimum: int):
    """argparse ``type``: an integer >= ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected an integer >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    return parse


def positive_float(text: str) -> float:
    """argparse ``type``: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def int_or_words(minimum: int, *words: str):
    """argparse ``type``: one of ``words`` or an integer >= ``minimum``."""
    as_int = int_at_least(minimum)

    def parse(text: str):
        if text in words:
            return text
        try:
            return as_int(text)
        except argparse.ArgumentTypeError as e:
            raise argparse.ArgumentTypeError(
                f"expected {', '.join(repr(w) for w in words)} or an integer >= {minimum}, "
                f"got {text!r}") from e

    return parse


def heads_pair(text: str) -> tuple[int, int]:
    """argparse ``type``: query/kv heads such as ``28/4`` (Hq a multiple of Hkv)."""
    from .layout import check_heads

    try:
        hq, hkv = (int(x) for x in text.split("/"))
        return check_heads("--heads", hq, hkv)
    except ValueError as e:
        raise argparse.ArgumentTypeError(
            f"expected query/kv heads like 28/4 (Hq a multiple of Hkv), got {text!r}") from e


def bandwidths(text: str) -> list[float]:
    """argparse ``type``: a comma list of link bandwidths in GB/s, each > 0."""
    return [positive_float(x) for x in text.split(",")]


# ---------------------------------------------------------------------------------- commands
def cmd_bench(args) -> int:
    import datetime
    import json

    from . import envs
    from .simulate import SimConfig, format_report, simulate

    if not torch.cuda.is_available():
        print("spava bench: --simulate-world-size runs the ranks' work on a CUDA GPU; none found",
              file=sys.stderr)
        return 2
    hq, hkv = args.heads
    cfg = SimConfig(context=args.context, question=args.question,
                    world=args.simulate_world_size, heads_q=hq, heads_kv=hkv,
                    head_dim=args.head_dim, anchor=args.anchor, passing=args.passing,
                    bandwidths_gbs=args.bandwidth, repeats=args.repeats, dense=not args.no_dense)
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


def check_demo(args) -> None:
    from .demo import check_demo_args

    check_demo_args(args)


def cmd_generate(args) -> int:
    from .session import cmd_generate as run

    return run(args)


def check_model_args(args) -> None:
    """The attention options of generate and eval, before any model is loaded."""
    if args.hadamard and args.attn_dtype != "fp8":
        raise ValueError("--hadamard rotates Q and K before FP8 quantisation: it needs "
                         "--attn-dtype fp8")
    if args.attn_dtype is not None and args.attention != "spava":
        raise ValueError(f"--attn-dtype {args.attn_dtype} applies to --attention spava only")


def check_eval(args) -> None:
    """The annotation file and the selected items' videos, before any model is loaded."""
    from .evaluation import load_items

    check_model_args(args)
    load_items(args.bench, args.data, args.annotations, args.limit)


def cmd_eval(args) -> int:
    from .session import cmd_eval as run

    return run(args)


# ---------------------------------------------------------------------------------- main
def _add_demo(sub) -> None:
    demo = sub.add_parser("demo", help="Spava attention on a synthetic video layer vs dense")
    demo.add_argument("--world-size", type=int_at_least(1), default=4,
                      help="CPU rank processes (gloo)")
    demo.add_argument("--frames", type=int_at_least(1), default=64)
    demo.add_argument("--tokens-per-frame", type=int_at_least(1), default=96)
    demo.add_argument("--prefix", type=int_at_least(0), default=32, help="system-prompt tokens")
    demo.add_argument("--question", type=int_at_least(1), default=32, help="question tokens")
    demo.add_argument("--heads-q", type=int_at_least(1), default=16,
                      help="query heads, a multiple of --heads-kv")
    demo.add_argument("--heads-kv", type=int_at_least(1), default=2)
    demo.add_argument("--head-dim", type=int_at_least(1), default=64)
    demo.add_argument("--anchor", type=int_at_least(0), default=None,
                      help="anchor tokens (default: the paper's)")
    demo.add_argument("--passing", type=int_at_least(1), default=None,
                      help="passing tokens per chunk (default: the paper's)")
    demo.add_argument("--repeats", type=int_at_least(1), default=3,
                      help="timed calls per layout (the median is shown)")
    demo.add_argument("--seed", type=int_at_least(0), default=0)
    demo.add_argument("--attn-dtype", choices=["fp8"], default=None,
                      help="fp8: FP8 (e4m3) attention, Q/K/V quantised per 128-row block and the "
                           "passing blocks sent as e4m3 (docs/kernels/attn_fp8.md); default: "
                           "the inputs' dtype (fp32)")
    demo.add_argument("--hadamard", action="store_true",
                      help="with --attn-dtype fp8: rotate Q and K by a Hadamard matrix first "
                           "(--head-dim a power of two)")
    demo.set_defaults(func=cmd_demo, check=check_demo)


def _add_bench(sub) -> None:
    bench = sub.add_parser("bench", help="single-GPU simulation of a W-rank Spava layer")
    bench.add_argument("--simulate-world-size", type=int_at_least(1), required=True, metavar="W")
    bench.add_argument("--context", type=int_at_least(1), default=131072,
                       help="context tokens (anchor incl.)")
    bench.add_argument("--question", type=int_at_least(1), default=64)
    bench.add_argument("--heads", type=heads_pair, default=(28, 4),
                       help="query/kv heads (default 28/4, Qwen2.5-VL-7B)")
    bench.add_argument("--head-dim", type=int_at_least(1), default=128)
    bench.add_argument("--anchor", type=int_at_least(0), default=None,
                       help="default: the paper's")
    bench.add_argument("--passing", type=int_at_least(1), default=None,
                       help="default: the paper's")
    bench.add_argument("--bandwidth", type=bandwidths, default=[450.0, 50.0],
                       help="link GB/s per direction, comma list (default 450,50)")
    bench.add_argument("--repeats", type=int_at_least(1), default=10)
    bench.add_argument("--no-dense", action="store_true", help="skip the dense SDPA baselines")
    bench.add_argument("--json", default=None, help="write the full result here")
    bench.set_defaults(func=cmd_bench)


def _add_model_args(parser, max_new_tokens: int) -> None:
    """Arguments shared by generate and eval."""
    parser.add_argument("--model", required=True,
                        help="local model directory; its config's model_type picks the family "
                             "(docs/models.md)")
    parser.add_argument("--fps", type=positive_float, default=1.0,
                        help="frames sampled per second of video (default 1)")
    parser.add_argument("--max-frames", type=int_at_least(2), default=64,
                        help="at most this many frames, spread over the whole video and rounded "
                             "down to an even count (the model takes frames in pairs; default 64)")
    parser.add_argument("--max-new-tokens", type=int_at_least(1), default=max_new_tokens,
                        help=f"answer tokens at most (default {max_new_tokens})")
    parser.add_argument("--attention", choices=["spava", "dense"], default="spava",
                        help="spava: Spava prefill over the torchrun ranks and exact distributed "
                             "decode; dense: the model's own attention on rank 0 (the baseline)")
    parser.add_argument("--passing-len", type=int_or_words(1, "auto", "exact"), default="auto",
                        help="keys each context chunk passes on: an integer >= 1, 'auto' (the "
                             "paper's) or 'exact' (all: equals dense attention)")
    parser.add_argument("--anchor-len", type=int_or_words(0, "auto"), default="auto",
                        help="anchor tokens at the start of the prompt: an integer >= 0 or "
                             "'auto' (the paper's)")
    parser.add_argument("--anchor", choices=["auto", "sharded", "replicated"], default="auto",
                        help="sharded: each rank runs the model on 1/W of the anchor and the "
                             "layers gather its K/V; replicated: every rank runs the whole "
                             "anchor (the same answer); auto (default): sharded on several ranks")
    parser.add_argument("--attn-dtype", choices=["fp8"], default=None,
                        help="fp8: the prefill's Spava attention in FP8 (e4m3, per-block "
                             "scales; docs/kernels/attn_fp8.md; CPU only until the FP8 kernel "
                             "exists); default: the model's dtype")
    parser.add_argument("--hadamard", action="store_true",
                        help="with --attn-dtype fp8: rotate Q and K by a Hadamard matrix first")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spava", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_demo(sub)
    _add_bench(sub)
    gen = sub.add_parser("generate", help="answer a question about a video (run with torchrun)")
    gen.add_argument("--video", required=True, help="local video file (decoded with PyAV)")
    gen.add_argument("--question", required=True)
    _add_model_args(gen, max_new_tokens=128)
    gen.set_defaults(func=cmd_generate, check=check_model_args)
    ev = sub.add_parser("eval", help="LongVideoBench / VNBench accuracy (run with torchrun)")
    ev.add_argument("--bench", choices=["longvideobench", "vnbench"], required=True)
    ev.add_argument("--data", required=True, help="dataset root directory")
    ev.add_argument("--annotations", default=None,
                    help="annotation file in --data (default lvb_val.json / "
                         "VNBench-main-4try.json)")
    ev.add_argument("--limit", type=int_at_least(0), default=0,
                    help="first N items only (default 0: all)")
    ev.add_argument("--out", default=None, help="results .jsonl (default <bench>_<attn>_...)")
    _add_model_args(ev, max_new_tokens=8)
    ev.set_defaults(func=cmd_eval, check=check_eval)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse and check every argument (exit status 2 with a one-line error), then run."""
    parser = build_parser()
    args = parser.parse_args(argv)
    check = getattr(args, "check", None)
    if check is not None:
        try:
            check(args)
        except ValueError as e:
            print(f"spava {args.command}: error: {e}", file=sys.stderr)
            return 2
    return args.func(args)
