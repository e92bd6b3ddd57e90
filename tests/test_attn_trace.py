"""benchmarks/attn_trace.py's analysis on a synthetic clock64 trace (CPU): the phases, the unit
boundary and the per-CTA cycles per key tile it reports are those built into the trace."""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import attn_trace as at

TILES, PER_TILE, UNITS = 8, 3000, 20


def synthetic_trace() -> torch.Tensor:
    """Every traced unit: Q 300, first turn 500, S_0 700 cycles; TILES - 1 further steps of
    PER_TILE; last P V 800; epilogue 1450 (250 + 400 + 400 + 100 + 250 + 50); the next
    unit starts 30000 cycles after this one; warpgroup 1 runs 500 cycles behind."""
    t = torch.zeros(at.CTAS, at.UNITS, at.SLOTS, at.EVENTS, dtype=torch.int64)
    for c in range(at.CTAS):
        for u in range(UNITS):
            for w in (1, 2):
                e = t[c, u, w]
                e[at.Q_FULL] = 1000 + 30000 * u + 500 * (w - 1) + 7 * c
                e[at.Q_IN_REGS] = e[at.Q_FULL] + 300
                e[at.FIRST_TURN] = e[at.Q_IN_REGS] + 500
                e[at.FIRST_S] = e[at.FIRST_TURN] + 700
                e[at.LOOP_END] = e[at.FIRST_S] + (TILES - 1) * PER_TILE
                e[at.LAST_PV] = e[at.LOOP_END] + 800
                e[at.EPI_LSE] = e[at.LAST_PV] + 250
                e[at.EPI_BARRIER1] = e[at.EPI_LSE] + 400
                e[at.EPI_STSM] = e[at.EPI_BARRIER1] + 400
                e[at.EPI_BARRIER2] = e[at.EPI_STSM] + 100
                e[at.EPI_TMA] = e[at.EPI_BARRIER2] + 200
                e[at.EPI_END] = e[at.EPI_BARRIER2] + 250
                e[at.UNIT_END] = e[at.EPI_END] + 50
                e[at.TILES] = TILES
    return t


def test_units_report(capsys):
    at.report_units(TILES, synthetic_trace())
    out = capsys.readouterr().out
    assert f"{PER_TILE} cycles per key tile" in out
    boundary = 30000 - TILES * PER_TILE
    assert f"boundary (period - tiles x cycles per tile): {boundary} cycles" in out
    assert "warpgroup 1: epilogue" in out and "median     1450" in out


def test_epilogue_report(capsys):
    at.report_epilogue(synthetic_trace())
    out = capsys.readouterr().out.splitlines()
    lse = [line for line in out if line.strip().startswith("lse")]
    assert len(lse) == 2 and all("median      400" in line for line in lse)
    normalise = [line for line in out if line.strip().startswith("normalise")]
    assert len(normalise) == 2 and all("median      250" in line for line in normalise)


def test_causal_report(capsys):
    at.report_causal(synthetic_trace())
    out = capsys.readouterr().out.splitlines()
    assert len(out) == at.CTAS
    span = 30000 * (UNITS - 1) + 500 + 300 + 500 + 700 + (TILES - 1) * PER_TILE + 800 + 1450
    assert out[0] == (f"CTA 0: {UNITS} units, {UNITS * TILES} key tiles, {span} cycles, "
                      f"{span / (UNITS * TILES):.0f} cycles per key tile")


def test_span_summary():
    """4 CTAs start 0-300 ns apart, run 1.5 GHz, end at 10, 11, 12, 20 us: the makespan, the
    busy share, the clock and the in-kernel TF/s follow."""
    sp = torch.zeros(at.SPAN_CTAS, at.SPAN_FIELDS, dtype=torch.int64)
    starts, ends = [1000, 1100, 1200, 1300], [11000, 12000, 13000, 21000]
    for c, (t0, t1) in enumerate(zip(starts, ends)):
        sp[c, at.TIME0], sp[c, at.CLOCK0] = t0, 5_000_000
        for w in range(2):  # warpgroup 1 ends 100 ns earlier
            sp[c, at.TIME_END + 2 * w] = t1 - 100 * w
            sp[c, at.CLOCK_END + 2 * w] = 5_000_000 + int(1.5 * (t1 - 100 * w - t0))
        sp[c, at.TILES_DONE] = 10 + c
    s = at.span_summary(sp, flop=2e15 * 20e-6)  # 2 PF/s over the 20 us makespan
    assert s["ctas"] == 4 and s["makespan_us"] == 20.0
    assert s["end_median_us"] == 11.5  # ends 10, 11, 12, 20 us after the first start
    busy = sum(t1 - t0 for t0, t1 in zip(starts, ends)) / 4 / 20000
    assert abs(s["busy_mean_over_makespan"] - busy) < 1e-12
    assert abs(s["clock_ghz"] - 1.5) < 1e-3
    assert (s["tiles_min"], s["tiles_max"], s["tiles_mean"]) == (10, 13, 11.5)
    assert abs(s["kernel_tflops"] - 2000) < 1e-6
