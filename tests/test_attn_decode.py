"""attn_fwd's decode kernel (csrc/kernels/attn_decode: at most 16 query rows per kv head,
q_len * Hq / Hkv) against spava_ext.reference on irregular cases, against the prefill kernel
(attn_fwd_group never takes the decode kernel), and replayed from a CUDA graph."""

from __future__ import annotations

import random
from typing import NamedTuple, Optional

import pytest
import torch

from spava_ext import envs, ops, reference
from spava_ext.graphs import capture
from utils import assert_attn_close, assert_lse_close


@pytest.fixture(autouse=True)
def decode_kernel():
    """The decode kernel on for each test (SPAVA_ATTN_DECODE's default is off), the
    environment's setting again after it."""
    ops.set_attn_decode(True)
    yield
    ops.set_attn_decode(envs.attn_decode())

FULL = ops.FULL
MAX_ROWS = 16  # decode::kMaxRows (csrc/kernels/attn_decode/config.h)
SEG_LENS = [1, 17, 1000, 20011]
GROUPS = [1, 2, 4, 7, 8]
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class Case(NamedTuple):
    B: int
    q_len: int
    Hq: int
    Hkv: int
    D: int
    dtype: str
    segs: list  # [(len, row_begin, diag)]
    out_fp32: bool = False
    with_lse: bool = True
    scale: Optional[float] = None


# Cases named after the edge they cover.
NAMED = {
    "qwen7b_rank_partial": Case(1, 1, 28, 4, 128, "bf16", [(16411, 0, FULL)]),
    "rank0_eager_step": Case(1, 1, 28, 4, 128, "bf16", [(1000, 0, FULL), (1, 0, 0)]),
    "max_rows_g8_q2": Case(2, 2, 32, 4, 128, "fp16", [(1000, 0, FULL), (17, 0, FULL), (2, 0, 0)],
                           out_fp32=True),
    "three_new_tokens": Case(1, 3, 16, 4, 64, "bf16", [(20011, 0, FULL), (3, 0, 0)],
                             with_lse=False),
    "row_sees_nothing": Case(2, 2, 8, 4, 64, "fp16", [(17, 1, FULL), (1000, 0, -1)]),
    "no_row_sees_a_key": Case(1, 1, 7, 1, 80, "bf16", [(17, 1, FULL), (20011, 0, -1)]),
    "diag_cuts_a_tile": Case(2, 2, 14, 2, 80, "fp16", [(1000, 0, -517), (17, 1, 5)],
                             scale=0.3),
    "one_key": Case(1, 1, 4, 4, 128, "bf16", [(1, 0, FULL)]),
    "mqa_many_splits": Case(1, 1, 8, 1, 64, "fp16", [(20011, 0, FULL)], out_fp32=True),
}


def random_cases(count: int, seed: int = 0) -> dict[str, Case]:
    """Irregular cases on the decode path (q_len * G <= MAX_ROWS), cycling through every group
    size, head dim and dtype: 1-4 segments of SEG_LENS lengths, each full, causal from its first
    key, hidden from the first row, or cut near its middle (for 1 key: hidden from row 0)."""
    rng = random.Random(seed)
    cases = {}
    for i in range(count):
        G = GROUPS[i % len(GROUPS)]
        q_len = rng.choice([n for n in (1, 2, 3) if n * G <= MAX_ROWS])
        Hkv = rng.choice([1, 2, 3])
        segs = []
        for n in rng.sample(SEG_LENS, rng.randint(1, 4)):
            segs.append(rng.choice([(n, 0, FULL), (n, 0, 0), (n, 1, FULL),
                                    (n, -2, n // 2 - 1)]))
        cases[f"random{i}"] = Case(
            B=rng.choice([1, 2]), q_len=q_len, Hq=G * Hkv, Hkv=Hkv, D=(64, 80, 128)[i % 3],
            dtype=("bf16", "fp16")[(i // 3) % 2], segs=segs, out_fp32=rng.random() < 0.5,
            with_lse=rng.random() < 0.7, scale=rng.choice([None, 0.07]))
    return cases


CASES = {**NAMED, **random_cases(20)}


def test_cases_take_the_decode_path_and_cover_the_grid():
    """Every case has at most MAX_ROWS rows per kv head; the random ones cover every group size,
    head dim and dtype, and some row sees no key in some case."""
    for name, c in CASES.items():
        assert c.Hq % c.Hkv == 0 and c.q_len * c.Hq // c.Hkv <= MAX_ROWS, name
    rnd = [c for n, c in CASES.items() if n.startswith("random")]
    assert {c.Hq // c.Hkv for c in rnd} == set(GROUPS)
    assert {(c.D, c.dtype) for c in rnd} == {(d, t) for d in (64, 80, 128) for t in DTYPES}
    mask = reference.segment_mask(1, [n for n, _, _ in NAMED["no_row_sees_a_key"].segs],
                                  [r for _, r, _ in NAMED["no_row_sees_a_key"].segs],
                                  [d for _, _, d in NAMED["no_row_sees_a_key"].segs])
    assert not mask.any()


def make_inputs(c: Case, seed: int = 0):
    """q as a row slice of a bigger tensor; each segment's k / v as slices of one
    [B, n, 2, Hkv, D] buffer (as the passing buffers), the buffer's rows shared by the segments;
    out (and lse) as strided views inside larger tensors filled with 7."""
    g = torch.Generator().manual_seed(seed)
    dtype = DTYPES[c.dtype]
    q = torch.randn(c.B, c.q_len + 3, c.Hq, c.D, generator=g)[:, 1: 1 + c.q_len]
    q = q.to("cuda", dtype)
    total = sum(n for n, _, _ in c.segs)
    kv = torch.randn(c.B, total + 5, 2, c.Hkv, c.D, generator=g).to("cuda", dtype)
    ks, vs, start = [], [], 3
    for n, _, _ in c.segs:
        ks.append(kv[:, start: start + n, 0])
        vs.append(kv[:, start: start + n, 1])
        start += n
    out_dtype = torch.float32 if c.out_fp32 else dtype
    out_big = torch.full((c.B, c.q_len + 2, c.Hq + 1, c.D), 7.0, device="cuda", dtype=out_dtype)
    lse_big = torch.full((c.B, c.Hq, c.q_len + 3), 7.0, device="cuda")
    out = out_big[:, 1: 1 + c.q_len, : c.Hq]
    lse = lse_big[:, :, 2: 2 + c.q_len] if c.with_lse else None
    return q, ks, vs, out, lse, out_big, lse_big


def segment_args(c: Case):
    return [r for _, r, _ in c.segs], [d for _, _, d in c.segs]


def skip_unless_compiled(c: Case) -> None:
    if "attn_fwd" not in ops.build_info()["cuda_ops"]:
        pytest.skip("spava::attn_fwd has no CUDA kernel in this build")
    if c.D not in ops.build_info()["attn_fwd_head_dims"]:
        pytest.skip(f"head dim {c.D} not compiled")


@pytest.mark.cuda
@pytest.mark.parametrize("name", list(CASES))
def test_decode_matches_reference(name):
    c = CASES[name]
    skip_unless_compiled(c)
    q, ks, vs, out, lse, out_big, lse_big = make_inputs(c, seed=len(name))
    rb, dg = segment_args(c)
    ops.attn_fwd(q, ks, vs, rb, dg, c.scale, out=out, lse=lse)
    ref, ref_lse = reference.attn_fwd(q, ks, vs, rb, dg, c.scale)
    low, low_lse = reference.attn_fwd(q, ks, vs, rb, dg, c.scale, upcast=False)
    assert_attn_close(name, out, ref, low)
    # rows that see no key: out 0 (and lse -inf, checked below), never NaN
    seen = reference.segment_mask(c.q_len, [n for n, _, _ in c.segs], rb, dg, "cuda").any(1)
    assert (out.float()[:, ~seen] == 0).all(), f"{name}: a row without keys is not 0"
    if lse is not None:
        assert_lse_close(name, lse, ref_lse, low_lse)
    # nothing outside the views is written
    inside = torch.zeros_like(out_big, dtype=torch.bool)
    inside[:, 1: 1 + c.q_len, : c.Hq] = True
    assert (out_big[~inside] == 7).all(), f"{name}: wrote outside out"
    lse_inside = torch.zeros_like(lse_big, dtype=torch.bool)
    if lse is not None:
        lse_inside[:, :, 2: 2 + c.q_len] = True
    assert (lse_big[~lse_inside] == 7).all(), f"{name}: wrote outside lse"


@pytest.mark.cuda
@pytest.mark.parametrize("name", ["qwen7b_rank_partial", "rank0_eager_step", "max_rows_g8_q2",
                                  "diag_cuts_a_tile"])
def test_decode_agrees_with_the_prefill_kernel(name):
    """attn_fwd (decode kernel) against attn_fwd_group with the same single problem (the prefill
    kernel, which attn_fwd ran for these shapes before): within the dtype's error."""
    c = CASES[name]
    skip_unless_compiled(c)
    q, ks, vs, out, lse, _, _ = make_inputs(c, seed=11)
    rb, dg = segment_args(c)
    lse = lse if lse is not None else torch.empty(c.B, c.Hq, c.q_len, device="cuda")
    ops.attn_fwd(q, ks, vs, rb, dg, c.scale, out=out, lse=lse)
    old, old_lse = torch.empty_like(out), torch.empty_like(lse)
    ops.attn_fwd_group([ops.AttnProblem(q, ks, vs, rb, dg, old, old_lse)], c.scale)
    ref, ref_lse = reference.attn_fwd(q, ks, vs, rb, dg, c.scale)
    low, low_lse = reference.attn_fwd(q, ks, vs, rb, dg, c.scale, upcast=False)
    # each kernel is within the FlashAttention rule of the reference, so they agree within it
    tol = 2 * (low.float() - ref).abs().max().item() + 1e-5
    err = (out.float() - old.float()).abs().max().item()
    assert err <= tol, f"{name}: decode vs prefill kernel {err:.3g} > {tol:.3g}"
    assert torch.equal(torch.isneginf(lse), torch.isneginf(old_lse)), f"{name}: -inf rows differ"
    fin = torch.isfinite(ref_lse)
    lse_tol = (2 * (low_lse.float() - ref_lse)[fin].abs().max().item()
               + 8 * torch.finfo(torch.float32).eps * max(1.0, ref_lse[fin].abs().max().item()))
    lse_err = (lse - old_lse)[fin].abs().max().item()
    assert lse_err <= lse_tol, f"{name}: decode vs prefill lse {lse_err:.3g} > {lse_tol:.3g}"


@pytest.mark.cuda
def test_decode_shapes_run_the_decode_kernel():
    """The routing: a decode-shaped attn_fwd launches attn_decode_kernel (and, split, its
    combine kernel); 17 rows per kv head launch the prefill kernel instead."""
    c = NAMED["qwen7b_rank_partial"]
    skip_unless_compiled(c)
    q, ks, vs, out, lse, _, _ = make_inputs(c)

    def kernels(q_rows):
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            ops.attn_fwd(q_rows, ks, vs, [0], [FULL])
            torch.cuda.synchronize()
        return " ".join(e.name for e in prof.events())

    names = kernels(q)
    assert "attn_decode_kernel" in names and "attn_decode_combine_kernel" in names, names
    q17 = torch.randn(1, 3, c.Hq, c.D, device="cuda", dtype=q.dtype)  # 3 * 7 = 21 rows
    assert "attn_decode" not in kernels(q17)


@pytest.mark.cuda
@pytest.mark.parametrize("name", ["qwen7b_rank_partial", "no_row_sees_a_key"])
def test_decode_replays_from_a_cuda_graph(name):
    """A captured decode-shaped attn_fwd (workspace from the graph's pool), replayed on new
    inputs written in place, gives exactly the eager result (the plan and the merge order
    depend only on the shapes)."""
    c = CASES[name]
    skip_unless_compiled(c)
    q, ks, vs, out, lse, _, _ = make_inputs(c, seed=3)
    rb, dg = segment_args(c)
    lse = lse if lse is not None else torch.empty(c.B, c.Hq, c.q_len, device="cuda")

    def step():
        ops.attn_fwd(q, ks, vs, rb, dg, c.scale, out=out, lse=lse)

    graph, _ = capture(step)
    q2, ks2, vs2, _, _, _, _ = make_inputs(c, seed=4)
    q.copy_(q2)
    for k, v, k2, v2 in zip(ks, vs, ks2, vs2):
        k.copy_(k2)
        v.copy_(v2)
    graph.replay()
    got, got_lse = out.clone(), lse.clone()
    eager, eager_lse = ops.attn_fwd(q, ks, vs, rb, dg, c.scale, out_dtype=out.dtype)
    assert torch.equal(got, eager) and torch.equal(got_lse, eager_lse)
    ref, _ = reference.attn_fwd(q, ks, vs, rb, dg, c.scale)
    low, _ = reference.attn_fwd(q, ks, vs, rb, dg, c.scale, upcast=False)
    assert_attn_close(f"{name} replay", got, ref, low)
