"""benchmarks/select_trace.py's analysis on a synthetic trace (CPU): the event times, SM counts,
kernel-3 phase cycles and call span it reports are those built into the trace."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import select_trace as st

T0 = 1_700_000_000_000_000_000  # a %globaltimer reading (ns)


def synthetic_trace() -> torch.Tensor:
    """4 qsum CTAs (start 0..3 ns apart, end at 2 us), 8 score CTAs ending at 9 us + 10 ns * c,
    6 gather CTAs on 3 SMs whose clock64 phases are fixed cycle counts (ending at 15 us)."""
    t = torch.zeros(st.ROWS, st.EVENTS, dtype=torch.int64)
    for c in range(4):
        r = st.KERNELS["qsum"][0] + c
        t[r, 0], t[r, 1], t[r, st.SM] = T0 + c, T0 + 2000, c
    for c in range(8):
        r = st.KERNELS["score"][0] + c
        t[r, :5] = torch.tensor([500, 6000, 7000, 8000, 9000 + 10 * c]) + T0
        t[r, st.SM] = c
    cycles = {0: 0, 1: 100, 2: 1100, 8: 2000, 10: 3500, 11: 4500, 3: 6000, 12: 6300, 13: 6500,
              14: 7000, 6: 7100, 4: 8000, 5: 10000}
    for c in range(6):
        r = st.KERNELS["gather"][0] + c
        for e, cyc in cycles.items():
            t[r, st.CLOCK + e] = 10_000_000 + 1000 * c + cyc
        t[r, :6] = torch.tensor([9500, 10000, 11000, 12000, 13000, 15000]) + T0
        t[r, st.SM] = c % 3
    return t


def test_analyse_synthetic_trace():
    res = st.analyse(synthetic_trace())
    q, s, g = (res["kernels"][k] for k in ("qsum", "score", "gather"))
    assert (q["ctas"], q["sms"], s["ctas"], s["sms"], g["ctas"], g["sms"]) == (4, 4, 8, 8, 6, 3)
    assert q["end"] == (2.0, 2.0, 2.0)
    assert s["pdl_wait"] == (6.0, 6.0, 6.0)
    assert s["end"][0] == 9.0 and s["end"][2] == pytest.approx(9.07)
    assert g["threshold"] == (12.0, 12.0, 12.0)
    assert res["span_us"] == 15.0
    cyc = res["gather_cycles"]
    assert cyc["wait->cache"] == 1000 and cyc["threshold"] == 4900 and cyc["kept"] == 2000
    assert cyc["gather"] == 2000 and cyc["pick digit 1"] == 900 and cyc["count digit 2"] == 1500
    assert cyc["pick digit 2"] == 1000 and cyc["rank / digit 3"] == 1500
    assert (cyc["kept: load"], cyc["kept: count"], cyc["kept: scan"]) == (300, 200, 500)
    assert (cyc["kept: write"], cyc["kept: barrier"]) == (100, 900)
    assert "kernel 3, median cycles" in st.report(res)
