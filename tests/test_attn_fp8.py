"""attn_fwd_group's FP8 operands (docs/kernels/attn_fp8.md): the CPU op against the torch
statement of the arithmetic (spava_ext.fp8.attn_fwd) on the same quantised bytes, its errors,
and opcheck."""

import pytest
import torch

import spava_ext
from spava_ext import fp8, ops
from utils import run_ranks


def _source(k, v):
    """The op's operands of one key source: e4m3 K, transposed e4m3 V and their scales."""
    k8, ks = ops.quantize_fp8(k)
    vt, vs = ops.quantize_fp8(v, transpose=True)
    return k8, vt, ks, vs


def _query(q):
    """e4m3 Q and its per-row scales ``[B, L, Hq]``."""
    q8, qs = ops.quantize_fp8(q)
    return q8, qs.repeat_interleave(ops.FP8_BLOCK, 1)[:, : q.shape[1]]


def _case(seed, B=2, Hq=4, Hkv=2, D=32):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, 150, Hq, D, generator=g)
    k1, v1 = torch.randn(B, 400, Hkv, D, generator=g), torch.randn(B, 400, Hkv, D, generator=g)
    v1[:, 128:256] *= 1e-3  # a block of small values: its own V scale
    k2, v2 = torch.randn(B, 90, Hkv, D, generator=g), torch.randn(B, 90, Hkv, D, generator=g)
    # three segments: one off the block grid, one causal, one of a second source
    spans, rb, dg = [0, 10, 200, 0, 300, 100, 1, 30, 60], [20, 0, 5], [ops.FULL, -50, -3]
    return q, (k1, v1), (k2, v2), spans, rb, dg


def _emulated(q, sources, spans, rb, dg, scale):
    src = [fp8.quantize_source(k, v) for k, v in sources]
    q8, qs = fp8.quantize_rows(q)
    segs = [fp8.Segment(src[spans[3 * s]], spans[3 * s + 1], spans[3 * s + 2], rb[s], dg[s])
            for s in range(len(rb))]
    return fp8.attn_fwd(q8, qs, segs, scale)


@pytest.mark.parametrize("out_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("heads", [(4, 2), (3, 3)])
def test_fp8_group_equals_the_arithmetic(out_dtype, heads):
    q, s1, s2, spans, rb, dg = _case(0, Hq=heads[0], Hkv=heads[1])
    ops1, ops2 = _source(*s1), _source(*s2)
    q8, qs = _query(q)
    B, L, Hq, D = q.shape
    out, lse = torch.empty(B, L, Hq, D, dtype=out_dtype), torch.empty(B, Hq, L)
    group = ops.SpanGroup([q8], [out], [lse], [ops1[0], ops2[0]], [ops1[1], ops2[1]], [3], spans,
                          rb, dg, [], [qs], [ops1[2], ops2[2]], [ops1[3], ops2[3]])
    ops.attn_fwd_group(group, 0.3)
    want, want_lse = _emulated(q, [s1, s2], spans, rb, dg, 0.3)
    tol = {"atol": 1e-5, "rtol": 1e-5} if out_dtype == torch.float32 else {}
    torch.testing.assert_close(out, want.to(out_dtype), **tol)
    torch.testing.assert_close(lse, want_lse, atol=1e-5, rtol=1e-5)  # -inf rows 0..4 included
    assert bool(torch.isneginf(lse[:, :, :5]).all()) and bool((out[:, :5] == 0).all())


def test_fp8_group_without_spans_and_two_problems():
    """Segments passed as whole sources (no spans), two problems, one without an lse."""
    q, (k1, v1), (k2, v2), _, _, _ = _case(1)
    ops1, ops2 = _source(k1[:, :130], v1[:, :130]), _source(k2, v2)
    q8, qs = _query(q)
    outs = [torch.empty(2, 150, 4, 32), torch.empty(2, 40, 4, 32)]
    lses = [torch.empty(2, 4, 150), torch.empty(0)]
    srcs = [ops1, ops2, ops2]  # segment s is source s
    group = ops.SpanGroup([q8, q8[:, 100:140]], outs, lses, *([s[j] for s in srcs] for j in (0, 1)),
                          [2, 1], [], [0, 0, 0], [ops.FULL, -10, ops.FULL], [],
                          [qs, qs[:, 100:140]], *([s[j] for s in srcs] for j in (2, 3)))
    ops.attn_fwd_group(group)
    scale = 32 ** -0.5
    src1, src2 = fp8.quantize_source(k1[:, :130], v1[:, :130]), fp8.quantize_source(k2, v2)
    eq8, eqs = fp8.quantize_rows(q)
    want0, _ = fp8.attn_fwd(eq8, eqs, [fp8.Segment(src1, 0, 130), fp8.Segment(src2, 0, 90, 0, -10)],
                            scale)
    want1, _ = fp8.attn_fwd(eq8[:, 100:140], eqs[:, 100:140], [fp8.Segment(src2, 0, 90)], scale)
    torch.testing.assert_close(outs[0], want0, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(outs[1], want1, atol=1e-5, rtol=1e-5)


def _group_args(seed=2):
    q, s1, _, _, _, _ = _case(seed)
    k8, vt, ks, vs = _source(*s1)
    q8, qs = _query(q)
    out, lse = torch.empty(q.shape), torch.empty(2, 4, 150)
    args = ([q8], [1], [k8], [vt], [0], [ops.FULL], None, [out], [lse])
    kwargs = {"spin_us": 0, "timeout_s": 1.0, "q_scale": [qs], "k_scale": [ks], "v_scale": [vs]}
    return args, kwargs


def test_fp8_group_bad_inputs_name_the_op_and_value():
    op = torch.ops.spava.attn_fwd_group
    args, kw = _group_args()
    k8, vt, ks = args[2][0], args[3][0], kw["k_scale"][0]
    cases = [
        (TypeError, r"FP8: k\[0\] and v\[0\] must be float8_e4m3fn, got Float",
         {"args": (args[:2] + ([k8.float()],) + args[3:])}),
        (ValueError, r"FP8: v\[0\] must be transposed \[B, Hkv, D, L_pad >= L\] = \[2, 2, 32, "
         r">= 400\], got \[2, 400, 2, 32\]",
         {"args": args[:3] + ([k8.clone()],) + args[4:]}),
        (ValueError, r"k_scale\[0\] must be \[2, 4, 2\], got \[2, 3, 2\]",
         {"k_scale": [ks[:, :3]]}),
        (ValueError, r"FP8: q_scale must have one entry per problem \(1\), got 0",
         {"q_scale": []}),
        (ValueError, r"FP8: k, v, k_scale and v_scale must have one entry per source",
         {"v_scale": []}),
        (TypeError, r"FP8: q\[0\] must be float8_e4m3fn, got Float",
         {"args": ([args[0][0].float()],) + args[1:]}),
        (ValueError, r"span 0 = rows \[390, 390 \+ 20\) of source 0, which has 400 rows",
         {"spans": [0, 390, 20]}),
    ]
    for err, msg, change in cases:
        a = change.pop("args", args)
        with pytest.raises(err, match=r"attn_fwd_group: " + msg):
            op(*a, **{**kw, **change})
    assert vt.shape == (2, 2, 32, 400)


def test_fp8_group_opcheck():
    """The fake, autograd registration and aot dispatch with FP8 operands (opcheck's
    test_schema cannot run: it computes on its inputs, and ATen has no CPU arithmetic on
    float8_e4m3fn; the schema is the bf16 calls', which test_attn_group.py opchecks)."""
    args, kw = _group_args(3)
    torch.library.opcheck(torch.ops.spava.attn_fwd_group.default, args, kw,
                          test_utils=("test_autograd_registration", "test_faketensor",
                                      "test_aot_dispatch_dynamic"))


@pytest.mark.cuda
def test_fp8_group_on_cuda_says_no_kernel_yet():
    args, kw = _group_args(4)
    to = lambda x: [t.cuda() for t in x] if isinstance(x, list) else x  # noqa: E731
    with pytest.raises(NotImplementedError, match=r"attn_fwd_group: FP8 operands on CUDA"):
        torch.ops.spava.attn_fwd_group(*[to(a) for a in args],
                                       **{n: to(x) for n, x in kw.items()})


# --------------------------------------------------------------- the FP8 schedule of a layer
def _fp8_ranks_main(rank, world, L, a, nq, p, shard, hadamard, heads):
    from spava_ext import SpavaLayout

    layout = SpavaLayout(L, a, nq, world, p, shard_anchor=shard)
    g = torch.Generator().manual_seed(7)
    q, k, v = (torch.randn(2, L, h, 32, generator=g) for h in heads)
    shard_ = [layout.shard(t, rank) for t in (q, k, v)]
    return spava_ext.spava_attention(*shard_, layout, attn_dtype="fp8", hadamard=hadamard)


@pytest.mark.parametrize("shard,p,hadamard", [(False, 40, False), (True, 40, True),
                                              (True, None, False)])
def test_fp8_layer_over_gloo_ranks_equals_the_arithmetic(shard, p, hadamard):
    """Three gloo ranks with FP8 attention: the packed e4m3 gathers, each part its own key
    source, the CPU op and the exact merge give what spava_ext.fp8.spava_attention (the torch
    statement of the same quantisation and arithmetic) gives."""
    from spava_ext import SpavaLayout

    L, a, nq, heads = 700, 90, 13, (4, 2, 2)
    outs = run_ranks(_fp8_ranks_main, 3, L, a, nq, p, shard, hadamard, heads)
    layout = SpavaLayout(L, a, nq, 3, p, shard_anchor=shard)
    g = torch.Generator().manual_seed(7)
    q, k, v = (torch.randn(2, L, h, 32, generator=g) for h in heads)
    want = fp8.spava_attention(q, k, v, layout, rotate=hadamard)
    torch.testing.assert_close(layout.unshard(outs), want, atol=1e-5, rtol=1e-5)


def test_fp8_parts_are_about_half_the_bytes():
    from spava_ext.attention_fp8 import pack, unpack

    kv = torch.randn(1024, 2, 1, 4, 128, dtype=torch.bfloat16)
    buf = pack(kv, rotate=False)
    assert buf.dtype == torch.uint8 and buf.numel() < 0.51 * kv.numel() * 2
    k8, vt, ks, vs = unpack(buf, 1024, 1, 4, 128)
    want_k, want_ks = fp8.quantize(kv[:, 0].transpose(0, 1).float())
    want_v, want_vs = fp8.quantize(kv[:, 1].transpose(0, 1).float(), transpose=True)
    assert torch.equal(k8.view(torch.uint8), want_k.view(torch.uint8))
    assert torch.equal(vt.view(torch.uint8), want_v.view(torch.uint8))
    assert torch.equal(ks, want_ks) and torch.equal(vs, want_vs)


def test_fp8_arguments_are_checked():
    from spava_ext import SpavaLayout

    layout = SpavaLayout(60, 4, 2, 1, 3)
    q = torch.randn(1, 60, 2, 8)
    with pytest.raises(ValueError, match=r"spava_attention: attn_dtype must be None .* or "
                                         r"'fp8', got 'fp16'"):
        spava_ext.spava_attention(q, q, q, layout, attn_dtype="fp16")
    with pytest.raises(ValueError, match=r"spava_attention: hadamard=True .* needs "
                                         r"attn_dtype='fp8'"):
        spava_ext.spava_attention(q, q, q, layout, hadamard=True)
    q80 = torch.randn(1, 60, 2, 80)
    with pytest.raises(ValueError, match=r"spava_attention: hadamard=True needs a power-of-two "
                                         r"head dim, got D = 80"):
        spava_ext.spava_attention(q80, q80, q80, layout, attn_dtype="fp8", hadamard=True)
    meta = q.to("meta", torch.bfloat16)
    with pytest.raises(NotImplementedError, match=r"spava_attention: attn_dtype='fp8' runs on "
                                                  r"the CPU only.*q is on meta"):
        spava_ext.spava_attention(meta, meta, meta, layout, attn_dtype="fp8")


@pytest.mark.parametrize("world", [1, 2, 5])
def test_fp8_layer_on_irregular_layouts(world):
    """Emulated ranks with FP8 attention on the distributed suite's irregular cases (odd
    lengths, an empty anchor, chunks shorter than p or empty, exact mode, no context, anchor
    slices that are empty; fp32, bf16 and fp16 inputs): the torch arithmetic's result."""
    from spava_ext import SpavaLayout
    from spava_ext.attention import spava_attention_rank
    from spava_ext.comm import emulate_ranks
    from test_distributed import CASES, case_inputs

    for (i, case), shard in ((c, s) for c in enumerate(CASES) for s in (False, True)):
        B, L, a, nq, Hq, Hkv, D, p, dtype = case
        layout = SpavaLayout(L, a, nq, world, p, shard_anchor=shard)
        q, k, v = case_inputs(i, case)
        outs = emulate_ranks(lambda r, comm: spava_attention_rank(
            *[layout.shard(t, r) for t in (q, k, v)], layout, comm, attn_dtype="fp8"), world)
        got = layout.unshard(outs)
        assert got.dtype == dtype
        want = fp8.spava_attention(q, k, v, layout)
        tol = 1e-5 if dtype == torch.float32 else 1e-2  # outputs rounded to bf16 / fp16
        torch.testing.assert_close(got.float(), want, atol=tol, rtol=tol,
                                   msg=lambda m: f"case {i} shard {shard} W {world}: {m}")
