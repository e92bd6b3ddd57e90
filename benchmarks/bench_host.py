"""Host overhead (routine ``host``): what the host spends to enqueue one layer's Spava attention,
and how much the GPU idles in a whole prefill, eager and replayed as a CUDA graph.

1. Enqueue: one simulated rank's ``spava_attention_rank`` (default W = 8, 128K, 7B heads) with
   the GPU kept busy by a sleep kernel queued before each call, so the host never waits for
   the device; the host's wall time per call (median), and a cProfile of as many further calls
   (top functions by own and by cumulative time; its hooks slow the calls it profiles).
2. GPU idle: a simulated rank's prefill of the Qwen2.5-VL-7B language model (default 32K
   context, 28 layers, random weights) under torch.profiler, eager and through
   spava_ext.graphs.PrefillGraphs: idle share = 1 - (union of the device's kernel and copy
   intervals) / (first start to last end).

    python benchmarks/bench.py --routine host [--context 131072] [--prefill-context 32768]
    python benchmarks/bench.py --routine host --tiny --device cpu   # the CPU smoke run
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import statistics
import time
from typing import Optional

import torch

from bench_e2e import language_model, prompt_ids
from bench_utils import write_result
from spava_ext import SpavaLayout
from spava_ext.attention import spava_attention_rank
from spava_ext.comm import SimulatedComm
from spava_ext.graphs import PrefillGraphs
from spava_ext.integrations.multimodal import Prompt
from spava_ext.integrations.transformers import graphed_prefill, spava_prefill


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--context", type=int, default=131072,
                        help="context tokens of the enqueue measurement")
    parser.add_argument("--prefill-context", type=int, default=32768,
                        help="context tokens of the prefill trace")
    parser.add_argument("--world", type=int, default=8)
    parser.add_argument("--question", type=int, default=64)
    parser.add_argument("--calls", type=int, default=50, help="timed enqueues")
    parser.add_argument("--anchor", choices=["sharded", "replicated"], default="sharded",
                        help="the anchor's placement (generate's default: sharded)")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--tiny", action="store_true",
                        help="tiny shapes and model (the CPU smoke run)")


def _busy(device: str, ms: float) -> None:
    """Queue ``ms`` of device work ahead of the next call (CUDA only)."""
    if device == "cuda":
        torch.cuda._sleep(int(ms * 1.98e6))  # cycles at up to 1980 MHz


def enqueue_us(args, rank: int) -> dict:
    """Host microseconds per ``spava_attention_rank`` call of ``rank`` (median, min) and the
    cProfile of the timed calls."""
    heads_q, heads_kv, D = (4, 2, 16) if args.tiny else (28, 4, 128)
    layout = SpavaLayout.auto(args.context + args.question, args.question, args.world,
                              shard_anchor=args.anchor == "sharded")
    comm = SimulatedComm(rank, args.world)
    n = layout.local_len(rank)
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    q = torch.randn(1, n, heads_q, D, device=args.device, dtype=dtype)
    k = torch.randn(1, n, heads_kv, D, device=args.device, dtype=dtype)
    v = torch.randn_like(k)
    call = lambda: spava_attention_rank(q, k, v, layout, comm)  # noqa: E731
    with torch.no_grad():
        for _ in range(3):
            call()
        times = [_timed_call(call, args.device) for _ in range(args.calls)]
        # the profile comes from separate calls: its hooks cost host time of their own
        prof = cProfile.Profile()
        for _ in range(args.calls):
            _timed_call(call, args.device, prof)
    return {"rank": rank, "layout": repr(layout), "median_us": statistics.median(times),
            "min_us": min(times), "profile_top": _top(prof, "tottime"),
            "profile_cumulative": _top(prof, "cumulative")}


def _timed_call(call, device: str, prof: Optional[cProfile.Profile] = None) -> float:
    """Host microseconds of one ``call`` issued behind queued device work (under ``prof`` when
    given)."""
    if device == "cuda":
        torch.cuda.synchronize()
    _busy(device, 30.0)  # longer than a layer: the host never blocks
    if prof is not None:
        prof.enable()
    t0 = time.perf_counter()
    call()
    t = (time.perf_counter() - t0) * 1e6
    if prof is not None:
        prof.disable()
    return t


def _top(prof: cProfile.Profile, key: str, n: int = 25) -> list[str]:
    """The profile's ``n`` first functions by ``key``, as printed lines."""
    text = io.StringIO()
    pstats.Stats(prof, stream=text).sort_stats(key).print_stats(n)
    return text.getvalue().splitlines()[-(n + 2):]


def _union_ms(intervals: list[tuple[float, float]]) -> float:
    total, end = 0.0, float("-inf")
    for s, e in sorted(intervals):
        if e > end:
            total += e - max(s, end)
            end = e
    return total / 1e3


def device_idle(fn) -> dict:
    """Run ``fn`` under torch.profiler (after one untraced call): the device's busy and span
    times (ms) and the idle share."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as p:
        fn()
        torch.cuda.synchronize()
    spans = [(e.time_range.start, e.time_range.end) for e in p.events()
             if e.device_type == torch.autograd.DeviceType.CUDA and e.time_range.end > 0]
    busy = _union_ms(spans)
    span = (max(e for _, e in spans) - min(s for s, _ in spans)) / 1e3
    return {"busy_ms": busy, "span_ms": span, "idle_share": 1 - busy / span}


def prefill_idle(args) -> dict:
    """GPU idle share of the last rank's prefill, eager and replayed from a CUDA graph."""
    model = language_model("qwen2.5-vl-7b", tiny=args.tiny, device=args.device)
    L = args.prefill_context + args.question
    layout = SpavaLayout.auto(L, args.question, args.world, shard_anchor=args.anchor == "sharded")
    ids = prompt_ids(model, L)
    comm = SimulatedComm(args.world - 1, args.world)
    result = {"layout": repr(layout), "layers": model.config.num_hidden_layers}
    with torch.no_grad():
        result["eager"] = device_idle(lambda: spava_prefill(model, ids, layout, comm))
        graphs = PrefillGraphs()
        prompt = Prompt(model.get_input_embeddings()(ids),
                        torch.arange(L, device=ids.device).expand_as(ids))
        make_cache = lambda: None  # noqa: E731  (the timing needs no KV cache)
        result["graph"] = device_idle(
            lambda: graphed_prefill(graphs, model, prompt, layout, comm, make_cache, 0))
    return result


def run(args: argparse.Namespace) -> int:
    if args.tiny:
        args.context, args.prefill_context = min(args.context, 4096), min(args.prefill_context,
                                                                          2048)
    enq = [enqueue_us(args, r) for r in (0, args.world - 1)]
    result = {"world": args.world, "context": args.context, "tiny": args.tiny,
              "device": args.device, "enqueue": enq}
    for e in enq:
        print(f"enqueue rank {e['rank']}: median {e['median_us']:.0f} us, min "
              f"{e['min_us']:.0f} us ({e['layout']})")
    if args.device == "cuda":
        result["prefill"] = prefill_idle(args)
        for mode in ("eager", "graph"):
            r = result["prefill"][mode]
            print(f"prefill {args.prefill_context} tokens, {mode}: GPU busy {r['busy_ms']:.1f} "
                  f"of {r['span_ms']:.1f} ms, idle {100 * r['idle_share']:.1f} %")
    path = write_result("host" + ("_tiny" if args.tiny else ""), result)
    print("\n".join(enq[-1]["profile_cumulative"]))
    print(f"wrote {path}")
    return 0
