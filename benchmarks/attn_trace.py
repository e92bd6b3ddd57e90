"""Cycle-level phases of attn_fwd's units from its clock64 trace (CUDA; a build with the trace).

The trace (csrc/kernels/common/trace.cuh) is compiled in only when the extension is built with
SPAVA_ATTN_TRACE=1; thread 0 of each warpgroup of CTAs 0-7 stamps the phases of the CTA's first
64 units. Cycles are SM clocks, so comparisons hold whatever clock the power cap sets (NVML's
clock reading does not show the effective clock there: attn_fwd NOTES, session 6).

    SPAVA_ATTN_TRACE=1 bash scripts/gpu_check.sh build       # on the GPU box
    python3 benchmarks/attn_trace.py units 8 32 128    # full attention, 7B heads, equal FLOPs
    python3 benchmarks/attn_trace.py epilogue 8        # the epilogue's steps
    python3 benchmarks/attn_trace.py causal --heads 16 # the r0 host1 shape: cycles per key tile
    python3 benchmarks/attn_trace.py ctas              # bench_kernels' calls: every CTA's span

`ctas` reads the per-CTA spans (every CTA of the launch): the kernel's makespan by %globaltimer,
how far the CTAs' ends spread (the schedule's tail), the effective SM clock (clock64 cycles over
nanoseconds: under the power cap NVML's reading is not it) and the TF/s inside the kernel.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "python"))
from spava_ext import SpavaLayout, ops
from spava_ext.trace import trace_to

CTAS, UNITS, SLOTS, EVENTS = 8, 64, 4, 16  # common/trace.cuh: kTraceCtas, kTraceUnits, ...
SPAN_CTAS, SPAN_FIELDS = 1024, 16  # common/trace.cuh: kSpanCtas, kSpanFields
CLOCK0, TIME0, SM, CLOCK_END, TIME_END, UNITS_DONE, TILES_DONE = 0, 1, 2, 3, 4, 9, 10  # SpanField
(Q_FULL, Q_IN_REGS, FIRST_TURN, FIRST_S, LOOP_END, LAST_PV, UNIT_END, TILES, EPI_BARRIER1,
 EPI_STSM, EPI_BARRIER2, EPI_TMA, EPI_LSE, EPI_END) = range(14)  # common/trace.cuh: TraceEvent


def traced(fn) -> torch.Tensor:
    """Runs fn (one attn_fwd launch) with the trace on: int64 [cta, unit, slot, event]."""
    return traced_all(fn)[0]


def traced_all(fn) -> tuple[torch.Tensor, torch.Tensor]:
    """Runs fn with the trace on: the stamps [cta, unit, slot, event] and the spans [cta,
    field] (int64; a CTA that did not run has zeros)."""
    for _ in range(5):  # warm
        fn()
    torch.cuda.synchronize()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "trace.bin")
        with trace_to(path):
            fn()
            torch.cuda.synchronize()
        raw = Path(path).read_bytes()
    words = torch.frombuffer(bytearray(raw), dtype=torch.int64)
    stamps = CTAS * UNITS * SLOTS * EVENTS
    return (words[:stamps].view(CTAS, UNITS, SLOTS, EVENTS),
            words[stamps:].view(SPAN_CTAS, SPAN_FIELDS))


def full_attention(tiles: int, heads=(28, 4), work: int = 1 << 27):
    """attn_fwd over lq x (tiles x 128) keys, full attention, lq x lk = work."""
    lk = tiles * 128
    q = torch.randn(1, work // lk, heads[0], 128, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(1, lk, heads[1], 128, device="cuda", dtype=torch.bfloat16)
    return lambda: ops.attn_fwd(q, [k], [k], [0], [ops.FULL])


def median_row(name: str, values: list, unit: float | None = None) -> None:
    values = sorted(values)
    med = statistics.median(values)
    tail = f"  ({med / unit:5.2f} key tiles)" if unit else ""
    print(f"  {name:40s} median {med:8.0f}  p10 {values[len(values) // 10]:8.0f}  "
          f"p90 {values[len(values) * 9 // 10]:8.0f}{tail}")


def consecutive_units(t: torch.Tensor):
    """(cta, unit) of every traced unit whose successor is traced too (the first two skipped)."""
    return [(c, u) for c in range(CTAS) for u in range(2, UNITS - 1)
            if t[c, u + 1, 1, Q_FULL] and t[c, u, 1, UNIT_END] and t[c, u, 2, UNIT_END]]


def report_units(tiles: int, t: torch.Tensor) -> None:
    pairs = consecutive_units(t)
    per_tile = statistics.median(
        [(t[c, u, 1, LOOP_END] - t[c, u, 1, FIRST_S]).item() / max(1, tiles - 1) for c, u in pairs])
    period = [(t[c, u + 1, 1, Q_FULL] - t[c, u, 1, Q_FULL]).item() for c, u in pairs]
    print(f"== {tiles} key tiles per unit: {len(pairs)} units, {per_tile:.0f} cycles per key tile")
    median_row("unit period", period, per_tile)
    phases = (("Q to registers", Q_FULL, Q_IN_REGS), ("first turn", Q_IN_REGS, FIRST_TURN),
              ("S_0", FIRST_TURN, FIRST_S), ("last P V", LOOP_END, LAST_PV),
              ("epilogue", LAST_PV, UNIT_END))
    for w in (1, 2):
        for name, a, b in phases:
            median_row(f"warpgroup {w - 1}: {name}", [(t[c, u, w, b] - t[c, u, w, a]).item()
                                                    for c, u in pairs], per_tile)
    boundary = statistics.median(period) - tiles * per_tile
    print(f"  boundary (period - tiles x cycles per tile): {boundary:.0f} cycles = "
          f"{boundary / per_tile:.2f} key tiles")


def report_epilogue(t: torch.Tensor) -> None:
    pairs = consecutive_units(t)
    steps = (("normalise", LAST_PV, EPI_LSE),
             ("lse, staging tile free, barrier", EPI_LSE, EPI_BARRIER1),
             ("convert, stmatrix, fence", EPI_BARRIER1, EPI_STSM),
             ("barrier", EPI_STSM, EPI_BARRIER2), ("TMA issue (thread 0)", EPI_BARRIER2, EPI_TMA),
             ("whole epilogue", LAST_PV, UNIT_END))
    for w in (1, 2):
        print(f"warpgroup {w - 1}:")
        for name, a, b in steps:
            median_row(name, [(t[c, u, w, b] - t[c, u, w, a]).item() for c, u in pairs])


def report_causal(t: torch.Tensor) -> None:
    for c in range(CTAS):
        units = [u for u in range(UNITS) if t[c, u, 1, UNIT_END]]
        tiles = sum(int(t[c, u, 1, TILES]) for u in units)
        span = (max(t[c, units[-1], 1, UNIT_END], t[c, units[-1], 2, UNIT_END])
                - t[c, units[0], 1, Q_FULL]).item()
        print(f"CTA {c}: {len(units)} units, {tiles} key tiles, {span} cycles, "
              f"{span / tiles:.0f} cycles per key tile")


def span_summary(sp: torch.Tensor, flop: float) -> dict:
    """One launch's spans -> makespan, tail, effective clock, key tiles per CTA, TF/s."""
    ran = sp[sp[:, TIME0] != 0]
    t0 = int(ran[:, TIME0].min())
    ends = [max(int(r[TIME_END + 2 * w]) for w in range(3)) - t0 for r in ran]
    busy = [max(int(r[TIME_END + 2 * w]) for w in range(3)) - int(r[TIME0]) for r in ran]
    ghz = [max(int(r[CLOCK_END + 2 * w]) for w in range(3)) - int(r[CLOCK0]) for r in ran]
    ghz = [c / b for c, b in zip(ghz, busy)]
    tiles = [int(r[TILES_DONE]) for r in ran]
    make = max(ends)
    return {"ctas": len(ran), "makespan_us": make / 1e3,
            "end_p10_us": sorted(ends)[len(ends) // 10] / 1e3,
            "end_median_us": statistics.median(ends) / 1e3,
            "busy_mean_over_makespan": statistics.mean(busy) / make,
            "clock_ghz": statistics.median(ghz), "tiles_min": min(tiles),
            "tiles_max": max(tiles), "tiles_mean": statistics.mean(tiles),
            "kernel_tflops": flop / (make * 1e-9) / 1e12}


def report_ctas(repeats: int) -> None:
    """bench_kernels' attn_fwd calls (ranks 0 and 7, 3B and 7B heads): per-CTA spans."""
    from bench_kernels import attn_calls, rank_tensors  # the benchmark's calls (needs CUDA)
    layout = SpavaLayout.auto(131072 + 64, 64, 8)
    for hq, hkv in ((16, 2), (28, 4)):
        for rank in (0, 7):
            q, k, v, recv1, recv2 = rank_tensors(layout, rank, hq, hkv, 128, torch.bfloat16)
            for name, qr, keys in attn_calls(layout, rank, q, k, v, recv1, recv2)[:2]:
                out = torch.empty_like(qr)
                lse = torch.empty(1, hq, qr.shape[1], device="cuda")
                flop = 4 * keys.pairs(qr.shape[1]) * 128 * hq
                def call(qr=qr, keys=keys, out=out, lse=lse):
                    ops.attn_fwd(qr, keys.k, keys.v, keys.row_begin, keys.diag, out=out, lse=lse)
                runs = [span_summary(traced_all(call)[1], flop) for _ in range(repeats)]
                s = sorted(runs, key=lambda r: r["makespan_us"])[len(runs) // 2]
                print(f"{hq}/{hkv} heads r{rank} {name}: {s['ctas']} CTAs, makespan "
                      f"{s['makespan_us']:.1f} us (CTA ends: p10 {s['end_p10_us']:.1f}, median "
                      f"{s['end_median_us']:.1f}; busy {s['busy_mean_over_makespan']:.1%}), "
                      f"clock {s['clock_ghz']:.3f} GHz, key tiles per CTA {s['tiles_min']}-"
                      f"{s['tiles_max']} (mean {s['tiles_mean']:.1f}), in-kernel "
                      f"{s['kernel_tflops']:.0f} TF/s = {s['kernel_tflops'] / s['clock_ghz']:.0f}"
                      f" TF/s per GHz")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["units", "epilogue", "causal", "ctas"])
    parser.add_argument("tiles", nargs="*", type=int, default=[8])
    parser.add_argument("--heads", type=int, default=16, help="causal: 16 (3B) or 28 (7B)")
    parser.add_argument("--repeats", type=int, default=5, help="ctas: launches per call")
    args = parser.parse_args()
    if not ops.build_info().get("attn_fwd_trace"):
        sys.exit("attn_trace: this build has no trace; rebuild with SPAVA_ATTN_TRACE=1")
    print(torch.cuda.get_device_name())
    if args.mode == "units":
        for tiles in args.tiles:
            report_units(tiles, traced(full_attention(tiles)))
    elif args.mode == "ctas":
        report_ctas(args.repeats)
    elif args.mode == "epilogue":
        report_epilogue(traced(full_attention(args.tiles[0])))
    else:  # rank 0's host1 call: anchor 2048 (causal) + chunk 8064 (causal, diag -2048)
        hkv = 4 if args.heads == 28 else 2
        q = torch.randn(1, 10112, args.heads, 128, device="cuda", dtype=torch.bfloat16)
        ka = torch.randn(1, 2048, hkv, 128, device="cuda", dtype=torch.bfloat16)
        kc = torch.randn(1, 8064, hkv, 128, device="cuda", dtype=torch.bfloat16)
        report_causal(traced(lambda: ops.attn_fwd(q, [ka, kc], [ka, kc], [0, 0], [0, -2048])))


if __name__ == "__main__":
    main()
