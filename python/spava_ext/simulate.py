"""Single-GPU rank simulator: the exact per-rank work of a W-rank Spava layer, one rank at a time.

For every rank it times the whole ``spava_attention_rank`` (received passing blocks synthesised by
:class:`SimulatedComm`) and each of its steps, counts the bytes the rank sends per layer, and
replays the schedule with a link bandwidth to predict how much communication the overlap hides:

    t=0      select                      -> gathers #1 (P_r) and #2 (P_(2W-1-r)) start, in order
             one attn_fwd_group launch, problems in arrival order:
               question partial          -> its gather starts when its done flag is raised
               host 1 (rows [anchor|C_r]) tiles start when #1 has landed (rank 0: at once)
               host 2 (rows C_(2W-1-r))   tiles start when #2 has landed
             merge                        starts when the question gather has landed
The launch's duration is measured; its three parts are the separately measured problem times
scaled to it.

Baselines on the same GPU and kernels: dense causal SDPA (cuDNN, flash) on the full sequence;
ZigZag ring attention's per-rank work (2W chunks, rank r holds r and 2W-1-r, full causal
attention, no selection), APB-style per-rank work (W chunks without zigzag, passing 2p) and
Star-style per-rank work (W blocks, block 0 as every host's anchor), all computed with the same
``attn_fwd``, communication excluded.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Optional

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from . import ops
from .agreement import layer_config
from .attention import (ORDER_IN_FLIGHT, KeySegments, host1_keys, host2_keys, question_keys,
                        spava_attention_rank, standalone_problems)
from .comm import SimulatedComm
from .layout import SpavaLayout, balanced_split
from .timing import gpu_time

__all__ = ["SimConfig", "simulate", "format_report"]


@dataclass
class SimConfig:
    context: int = 131072  # n: context tokens, anchor included
    question: int = 64
    world: int = 8
    heads_q: int = 28
    heads_kv: int = 4
    head_dim: int = 128
    anchor: Optional[int] = None  # default: the paper's
    passing: Optional[int] = None  # default: the paper's
    bandwidths_gbs: list = field(default_factory=lambda: [450.0, 50.0])  # per direction
    repeats: int = 10
    dense: bool = True  # time dense SDPA baselines (slow at long lengths)


def _layout(cfg: SimConfig) -> SpavaLayout:
    auto = SpavaLayout.auto(cfg.context + cfg.question, cfg.question, cfg.world)
    return SpavaLayout(auto.seq_len, auto.anchor_len if cfg.anchor is None else cfg.anchor,
                       cfg.question, cfg.world,
                       auto.passing_len if cfg.passing is None else cfg.passing)


def _rand(shape, g, dtype=torch.bfloat16):
    return torch.randn(shape, device="cuda", dtype=dtype, generator=g)


def _attn_ms(q_rows, keys: KeySegments, repeats: int) -> float:
    out = torch.empty_like(q_rows)
    return gpu_time(lambda: ops.attn_fwd(q_rows, keys.k, keys.v, keys.row_begin, keys.diag,
                                         out=out), warmup=2, repeats=repeats)["ms"]


def _group_ms(q, k, v, layout: SpavaLayout, rank: int, recv, cfg: SimConfig) -> float:
    """The rank's one attn_fwd_group launch (question partial and both hosts; the order of a
    run in flight, as on real GPUs)."""
    problems = standalone_problems(q, k, v, layout, rank, recv, recv, ORDER_IN_FLIGHT)
    sched = torch.zeros(ops.SCHED_INTS, dtype=torch.int32, device="cuda")

    def run():
        sched.zero_()
        ops.attn_fwd_group(problems, sched=sched)
    return gpu_time(run, warmup=2, repeats=cfg.repeats)["ms"]


def _timeline(t: dict, comm: dict, rank: int) -> float:
    """Predicted layer time of one rank with communication (see the module docstring)."""
    scale = t["attention"] / max(1e-9, t["question"] + t["host1"] + t["host2"])
    g1 = t["select"] + comm["passing1"]
    g2 = g1 + comm["passing2"]
    q_done = t["select"] + t["question"] * scale
    gq = max(q_done, g2) + comm["question"]  # after the passing gathers (same comm stream)
    h1 = (q_done if rank == 0 else max(q_done, g1)) + t["host1"] * scale
    h2 = max(h1, g2) + t["host2"] * scale
    return max(h2, gq) + t["merge"]


def _rank(layout: SpavaLayout, cfg: SimConfig, rank: int) -> dict:
    g = torch.Generator(device="cuda").manual_seed(rank)
    n, Hq, Hkv, D = layout.local_len(rank), cfg.heads_q, cfg.heads_kv, cfg.head_dim
    q, k, v = _rand((1, n, Hq, D), g), _rand((1, n, Hkv, D), g), _rand((1, n, Hkv, D), g)
    comm = SimulatedComm(rank, cfg.world)
    run = lambda: spava_attention_rank(q, k, v, layout, comm)  # noqa: E731
    layer = gpu_time(run, warmup=3, repeats=cfg.repeats, pipelined=4)["ms"]  # host ahead
    layer_sync = gpu_time(run, warmup=1, repeats=cfg.repeats)["ms"]  # one call, host included
    s = layout.local_segments(rank)
    cap = layout.passing_cap
    recv = _rand((cfg.world, cap, 2, 1, Hkv, D), g)
    qq = q[:, s.question_start:]
    p = layout.passing_len or cap
    steps = {
        "select": gpu_time(lambda: ops.select_passing(
            qq, k, v, [s.chunk1_start, s.chunk2_start], [s.chunk1, s.chunk2], p,
            layout.pool_kernel, capacity=cap), warmup=2, repeats=cfg.repeats)["ms"],
        "question": _attn_ms(qq, question_keys(k, v, layout, rank), cfg.repeats),
        "host1": _attn_ms(q[:, : s.chunk2_start], host1_keys(k, v, layout, rank, recv),
                          cfg.repeats),
        "host2": _attn_ms(q[:, s.chunk2_start: s.question_start],
                          host2_keys(k, v, layout, rank, recv, recv), cfg.repeats),
        "attention": _group_ms(q, k, v, layout, rank, recv, cfg),
    }
    outs = torch.randn(cfg.world, 1, cfg.question, Hq, D, device="cuda")
    lses = torch.randn(cfg.world, 1, Hq, cfg.question, device="cuda")
    dst = torch.empty(1, cfg.question, Hq, D, device="cuda", dtype=torch.bfloat16)
    steps["merge"] = gpu_time(lambda: ops.merge_states(outs, lses, out=dst), warmup=2,
                              repeats=cfg.repeats)["ms"]
    # bytes this rank sends per layer (all-gather: its part goes to W - 1 peers)
    block = cap * 2 * Hkv * D * 2  # one passing block, K and V, bf16
    partial = (cfg.question * Hq * D + Hq * cfg.question) * 4
    sent = {"passing1": (cfg.world - 1) * block, "passing2": (cfg.world - 1) * block,
            "question": (cfg.world - 1) * partial}
    links = {}
    for bw in cfg.bandwidths_gbs:
        comm_ms = {key: b / (bw * 1e9) * 1e3 for key, b in sent.items()}
        total = _timeline(steps, comm_ms, rank)
        compute = steps["select"] + steps["attention"] + steps["merge"]
        comm_total = sum(comm_ms.values())
        hidden = 1.0 if comm_total == 0 else 1 - max(0.0, total - compute) / comm_total
        links[f"{bw:g}"] = {"comm_ms": comm_total, "predicted_layer_ms": total,
                            "hidden_fraction": hidden}
    return {"rank": rank, "layer_ms": layer, "layer_sync_ms": layer_sync, "steps_ms": steps,
            "bytes_sent": sum(sent.values()),
            "links": links}


def _zigzag_ring(cfg: SimConfig, L: int) -> list[float]:
    """Per-rank attention of ZigZag ring attention on L tokens (compute only, same kernel)."""
    g = torch.Generator(device="cuda").manual_seed(99)
    k, v = _rand((1, L, cfg.heads_kv, cfg.head_dim), g), _rand((1, L, cfg.heads_kv, cfg.head_dim), g)
    sizes = balanced_split(L, 2 * cfg.world)
    starts = [sum(sizes[:i]) for i in range(2 * cfg.world)]
    times = []
    for r in range(cfg.world):
        ms = 0.0
        for c in (r, 2 * cfg.world - 1 - r):
            s0, n = starts[c], sizes[c]
            q = _rand((1, n, cfg.heads_q, cfg.head_dim), g)
            keys = KeySegments().add(k[:, :s0], v[:, :s0]).add(k[:, s0: s0 + n],
                                                               v[:, s0: s0 + n], diag=0)
            ms += _attn_ms(q, keys, cfg.repeats)
        times.append(ms)
    return times


def _apb(cfg: SimConfig, layout: SpavaLayout) -> list[float]:
    """Per-rank attention of APB-style Spava without zigzag: W chunks, passing blocks of 2p."""
    g = torch.Generator(device="cuda").manual_seed(98)
    Hq, Hkv, D, W = cfg.heads_q, cfg.heads_kv, cfg.head_dim, cfg.world
    a, p2 = layout.anchor_len, 2 * (layout.passing_len or layout.passing_cap)
    sizes = balanced_split(layout.context_len, W)
    times = []
    for r in range(W):
        c = sizes[r]
        q = _rand((1, a + c, Hq, D), g)
        k, v = _rand((1, a + c, Hkv, D), g), _rand((1, a + c, Hkv, D), g)
        keys = KeySegments()
        if r:
            pk, pv = _rand((1, r * min(p2, c), Hkv, D), g), _rand((1, r * min(p2, c), Hkv, D), g)
            keys.add(pk, pv, row_begin=a)
        keys.add(k[:, :a], v[:, :a], diag=0).add(k[:, a:], v[:, a:], diag=-a)
        qq = _rand((1, cfg.question, Hq, D), g)  # question partial over the rank's keys
        qkeys = KeySegments().add(k[:, (a * r) // W: (a * (r + 1)) // W],
                                  v[:, (a * r) // W: (a * (r + 1)) // W]).add(k[:, a:], v[:, a:])
        times.append(_attn_ms(q, keys, cfg.repeats) + _attn_ms(qq, qkeys, cfg.repeats))
    return times


def _star(cfg: SimConfig, layout: SpavaLayout) -> list[float]:
    """Per-rank attention of Star Attention: the context (everything before the question) in W
    blocks, block 0 is the anchor that every other host prepends; plus the question partial
    over the host's block (phase 2). Same kernel, communication excluded."""
    g = torch.Generator(device="cuda").manual_seed(97)
    Hq, Hkv, D, W = cfg.heads_q, cfg.heads_kv, cfg.head_dim, cfg.world
    sizes = balanced_split(layout.seq_len - layout.query_len, W)
    times = []
    for r in range(W):
        c, c0 = sizes[r], sizes[0]
        q = _rand((1, c, Hq, D), g)
        k, v = _rand((1, c, Hkv, D), g), _rand((1, c, Hkv, D), g)
        keys = KeySegments()
        if r:
            keys.add(_rand((1, c0, Hkv, D), g), _rand((1, c0, Hkv, D), g))  # the anchor block
        keys.add(k, v, diag=0)
        qq = _rand((1, cfg.question, Hq, D), g)
        times.append(_attn_ms(q, keys, cfg.repeats)
                     + _attn_ms(qq, KeySegments().add(k, v), cfg.repeats))
    return times


def _dense(cfg: SimConfig, L: int) -> dict:
    q = torch.randn(1, cfg.heads_q, L, cfg.head_dim, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(1, cfg.heads_kv, L, cfg.head_dim, device="cuda", dtype=torch.bfloat16)
    v = torch.randn_like(k)
    out = {}
    for name, backend in (("cudnn", SDPBackend.CUDNN_ATTENTION),
                          ("flash", SDPBackend.FLASH_ATTENTION)):
        with sdpa_kernel(backend):
            out[name] = gpu_time(lambda: F.scaled_dot_product_attention(
                q, k, v, is_causal=True, enable_gqa=True), warmup=1, repeats=3)["ms"]
    return out


def _agreement_us(layout: SpavaLayout, cfg: SimConfig, repeats: int = 20000) -> float:
    """Host microseconds of the rank-agreement check per call in the steady state: the call's
    configuration is built and found among those the group already agreed on
    (``GroupComm.ensure_agreement``; the one exchange per new configuration is not included)."""
    n = layout.local_len(0)
    q = torch.empty(1, n, cfg.heads_q, cfg.head_dim, device="cuda", dtype=torch.bfloat16)
    k = torch.empty(1, n, cfg.heads_kv, cfg.head_dim, device="cuda", dtype=torch.bfloat16)
    agreed = {layer_config(layout, q, k, None)}
    t0 = time.perf_counter()
    for _ in range(repeats):
        assert layer_config(layout, q, k, None) in agreed
    return (time.perf_counter() - t0) / repeats * 1e6


def simulate(cfg: SimConfig) -> dict:
    """Run the simulation on the current CUDA device; returns a JSON-ready dict."""
    if not torch.cuda.is_available():
        raise RuntimeError("spava bench --simulate-world-size needs a CUDA GPU")
    layout = _layout(cfg)
    ranks = [_rank(layout, cfg, r) for r in range(cfg.world)]
    crit = max(ranks, key=lambda x: x["layer_ms"])
    result = {"config": asdict(cfg), "layout": repr(layout), "ranks": ranks,
              "critical_path_ms": crit["layer_ms"], "critical_rank": crit["rank"],
              "zigzag_ring_ms": _zigzag_ring(cfg, layout.seq_len), "apb_ms": _apb(cfg, layout),
              "star_ms": _star(cfg, layout)}
    result["zigzag_ring_critical_ms"] = max(result["zigzag_ring_ms"])
    result["apb_critical_ms"] = max(result["apb_ms"])
    result["star_critical_ms"] = max(result["star_ms"])
    result["agreement_check_us"] = _agreement_us(layout, cfg)
    if cfg.dense:
        result["dense_ms"] = _dense(cfg, layout.seq_len)
    return result


def format_report(res: dict) -> str:
    cfg = res["config"]
    lines = [res["layout"],
             f"{'rank':>4} {'layer ms':>9} {'1 call':>7} {'select':>7} {'launch':>7} "
             f"{'(question':>9} {'host1':>7} {'host2)':>7} {'merge':>6} {'MB sent':>8}  "
             "predicted ms @GB/s (hidden)"]
    for r in res["ranks"]:
        s = r["steps_ms"]
        links = "  ".join(f"{v['predicted_layer_ms']:.3f} @{bw} ({100 * v['hidden_fraction']:.0f}%)"
                          for bw, v in r["links"].items())
        lines.append(f"{r['rank']:>4} {r['layer_ms']:>9.3f} {r['layer_sync_ms']:>7.3f} "
                     f"{s['select']:>7.3f} {s['attention']:>7.3f} "
                     f"{s['question']:>9.3f} {s['host1']:>7.3f} {s['host2']:>7.3f} "
                     f"{s['merge']:>6.3f} {r['bytes_sent'] / 1e6:>8.1f}  {links}")
    crit = res["critical_path_ms"]
    lines.append(f"critical path (max over ranks): {crit:.3f} ms (rank {res['critical_rank']})")
    zz, apb = res["zigzag_ring_critical_ms"], res["apb_critical_ms"]
    lines.append(f"ZigZag ring per-rank attention (same kernel): {zz:.3f} ms -> spava "
                 f"{zz / crit:.2f}x faster")
    lines.append(f"APB-style per-rank attention (same kernel): {apb:.3f} ms -> spava "
                 f"{apb / crit:.2f}x faster")
    star = res["star_critical_ms"]
    lines.append(f"Star-style per-rank attention (same kernel): {star:.3f} ms -> spava "
                 f"{star / crit:.2f}x faster")
    if "agreement_check_us" in res:
        us = res["agreement_check_us"]
        lines.append(f"rank-agreement check (steady state, host): {us:.2f} us per call = "
                     f"{100 * us / (1000 * crit):.3f} % of the critical path")
    for name, ms in res.get("dense_ms", {}).items():
        lines.append(f"dense causal SDPA ({name}) on {cfg['context'] + cfg['question']} tokens: "
                     f"{ms:.1f} ms -> spava critical path {ms / crit:.1f}x faster")
    return "\n".join(lines)
