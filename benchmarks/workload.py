"""The per-rank workload the kernel benchmarks time (and benchmarks/attn_trace.py and
select_trace.py trace, through bench_kernels): one rank's local q, k, v with received passing
blocks synthesised, its three attn_fwd calls, and the baselines run on the same problem
(dense causal SDPA where a call is plain causal attention, FlexAttention with the same mask).
TFLOP/s count allowed (unmasked) query-key pairs only: 4 * pairs * D * Hq."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from bench_utils import peak_fraction
from spava_ext import SpavaLayout
from spava_ext.attention import (ORDER_LOCAL, host1_keys, host2_keys, question_keys,
                                 standalone_problems)

HEADS = {"qwen2.5-vl-7b": (28, 4, 128), "qwen2.5-vl-7b-d64": (28, 4, 64),
         "qwen2.5-vl-7b-d80": (28, 4, 80), "qwen2.5-vl-3b": (16, 2, 128)}


def tflops(pairs: int, D: int, Hq: int, ms: float) -> float:
    return 4 * pairs * D * Hq / (ms * 1e-3) / 1e12


def with_rate(stats: dict, pairs: int, D: int, Hq: int) -> dict:
    """A contender's timing with its TF/s, its fraction of peak at the clock it ran at, and
    (sustained timings where NVML has the energy counter) its TFLOP per joule."""
    tf = tflops(pairs, D, Hq, stats["ms"])
    out = {**stats, "tflops": tf, "peak_fraction": peak_fraction(tf, stats.get("sm_clock_mhz"))}
    if stats.get("joules_per_call"):
        out["tflop_per_joule"] = 4 * pairs * D * Hq / stats["joules_per_call"] / 1e12
    return out


def rank_tensors(layout: SpavaLayout, rank: int, Hq: int, Hkv: int, D: int, dtype, seed=0):
    """Random local q, k, v of ``rank`` and synthesised receive buffers (B = 1)."""
    g = torch.Generator(device="cuda").manual_seed(seed + rank)
    n = layout.local_len(rank)
    q = torch.randn(1, n, Hq, D, device="cuda", dtype=dtype, generator=g)
    k = torch.randn(1, n, Hkv, D, device="cuda", dtype=dtype, generator=g)
    v = torch.randn(1, n, Hkv, D, device="cuda", dtype=dtype, generator=g)
    shape = (layout.world_size, layout.passing_cap, 2, 1, Hkv, D)
    recv1 = torch.randn(shape, device="cuda", dtype=dtype, generator=g)
    recv2 = torch.randn(shape, device="cuda", dtype=dtype, generator=g)
    return q, k, v, recv1, recv2


def attn_calls(layout: SpavaLayout, rank: int, q, k, v, recv1, recv2):
    """The three attn_fwd calls of the rank: (name, query rows, KeySegments)."""
    s = layout.local_segments(rank)
    return [("host1", q[:, : s.anchor + s.chunk1], host1_keys(k, v, layout, rank, recv1)),
            ("host2", q[:, s.chunk2_start: s.question_start],
             host2_keys(k, v, layout, rank, recv1, recv2)),
            ("question", q[:, s.question_start:], question_keys(k, v, layout, rank))]


def dense_equivalent(qr, keys):
    """``(k, v)`` [B, L, Hkv, D] when the call is plain causal attention of its L rows over
    their own prefix (row i sees key j iff j <= i over the segments read end to end, each
    segment a view that continues the previous one in memory, as rank 0's [anchor | C_0] call
    is), else None: such a call can be timed against dense causal SDPA on the very same
    tensors."""
    if any(rb != 0 for rb in keys.row_begin):
        return None
    start = 0
    for i, (kk, d) in enumerate(zip(keys.k, keys.diag)):
        if d != -start:
            return None
        for t in (keys.k, keys.v):
            if i and t[i].data_ptr() != t[i - 1].data_ptr() + t[i - 1].shape[1] * \
                    t[i - 1].stride(1) * t[i - 1].element_size():
                return None
        start += kk.shape[1]
    if start != qr.shape[1]:
        return None
    return tuple(t[0].as_strided((t[0].shape[0], start, *t[0].shape[2:]), t[0].stride())
                 for t in (keys.k, keys.v))


def sdpa_fns(qr, k, v) -> dict:
    """Dense causal SDPA over q rows / k / v [B, L, H, D] (transposed views): ``{"cudnn": fn,
    "flash": fn}`` for the backends that accept the shape (each run once here)."""
    qt, kt, vt = (x.transpose(1, 2) for x in (qr, k, v))
    fns = {}
    for name, backend in (("cudnn", SDPBackend.CUDNN_ATTENTION),
                          ("flash", SDPBackend.FLASH_ATTENTION)):
        def run(backend=backend):
            with sdpa_kernel(backend):
                return F.scaled_dot_product_attention(qt, kt, vt, is_causal=True, enable_gqa=True)
        try:
            run()
        except RuntimeError:  # a backend that refuses the shape is left out
            continue
        fns[name] = run
    return fns


def flex_runner(qr, keys, scale):
    """FlexAttention over the concatenated segments with the same visibility rule."""
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    kk = torch.cat(keys.k, dim=1).transpose(1, 2).contiguous()
    vv = torch.cat(keys.v, dim=1).transpose(1, 2).contiguous()
    qq = qr.transpose(1, 2).contiguous()
    lens = [t.shape[1] for t in keys.k]
    start = torch.repeat_interleave(
        torch.tensor([sum(lens[:i]) for i in range(len(lens))]), torch.tensor(lens)).cuda()
    rb = torch.repeat_interleave(torch.tensor(keys.row_begin), torch.tensor(lens)).cuda()
    dg = torch.repeat_interleave(torch.tensor([min(d, 2**30) for d in keys.diag]),
                                 torch.tensor(lens)).cuda()

    def mask_mod(b, h, q_idx, kv_idx):
        return (q_idx >= rb[kv_idx]) & (kv_idx - start[kv_idx] <= q_idx + dg[kv_idx])

    block_mask = create_block_mask(mask_mod, None, None, qq.shape[2], kk.shape[2], device="cuda")
    compiled = torch.compile(flex_attention, dynamic=False)
    return lambda: compiled(qq, kk, vv, block_mask=block_mask, scale=scale, enable_gqa=True)


def rank_launch(layout, rank, q, k, v, recv1, recv2) -> tuple[list, int]:
    """The rank's three problems as its one attn_fwd_group launch takes them (flags not needed:
    the receive buffers are synthesised), and their allowed pairs."""
    pairs = sum(keys.pairs(qr.shape[1])
                for _, qr, keys in attn_calls(layout, rank, q, k, v, recv1, recv2))
    return standalone_problems(q, k, v, layout, rank, recv1, recv2, ORDER_LOCAL), pairs
