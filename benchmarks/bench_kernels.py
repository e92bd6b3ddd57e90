"""Kernel benchmarks (routine ``kernels``): the per-rank work of Spava, side by side with the
baselines.

Workload: the work of one rank of W = 8 at n = 131072 context tokens (anchor included) + 64
question tokens, the paper's anchor / passing lengths (a = 2048, p = 1024, chunks of 8064),
heads of Qwen2.5-VL-7B (28 q / 4 kv, D = 128), also D = 64, D = 80 and Qwen2.5-VL-3B heads
(16 / 2). Per call of attn_fwd (first virtual host, second virtual host, question partial) it
times:

* spava attn_fwd (keys read in place from the segments),
* FlexAttention with the same mask (keys concatenated beforehand, block mask prebuilt: neither
  is timed),

and once per head configuration dense causal SDPA on the full sequence (cuDNN and flash
backends). TFLOP/s count allowed (unmasked) query-key pairs only: 4 * pairs * D * Hq.

Timing. Kernel rates are device time: 4 calls queued per sample (the host's glue, ~50-80 us a
call on the box, overlaps the previous call, as in a model), contenders timed *interleaved*
sample by sample, since an H100 at its 700 W limit runs from ~1350 to 1980 MHz under sustained
load and a back-to-back comparison moves by 10 % with the clock; the median SM clock of each
measurement is recorded. One synchronised call (host glue included) is reported beside.
The headline rate of each call is attn_fwd alone and sustained: half a second of
back-to-back calls, then three half-second runs of calls queued back to back, time per call
averaged over them (spava_ext.timing.sustained_time: at the 700 W limit the clock swings for
tens to hundreds of milliseconds, so short samples scattered by +-8 %, and side by side with
slower, lower-power contenders a kernel measured up to ~9 % faster). The side-by-side timings
(same clocks) give the ratios to the baselines; where a call is plain causal attention (rank
0's [anchor | C_0]) cuDNN and flash SDPA run the very same problem, and cuDNN is also timed
alone, sustained. Each workload starts near the temperature the first one started from (idle
until within 8 C of it; --cool-to sets another limit; the card's temperature is recorded with
every call), so that a workload's result depends less on how hot the ones before it left the
card.
It also times select_passing (bytes/s against the device copy bandwidth), merge_states, and the
whole per-rank spava_attention of every rank with received passing blocks synthesised
(sustained, like the attention calls; the short-sample time is kept beside it).

``--unit-overhead`` measures instead the fixed cost of one attn_fwd unit (128 query rows x one
head): full attention with equal FLOPs and 8 to 128 key tiles per unit, fitted to
e(L) = e_inf * L / (L + c) (c: the unit's fixed cost in key-tile times); it writes
unit_overhead_<date>_<card>.json.

    python benchmarks/bench.py --routine kernels [--quick] [--no-flex] [--heads NAME ...]
    python benchmarks/bench.py --routine kernels --unit-overhead
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from bench_utils import (capture_graph, card_temperature_c, cool_to, copy_bandwidth_gbs,
                         gpu_time, gpu_time_interleaved, graph_time, peak_fraction,
                         sustained_time, write_result)
from spava_ext import SpavaLayout, ops
from spava_ext.attention import spava_attention_rank
from spava_ext.comm import SimulatedComm
from workload import (HEADS, attn_calls, dense_equivalent, flex_runner, rank_launch,
                      rank_tensors, sdpa_fns, tflops, with_rate)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--n", type=int, default=131072, help="context tokens (anchor included)")
    parser.add_argument("--question", type=int, default=64)
    parser.add_argument("--world", type=int, default=8)
    parser.add_argument("--quick", action="store_true", help="fewer repeats, D128 7B only")
    parser.add_argument("--heads", nargs="*", choices=list(HEADS), help="workloads to run")
    parser.add_argument("--no-flex", action="store_true")
    parser.add_argument("--no-dense", action="store_true")
    parser.add_argument("--cool-to", type=int, default=None,
                        help="idle until the GPU is <= this many degrees C before each "
                             "workload (default: its temperature at the start + 8; 0: do not "
                             "wait)")
    parser.add_argument("--unit-overhead", action="store_true",
                        help="measure attn_fwd's fixed cost per unit instead of the workload")
    parser.add_argument("--repeats", type=int, default=None,
                        help="samples per timing (default: 20, 5 with --quick, 15 with "
                             "--unit-overhead)")


def run(args: argparse.Namespace) -> int:
    if args.unit_overhead:
        return unit_overhead(args.repeats or 15)
    reps = args.repeats or (5 if args.quick else 20)
    layout = SpavaLayout.auto(args.n + args.question, args.question, args.world)
    start_c = card_temperature_c()
    cool_limit = args.cool_to
    if cool_limit is None:
        cool_limit = start_c + 8 if start_c is not None else 0
    copy_gbs = copy_bandwidth_gbs()
    result = {"layout": repr(layout), "copy_gb_s": copy_gbs, "start_temp_c": start_c,
              "cool_to_c": cool_limit, "workloads": {}}
    table = []
    for wname in args.heads or (["qwen2.5-vl-7b"] if args.quick else list(HEADS)):
        w = bench_workload(wname, layout, args, reps, cool_to(cool_limit), copy_gbs, table)
        result["workloads"][wname] = w
    result["merge_states"] = tm = bench_merge(args.world, args.question)
    table.append(f"merge_states W={args.world}, 64 rows x 28 heads: {tm['ms'] * 1e3:.1f} us")
    path = write_result("kernels", result)
    print(f"copy bandwidth {copy_gbs:.0f} GB/s; {layout}")
    print("\n".join(table))
    print(f"wrote {path}")
    return 0


def bench_workload(wname: str, layout: SpavaLayout, args, reps: int, cooled: dict,
                   copy_gbs: float, table: list) -> dict:
    """Every measurement of one head configuration (``cooled``: the wait for the card's
    temperature before it); its lines appended to ``table``."""
    Hq, Hkv, D = HEADS[wname]
    dtype = torch.bfloat16
    say = lambda text: table.append(f"{wname:<18} {text}")  # noqa: E731
    w = {"heads_q": Hq, "heads_kv": Hkv, "head_dim": D, "calls": [], "layer": [],
         "cooled": cooled}
    c = cooled
    say(f"starts at {c['after_c']} C (waited {c['wait_s']} s from {c['before_c']} C; limit "
        f"{c['limit_c']} C)")
    for rank in (0, args.world - 1):
        tensors = rank_tensors(layout, rank, Hq, Hkv, D, dtype)
        for name, qr, keys in attn_calls(layout, rank, *tensors):
            flex = not args.no_flex and wname == "qwen2.5-vl-7b" and name != "question"
            w["calls"].append(bench_call(qr, keys, rank, name, D, Hq, reps, flex))
            say(call_line(w["calls"][-1]))
        f = bench_fused(layout, rank, *tensors, D, Hq, reps)
        w["fused"] = w.get("fused", []) + [f]
        say(f"r{rank} one launch (3 problems) {f['ms']:>8.3f} ms {f['tflops']:>6.0f} TF/s; "
            f"three launches {f['separate_ms']:.3f} ms (one synchronised call: "
            f"{f['sync_ms']:.3f} vs {f['separate_sync_ms']:.3f})")
    w["own_dense"] = own_dense(32768, Hq, Hkv, D, dtype, reps)
    say(own_dense_line(w))
    w["one_launch"] = [one_launch_sustained(layout, rank, Hq, Hkv, D, dtype)
                       for rank in range(args.world)]
    low = min(w["one_launch"], key=lambda x: x["tflops"])
    say("one launch per rank (its 3 problems), alone, sustained: "
        + ", ".join(f"r{x['rank']} {x['tflops']:.0f}" for x in w["one_launch"])
        + f" TF/s (lowest r{low['rank']}{clock_note(low)})")
    w["layer"] = rank_layers(layout, Hq, Hkv, D, dtype, reps)
    crit = max(w["layer"], key=lambda x: x["ms"])
    say(f"whole per-rank layer: max over ranks {crit['ms']:.3f} ms sustained (rank "
        f"{crit['rank']}; short samples {crit['short_samples_ms']:.3f} ms; one synchronised "
        f"call {crit['one_call_ms']:.3f} ms)")
    w["select_passing"] = bench_select(layout, args.world - 1, Hq, Hkv, D, dtype, copy_gbs)
    say(select_line(w["select_passing"]))
    if not args.no_dense:
        w["dense"] = dense_sdpa(layout.seq_len, Hq, Hkv, D, dtype, repeats=3)
        for b, r in w["dense"].items():
            say(f"dense causal SDPA {b:<6} " + (f"{r['ms']:9.1f} ms {r['tflops']:6.0f} TF/s"
                                                if "ms" in r else r["error"]))
    return w


def bench_call(qr, keys, rank: int, name: str, D: int, Hq: int, reps: int, flex: bool) -> dict:
    """One attn_fwd call of the rank: alone and sustained (the headline), side by side with
    the baselines that run the same problem (device time, 4 calls queued per sample, same
    clocks), and one synchronised call (host glue included)."""
    pairs = keys.pairs(qr.shape[1])
    out = torch.empty_like(qr)
    lse = torch.empty(1, Hq, qr.shape[1], device="cuda")
    fns = {"spava": lambda: ops.attn_fwd(qr, keys.k, keys.v, keys.row_begin, keys.diag,
                                         out=out, lse=lse)}
    dense_kv = dense_equivalent(qr, keys)
    if dense_kv is not None:  # the same problem, dense: SDPA side by side
        fns.update(sdpa_fns(qr, *dense_kv))
    flex_error = add_flex(fns, qr, keys, D ** -0.5) if flex else None
    t = gpu_time_interleaved(fns, repeats=reps, pipelined=4)
    alone = sustained_time(fns["spava"], t["spava"]["ms"])
    sync = gpu_time(fns["spava"], warmup=1, repeats=reps)
    entry = {"rank": rank, "call": name, "rows": qr.shape[1], "pairs": pairs,
             "sm_clock_mhz": t["sm_clock_mhz"], "gpu_temp_c": card_temperature_c(),
             "spava": {**with_rate(alone, pairs, D, Hq), "sync_ms": sync["ms"],
                       "side_by_side": with_rate(t["spava"], pairs, D, Hq)}}
    for other in ("flex", "cudnn", "flash"):
        if other in fns:
            entry[other] = with_rate(t[other], pairs, D, Hq)
    if flex_error:
        entry["flex"] = flex_error
    if "cudnn" in fns:  # the same problem, alone and sustained as well
        entry["cudnn"]["sustained"] = with_rate(sustained_time(fns["cudnn"], t["cudnn"]["ms"]),
                                                pairs, D, Hq)
    return entry


def add_flex(fns: dict, qr, keys, scale: float) -> dict | None:
    """Adds FlexAttention with the call's mask to ``fns`` (compiled and run once here); where
    it fails, ``{"error": ...}`` instead (reported, not hidden)."""
    try:
        fns["flex"] = flex_runner(qr, keys, scale)
        fns["flex"]()
    except Exception as e:  # report, don't hide
        fns.pop("flex", None)
        return {"error": f"{type(e).__name__}: {e}"[:300]}
    return None


def clock_note(r: dict) -> str:
    """' (power cap 100 % of the time; NVML clock 1578 MHz)' for a sustained timing where NVML
    could be read (its clock reading is not the effective clock under the cap: see
    spava_ext.timing.ClockSampler)."""
    if not r.get("clock_samples"):
        return ""
    cap = r.get("power_cap_fraction")
    return (" (" + (f"power cap {cap:.0%} of the time; " if cap is not None else "")
            + f"NVML clock {r['nvml_sm_clock_mhz']:.0f} MHz)")


def pct(r: dict) -> str:
    return f" ({r['peak_fraction']:.0%})" if r.get("peak_fraction") else ""


def joules_note(r: dict) -> str:
    return f" ({r['tflop_per_joule']:.3f} TFLOP/J)" if r.get("tflop_per_joule") else ""


def call_line(entry: dict) -> str:
    """The table's line of one attn_fwd call (``bench_call``'s entry)."""
    spava, side = entry["spava"], entry["spava"]["side_by_side"]
    flex = entry.get("flex", {}).get("tflops")
    same = "".join(f", {b} {entry[b]['tflops']:.0f} (same problem)"
                   for b in ("cudnn", "flash") if b in entry)
    if "cudnn" in entry:
        cs = entry["cudnn"]["sustained"]
        same += (f"; cudnn on the same problem alone, sustained: {cs['tflops']:.0f}"
                 + joules_note(cs) + clock_note(cs))
    return (f"r{entry['rank']} {entry['call']:<8} {entry['rows']:>6} rows "
            f"{spava['ms']:>8.3f} ms {spava['tflops']:>6.0f} TF/s sustained" + joules_note(spava)
            + clock_note(spava) + f"; side by side: attn_fwd {side['tflops']:.0f}"
            + (f", flex {flex:.0f}" if flex else "") + same
            + f" (sync {spava['sync_ms']:.3f} ms; "
            + (f"{entry['gpu_temp_c']} C, " if entry["gpu_temp_c"] else "")
            + f"SM {side['sm_clock_mhz']} MHz under load)")


def own_dense_line(w: dict) -> str:
    od = w["own_dense"]
    masked = ", ".join(f"{c['spava']['tflops'] / od['sustained']['spava']['tflops']:.0%}"
                       for c in w["calls"] if c["call"] != "question")
    return (f"dense causal, 32K tokens: attn_fwd {od['tflops']:>4.0f} TF/s" + pct(od)
            + "".join(f", {b} {od[b]['tflops']:.0f}{pct(od[b])}"
                      for b in ("cudnn", "flash") if b in od)
            + "; alone, sustained: "
            + ", ".join(f"{n} {r['tflops']:.0f}" + joules_note(r) + clock_note(r)
                        for n, r in od["sustained"].items())
            + f" (masked calls / attn_fwd, both sustained: {masked})")


def select_line(sp: dict) -> str:
    kernels = ", ".join(f"{k.split('<')[0].split('(')[0].split('::')[-1]} {v:.1f}"
                        for k, v in sp["kernels_us"].items())
    return (f"select_passing device (graph) {sp['graph_us']:6.1f} us {sp['graph_gb_s']:5.0f} "
            f"GB/s = {100 * sp['graph_fraction_of_copy']:.0f}% of copy (a copy of the same "
            f"bytes: {sp['same_size_copy_us']:.1f} us); eager per call {sp['eager_us']:6.1f} us;"
            f" kernels (us) {kernels}")
def dense_sdpa(L: int, Hq: int, Hkv: int, D: int, dtype, repeats: int) -> dict:
    """Dense causal SDPA over the full sequence of ``L`` tokens, per backend (cuDNN, flash):
    synchronised calls, or the backend's error where it refuses the shape."""
    q = torch.randn(1, Hq, L, D, device="cuda", dtype=dtype)
    k = torch.randn(1, Hkv, L, D, device="cuda", dtype=dtype)
    v = torch.randn(1, Hkv, L, D, device="cuda", dtype=dtype)
    pairs = L * (L + 1) // 2
    out = {}
    for name, backend in (("cudnn", SDPBackend.CUDNN_ATTENTION),
                          ("flash", SDPBackend.FLASH_ATTENTION)):
        try:
            with sdpa_kernel(backend):
                def run():
                    return F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                                          enable_gqa=True)
                t = gpu_time(run, warmup=1, repeats=repeats)
        except RuntimeError as e:  # a backend that refuses the shape
            out[name] = {"error": str(e).splitlines()[0]}
            continue
        out[name] = {**t, "tflops": tflops(pairs, D, Hq, t["ms"])}
    return out


def bench_select(layout, rank, Hq, Hkv, D, dtype, copy_gbs) -> dict:
    """select_passing of ``rank``'s two chunks. Primary figure: device time per call from a CUDA
    graph holding one call per input set (4 sets, so L2 does not hold the inputs), replayed and
    timed with CUDA events (median of 30 replays / 4), each replay queued behind a hold so that
    the host's graph launch is not counted (``graph_unheld_us``: without the hold). Also the
    eager per-call time (host launch overhead included), the profiler's per-kernel times, and
    for context a plain copy of the same bytes timed the same way."""
    sets = [rank_tensors(layout, rank, Hq, Hkv, D, dtype, seed=100 * i)[:3] for i in range(4)]
    s = layout.local_segments(rank)
    p, cap = layout.passing_len, layout.passing_cap
    args = [(q[:, s.question_start:], k, v) for q, k, v in sets]
    idx = torch.empty(2, 1, Hkv, cap, dtype=torch.long, device="cuda")
    kv = torch.empty(2, cap, 2, 1, Hkv, D, dtype=dtype, device="cuda")

    def run(qq, k, v):
        ops.select_passing(qq, k, v, [s.chunk1_start, s.chunk2_start], [s.chunk1, s.chunk2], p,
                           layout.pool_kernel, indices=idx, kv=kv)

    eager = gpu_time(run, args, warmup=3, repeats=30)
    torch.cuda.synchronize()
    graph = capture_graph([lambda a=a: run(*a) for a in args])
    held = graph_time(graph, len(args), repeats=30)
    unheld = graph_time(graph, len(args), repeats=30, hold=False)
    del graph
    kernels = profiled_kernels_us(lambda: run(*args[0]))
    nbytes = select_bytes(layout, rank, Hq, Hkv, D, dtype)
    same_size_copy = graph_copy_ms(nbytes)
    graph_gbs = nbytes / (held["ms"] * 1e-3) / 1e9
    eager_gbs = nbytes / (eager["ms"] * 1e-3) / 1e9
    return {"bytes": nbytes,
            "graph_us": held["ms"] * 1e3, "graph_min_us": held["min_ms"] * 1e3,
            "graph_unheld_us": unheld["ms"] * 1e3,
            "same_size_copy_us": same_size_copy * 1e3,
            "graph_gb_s": graph_gbs, "graph_fraction_of_copy": graph_gbs / copy_gbs,
            "eager_us": eager["ms"] * 1e3, "eager_min_us": eager["min_ms"] * 1e3,
            "eager_gb_s": eager_gbs, "eager_fraction_of_copy": eager_gbs / copy_gbs,
            "kernels_us": kernels}


def select_bytes(layout, rank, Hq, Hkv, D, dtype) -> int:
    """Bytes select_passing of ``rank`` must move: keys scored, question rows, kept K/V rows
    read, send buffer and indices written."""
    s = layout.local_segments(rank)
    p, cap = layout.passing_len, layout.passing_cap
    el = torch.finfo(dtype).bits // 8
    m = [min(p, s.chunk1), min(p, s.chunk2)]
    return ((s.chunk1 + s.chunk2) * Hkv * D * el + s.question * Hq * D * el
            + sum(m) * 2 * Hkv * D * el + 2 * cap * 2 * Hkv * D * el + 2 * Hkv * cap * 8)


def profiled_kernels_us(fn, calls: int = 10) -> dict:
    """Per-kernel device time (us per call) of ``fn`` from the profiler (memcpys left out)."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
    kernels = {}
    for e in prof.key_averages():
        total = getattr(e, "device_time_total", None) or getattr(e, "cuda_time_total", 0)
        if total and "memcpy" not in e.key.lower():
            kernels[e.key[:60]] = total / calls
    return kernels


def graph_copy_ms(nbytes: int) -> float:
    """Context, not the bar: a plain device copy moving ``nbytes`` (half read, half written), 4
    buffer sets in one graph, timed like select_passing (ms per copy)."""
    bufs = [(torch.empty(nbytes // 2, dtype=torch.uint8, device="cuda").random_(),
             torch.empty(nbytes // 2, dtype=torch.uint8, device="cuda")) for _ in range(4)]
    graph = capture_graph([lambda s=src, d=dst: d.copy_(s) for src, dst in bufs])
    return graph_time(graph, len(bufs), repeats=30)["ms"]


def bench_fused(layout, rank, q, k, v, recv1, recv2, D, Hq, reps) -> dict:
    """The rank's three problems in one attn_fwd_group launch against the three problems in
    three launches, timed interleaved (same clocks), device time (4 calls queued per sample)
    and one synchronised call."""
    problems, pairs = rank_launch(layout, rank, q, k, v, recv1, recv2)
    fns = {"one": lambda: ops.attn_fwd_group(problems),
           "three": lambda: [ops.attn_fwd_group([p]) for p in problems]}
    t = gpu_time_interleaved(fns, repeats=reps, pipelined=4)
    sync = gpu_time_interleaved(fns, repeats=reps)
    return {"rank": rank, **t["one"], "pairs": pairs,
            "tflops": tflops(pairs, D, Hq, t["one"]["ms"]), "separate_ms": t["three"]["ms"],
            "sync_ms": sync["one"]["ms"], "separate_sync_ms": sync["three"]["ms"],
            "sm_clock_mhz": t["sm_clock_mhz"]}


def one_launch_sustained(layout, rank: int, Hq: int, Hkv: int, D: int, dtype) -> dict:
    """The rank's attention as the layer runs it, one attn_fwd_group launch over its three
    problems (receive buffers synthesised), alone and sustained: TF/s over the allowed pairs
    of all three."""
    problems, pairs = rank_launch(layout, rank, *rank_tensors(layout, rank, Hq, Hkv, D, dtype))
    run = lambda: ops.attn_fwd_group(problems)  # noqa: E731
    est = gpu_time(run, warmup=2, repeats=3, pipelined=2)["ms"]
    return {"rank": rank, "pairs": pairs, **with_rate(sustained_time(run, est), pairs, D, Hq)}


def own_dense(L: int, Hq: int, Hkv: int, D: int, dtype, reps: int) -> dict:
    """attn_fwd on plain causal attention (one segment, diag 0): the kernel's own dense rate,
    interleaved with dense causal SDPA (cuDNN, flash) on the same [1, L] shape; attn_fwd and
    cuDNN also alone, sustained (``sustained``)."""
    q = torch.randn(1, L, Hq, D, device="cuda", dtype=dtype)
    k = torch.randn(1, L, Hkv, D, device="cuda", dtype=dtype)
    v = torch.randn(1, L, Hkv, D, device="cuda", dtype=dtype)
    out = torch.empty_like(q)
    fns = {"spava": lambda: ops.attn_fwd(q, [k], [v], [0], [0], out=out), **sdpa_fns(q, k, v)}
    t = gpu_time_interleaved(fns, warmup=2, repeats=reps)
    pairs = L * (L + 1) // 2
    res = {"tokens": L, **with_rate(t["spava"], pairs, D, Hq)}
    res["sustained"] = {name: with_rate(sustained_time(fns[name], t[name]["ms"]),
                                        pairs, D, Hq) for name in ("spava", "cudnn") if name in fns}
    for name in fns:
        if name != "spava":
            res[name] = with_rate(t[name], pairs, D, Hq)
    return res


def rank_layers(layout, Hq: int, Hkv: int, D: int, dtype, reps: int) -> list:
    """The whole per-rank layer (spava_attention_rank, gathers simulated) of every rank:
    sustained (the headline, as for the attention calls), short samples of 4 queued calls (the
    host runs ahead), and one synchronised call."""
    rows = []
    for rank in range(layout.world_size):
        q, k, v, _, _ = rank_tensors(layout, rank, Hq, Hkv, D, dtype)
        comm = SimulatedComm(rank, layout.world_size)
        run = lambda: spava_attention_rank(q, k, v, layout, comm)  # noqa: E731
        short = gpu_time(run, warmup=3, repeats=reps, pipelined=4)
        t = sustained_time(run, short["ms"])
        one = gpu_time(run, warmup=1, repeats=reps)
        rows.append({"rank": rank, **t, "short_samples_ms": short["ms"], "one_call_ms": one["ms"]})
    return rows


def bench_merge(world: int, question: int) -> dict:
    """merge_states of ``world`` partial results of the question rows (28 heads, D = 128)."""
    outs = torch.randn(world, 1, question, 28, 128, device="cuda")
    lses = torch.randn(world, 1, 28, question, device="cuda")
    dst = torch.empty(1, question, 28, 128, device="cuda", dtype=torch.bfloat16)
    return gpu_time(lambda: ops.merge_states(outs, lses, out=dst), repeats=50)


def unit_overhead(repeats: int, Hq: int = 28, Hkv: int = 4, D: int = 128) -> int:
    """Full (non-causal) attention with the same FLOPs (Lq x Lk = 2^27) and 8 to 128 key tiles
    of 128 per unit, timed interleaved (rotating order, 4 calls queued per sample): TF/s, the
    fraction of the dense bf16 peak at the SM clock read under load, and the fit of
    e(L) = e_inf * L / (L + c) through 8 and 128 tiles."""
    fns, flops = {}, {}
    for lk in (1024, 2048, 4096, 8192, 16384):
        lq = (1 << 27) // lk
        q = torch.randn(1, lq, Hq, D, device="cuda", dtype=torch.bfloat16)
        k = torch.randn(1, lk, Hkv, D, device="cuda", dtype=torch.bfloat16)
        v = torch.randn(1, lk, Hkv, D, device="cuda", dtype=torch.bfloat16)
        out, lse = torch.empty_like(q), torch.empty(1, Hq, lq, device="cuda")
        fns[lk // 128] = (lambda q=q, k=k, v=v, out=out, lse=lse:
                          ops.attn_fwd(q, [k], [v], [0], [ops.FULL], out=out, lse=lse))
        flops[lk // 128] = 4.0 * lq * lk * D * Hq
    t = gpu_time_interleaved(fns, repeats=repeats, pipelined=4)
    rows = []
    for tiles in fns:
        tf = flops[tiles] / (t[tiles]["ms"] * 1e-3) / 1e12
        rows.append({"key_tiles": tiles, **t[tiles], "tflops": tf,
                     "peak_fraction": peak_fraction(tf, t[tiles]["sm_clock_mhz"])})
        clock, peak = rows[-1]["sm_clock_mhz"], rows[-1]["peak_fraction"]
        shown = f"{100 * peak:.1f} % of peak at {clock:.0f} MHz" if peak else "no clock"
        print(f"{tiles:4d} key tiles per unit: {t[tiles]['ms']:.3f} ms {tf:6.1f} TF/s ({shown})")
    r = (rows[-1]["peak_fraction"] / rows[0]["peak_fraction"]
         if rows[0]["peak_fraction"] and rows[-1]["peak_fraction"] else None)
    c = 128 * (r - 1) / (16 - r) if r else None  # r = 16 (8 + c) / (128 + c)
    if c is not None:
        print(f"fixed cost per unit c = {c:.2f} key-tile times")
    path = write_result("unit_overhead", {"heads_q": Hq, "heads_kv": Hkv, "head_dim": D,
                                          "units": rows, "fixed_cost_key_tiles": c})
    print(f"wrote {path}")
    return 0
