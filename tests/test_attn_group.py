"""attn_fwd_group: several problems in one (persistent) launch, ready flags, the give-back and
finish protocol, and its errors. CPU tests always run; CUDA tests skip without a GPU."""

import os
import subprocess
import sys
import time

import pytest
import torch

from spava_ext import envs, ops, reference
from utils import DEVICES, HAS_CUDA, assert_attn_close, assert_lse_close, randn_inputs

FULL = ops.FULL
cuda_only = pytest.mark.cuda


def make_problems(device, dtype, D=64, Hq=8, Hkv=2, B=2, seed=0, waits=(None, None, None, None)):
    """Four problems with different row counts, segment lists (one without segments) and
    outputs: q's dtype without lse, fp32 out with lse, a strided out view, rows that see
    nothing."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape):
        return torch.randn(*shape, generator=g).to(device, dtype)

    ka, va = rnd(B, 300, Hkv, D), rnd(B, 300, Hkv, D)  # shared keys (two problems read them)
    kb, vb = rnd(B, 77, Hkv, D), rnd(B, 77, Hkv, D)
    specs = [  # (rows, [(k, v, row_begin, diag)], out fp32, lse)
        (333, [(ka[:, :129], va[:, :129], 0, FULL), (kb, vb, 40, 0)], False, False),
        (64, [(ka, va, 0, FULL), (kb[:, :5], vb[:, :5], 0, 0)], True, True),
        (517, [(kb, vb, 0, -3), (ka[:, 100:], va[:, 100:], 0, 0)], False, True),
        (45, [], False, True),
    ]
    problems = []
    for (rows, segs, fp32, want_lse), wait in zip(specs, waits):
        q = rnd(B, rows, Hq, D)
        if rows == 517:  # a strided output view
            out = torch.zeros(B, rows, Hq + 3, D, device=device, dtype=dtype)[:, :, 1 : Hq + 1]
        else:
            out = torch.full((B, rows, Hq, D), float("nan"), device=device,
                             dtype=torch.float32 if fp32 else dtype)
        lse = torch.full((B, Hq, rows), float("nan"), device=device) if want_lse else None
        problems.append(ops.AttnProblem(q, [s[0] for s in segs], [s[1] for s in segs],
                                        [s[2] for s in segs], [s[3] for s in segs], out, lse,
                                        wait))
    return problems


def check_against_reference(problems, name):
    for i, pr in enumerate(problems):
        ref, ref_lse = reference.attn_fwd(pr.q, pr.k, pr.v, pr.row_begin, pr.diag)
        low, low_lse = reference.attn_fwd(pr.q, pr.k, pr.v, pr.row_begin, pr.diag, upcast=False)
        assert_attn_close(f"{name} problem {i}", pr.out, ref, low)
        if pr.lse is not None:
            assert_lse_close(f"{name} problem {i}", pr.lse, ref_lse, low_lse)


def launch_with_late_flags(dtype):
    """Problems 1 and 2 wait for flags that are 0: the first launch (with sched, polling a flag
    for 2 us) computes the rest and gives their units back. Returns (problems, ready, sched)."""
    problems = make_problems("cuda", dtype, waits=(None, 0, 1, None))
    ready = torch.zeros(2, dtype=torch.int32, device="cuda")
    sched = torch.zeros(ops.SCHED_INTS, dtype=torch.int32, device="cuda")
    ops.attn_fwd_group(problems, ready=ready, sched=sched, spin_us=2)
    torch.cuda.synchronize()
    return problems, ready, sched


# ------------------------------------------------------------------------------------ CPU
def test_group_equals_separate_calls_cpu():
    problems = make_problems("cpu", torch.float32)
    ops.attn_fwd_group(problems)
    for i, pr in enumerate(problems):
        out, lse = ops.attn_fwd(pr.q, pr.k, pr.v, pr.row_begin, pr.diag,
                                out_dtype=pr.out.dtype)
        assert torch.equal(pr.out, out), f"problem {i}"
        if pr.lse is not None:
            assert torch.equal(pr.lse, lse), f"problem {i} lse"


def test_group_cpu_flags_and_finish():
    problems = make_problems("cpu", torch.float32, waits=(None, 0, 1, None))
    ready = torch.tensor([1, 0], dtype=torch.int32)
    with pytest.raises(ValueError, match=r"spava::attn_fwd_group: problem 2 waits for ready\[1\]"):
        ops.attn_fwd_group(problems, ready=ready)
    ready[1] = 1
    sched = torch.zeros(ops.SCHED_INTS, dtype=torch.int32)
    ops.attn_fwd_group(problems, ready=ready, sched=sched)
    before = [pr.out.clone() for pr in problems]
    ops.attn_fwd_group(problems, ready=ready, sched=sched, finish=True)  # nothing left to do
    assert all(torch.equal(a, pr.out) for a, pr in zip(before, problems))
    check_against_reference(problems, "cpu flags")


WAITS = {"spin_us": 50, "timeout_s": 600.0}  # the op's required wait times


def test_group_bad_inputs_name_the_op_and_value():
    problems = make_problems("cpu", torch.float32)
    args = lambda prs: (  # noqa: E731
        [p.q for p in prs], [len(p.k) for p in prs], [k for p in prs for k in p.k],
        [v for p in prs for v in p.v], [r for p in prs for r in p.row_begin],
        [d for p in prs for d in p.diag], None, [p.out for p in prs],
        [p.lse if p.lse is not None else torch.empty(0) for p in prs])
    op = torch.ops.spava.attn_fwd_group
    a = args(problems)
    with pytest.raises(ValueError, match=r"attn_fwd_group: sum\(num_segments\) = 5 but"):
        op(a[0], [2, 2, 1, 0], *a[2:], **WAITS)
    with pytest.raises(ValueError, match=r"wait_for\[1\] = 0 but ready has 0 flags"):
        op(*a, wait_for=[-1, 0, -1, -1], **WAITS)
    with pytest.raises(ValueError, match=r"needs 1 to 4 problems, got 5"):
        ops.attn_fwd_group(problems + problems[:1])
    with pytest.raises(ValueError, match=r"finish=True needs the sched workspace"):
        op(*a, finish=True, **WAITS)
    with pytest.raises(TypeError, match=r"sched must be a contiguous int32 tensor of at least"):
        op(*a, sched=torch.zeros(8, dtype=torch.int32), **WAITS)
    with pytest.raises(ValueError, match=r"problem 1: q .* does not match problem 0"):
        bad = problems[1]._replace(q=problems[1].q[:, :, :4], out=problems[1].out[:, :, :4],
                                   lse=None)
        ops.attn_fwd_group([problems[0], bad])
    with pytest.raises(ValueError, match=r"sm_budget must be >= 0, got -1"):
        op(*a, sm_budget=-1, **WAITS)
    with pytest.raises(ValueError, match=r"spin_us must be in \[0, 1000000000\], got -1"):
        op(*a, spin_us=-1, timeout_s=1.0)
    for t in (0.0, -1.0, float("nan"), 1e7):
        with pytest.raises(ValueError, match=r"timeout_s must be in \(0, 1e\+06\], got"):
            op(*a, spin_us=0, timeout_s=t)
    with pytest.raises(RuntimeError, match=r"missing value for argument 'spin_us'"):
        op(*a, timeout_s=1.0)


def as_span_group(problems, device):
    """``problems`` as a :class:`ops.SpanGroup`: every key segment copied into one of two shared
    sources (K and V ``[B, n, Hkv, D]``, the segments in a shuffled order with gaps between
    them) and named by its rows there."""
    segs = [(i, s) for i, pr in enumerate(problems) for s in range(len(pr.k))]
    order = torch.randperm(len(segs), generator=torch.Generator().manual_seed(1)).tolist()
    pr0 = next(pr for pr in problems if pr.k)
    B, _, Hkv, D = pr0.k[0].shape
    n = sum(problems[i].k[s].shape[1] + 3 for i, s in segs)
    k_src = torch.randn(B, n, Hkv, D, dtype=pr0.k[0].dtype).to(device)
    v_src = torch.randn_like(k_src)
    first, row = {}, 2
    for j in order:
        i, s = segs[j]
        rows = problems[i].k[s].shape[1]
        k_src[:, row : row + rows] = problems[i].k[s]
        v_src[:, row : row + rows] = problems[i].v[s]
        first[(i, s)] = row
        row += rows + 3
    spans = []
    for i, s in segs:  # source 0: a decoy the spans never name; source 1: the copies
        spans += [1, first[(i, s)], problems[i].k[s].shape[1]]
    empty = torch.empty(0, device=device)
    return ops.SpanGroup([pr.q for pr in problems], [pr.out for pr in problems],
                         [empty if pr.lse is None else pr.lse for pr in problems],
                         [k_src[:, :7], k_src], [v_src[:, :7], v_src],
                         [len(pr.k) for pr in problems], spans,
                         [r for pr in problems for r in pr.row_begin],
                         [d for pr in problems for d in pr.diag], [])


@pytest.mark.parametrize("device", DEVICES)
def test_group_spans_equal_separate_segments(device):
    """Segments named as rows of shared sources (spans) give the bytes of the same segments
    passed as tensors."""
    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    problems = make_problems(device, dtype)
    ops.attn_fwd_group(problems)
    expected = [(pr.out.clone(), None if pr.lse is None else pr.lse.clone()) for pr in problems]
    for pr in problems:
        pr.out.fill_(float("nan"))
        if pr.lse is not None:
            pr.lse.fill_(float("nan"))
    ops.attn_fwd_group(as_span_group(problems, device))
    for i, (pr, (out, lse)) in enumerate(zip(problems, expected)):
        assert torch.equal(pr.out, out), f"problem {i}"
        assert lse is None or torch.equal(pr.lse, lse), f"problem {i} lse"


def test_group_bad_spans_name_the_op_and_value():
    g = as_span_group(make_problems("cpu", torch.float32), "cpu")
    with pytest.raises(ValueError, match=r"attn_fwd_group: spans must have 3 entries per "
                                         r"segment \(3 \* 6\), got 17"):
        ops.attn_fwd_group(g._replace(spans=g.spans[:-1]))
    bad = list(g.spans)
    bad[3] = 2
    with pytest.raises(ValueError, match=r"span 1 names source 2, there are 2"):
        ops.attn_fwd_group(g._replace(spans=bad))
    bad = list(g.spans)
    bad[4] = g.k[1].shape[1] - bad[5] + 1
    with pytest.raises(ValueError, match=rf"span 1 = rows \[{bad[4]}, {bad[4]} \+ {bad[5]}\) "
                                         rf"of source 1, which has {g.k[1].shape[1]} rows"):
        ops.attn_fwd_group(g._replace(spans=bad))
    bad[4] = -1
    with pytest.raises(ValueError, match=r"span 1 = rows \[-1,"):
        ops.attn_fwd_group(g._replace(spans=bad))
    with pytest.raises(ValueError, match=r"k and v must have one source each, got 2 and 1"):
        ops.attn_fwd_group(g._replace(v=g.v[:1]))


@pytest.mark.parametrize("device", DEVICES)
def test_group_opcheck(device):
    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    q, k, v = randn_inputs(2, 24, 4, 2, 64, dtype=dtype, device=device)
    outs = [torch.empty_like(q), torch.empty(2, 10, 4, 64, device=device)]
    lses = [torch.empty(0, device=device), torch.empty(2, 4, 10, device=device)]
    args = ([q, q[:, :10]], [2, 1], [k[:, :5], k[:, 5:], k], [v[:, :5], v[:, 5:], v], [3, 0, 0],
            [FULL, 0, 0], None, outs, lses)
    op = torch.ops.spava.attn_fwd_group.default
    torch.library.opcheck(op, args, WAITS)
    # the overlap arguments: a flag that is set, the give-back workspace, done flags, a budget
    ready = torch.ones(1, dtype=torch.int32, device=device)
    overlap = {"ready": ready, "wait_for": [0, -1], "sm_budget": 3, "spin_us": 2,
               "timeout_s": 30.0, "done": torch.zeros(4, dtype=torch.int32, device=device),
               "sched": torch.zeros(ops.SCHED_INTS, dtype=torch.int32, device=device)}
    torch.library.opcheck(op, args, overlap)
    # segments as spans of shared sources
    spans_args = args[:2] + ([k], [v]) + args[4:]
    torch.library.opcheck(op, spans_args, {**WAITS, "spans": [0, 0, 5, 0, 5, 19, 0, 0, 24]})


# ------------------------------------------------------------------------------------ CUDA
@pytest.fixture
def aten_fallback():
    """Every GPU on attn_fwd's ATen path for the test, the kernels again after it."""
    ops.set_attn_fallback(True)
    yield
    ops.set_attn_fallback(envs.attn_fallback())


@cuda_only
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("D", ops.build_info().get("attn_fwd_head_dims", []))
@pytest.mark.parametrize("sm_budget", [0, 1, 3])
def test_group_cuda_matches_reference(dtype, D, sm_budget):
    """Every problem of one launch against the reference; sm_budget = 1 runs every unit of
    every problem on one CTA (the ring and Q-buffer phases run on across units)."""
    problems = make_problems("cuda", dtype, D=D, seed=D)
    ops.attn_fwd_group(problems, sm_budget=sm_budget)
    check_against_reference(problems, f"D{D} {dtype} sm_budget {sm_budget}")


@cuda_only
def test_group_cuda_sched_without_waits_does_everything_in_one_launch():
    problems = make_problems("cuda", torch.bfloat16, waits=(None, 0, 1, 0))
    ready = torch.ones(2, dtype=torch.int32, device="cuda")
    sched = torch.zeros(ops.SCHED_INTS, dtype=torch.int32, device="cuda")
    ops.attn_fwd_group(problems, ready=ready, sched=sched)
    assert sched[1].item() == 0, "no unit was given back"
    ops.attn_fwd_group(problems, ready=ready, sched=sched, finish=True)
    check_against_reference(problems, "sched, flags set")


@cuda_only
def test_group_cuda_late_flags_give_units_back_and_finish_computes_them():
    """Flags unset at launch: every CTA gives its first flagged unit back after the spin limit
    and stops; the finishing launch after the flags are set computes the rest."""
    problems, ready, sched = launch_with_late_flags(torch.float16)
    assert sched[1].item() > 0, "some unit must have been given back"
    assert torch.isnan(problems[2].out.float()).any() or problems[2].out.abs().sum() == 0
    ready.fill_(1)
    ops.attn_fwd_group(problems, ready=ready, sched=sched, finish=True)
    check_against_reference(problems, "given back, then finished")


@cuda_only
def test_group_cuda_waits_for_a_flag_set_by_another_stream():
    """Without sched the kernel spins until another stream sets the flag (here after a ~50 ms
    sleep kernel); the result is complete and correct."""
    problems = make_problems("cuda", torch.bfloat16, waits=(0, None, 0, None))
    ready = torch.zeros(1, dtype=torch.int32, device="cuda")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        torch.cuda._sleep(50_000_000)  # ~25-50 ms of clock cycles
        ready.fill_(1)
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    t0 = time.perf_counter()
    ops.attn_fwd_group(problems, ready=ready, sm_budget=sms - 2)
    torch.cuda.synchronize()
    assert time.perf_counter() - t0 > 0.005, "the launch must have waited for the flag"
    check_against_reference(problems, "flag from another stream")


@cuda_only
def test_group_cuda_flag_never_set_fails_instead_of_hanging(tmp_path):
    """A flag that is never set: the kernel traps after SPAVA_COLLECTIVE_TIMEOUT_S and the
    process gets a CUDA error (run in a subprocess: a trap ends the CUDA context)."""
    script = tmp_path / "never.py"
    script.write_text(
        "import torch\nfrom spava_ext import ops\n"
        "q = torch.randn(1, 200, 4, 64, device='cuda', dtype=torch.bfloat16)\n"
        "k = torch.randn(1, 300, 2, 64, device='cuda', dtype=torch.bfloat16)\n"
        "out = torch.empty_like(q)\n"
        "ready = torch.zeros(1, dtype=torch.int32, device='cuda')\n"
        "ops.attn_fwd_group([ops.AttnProblem(q, [k], [k], [0], [ops.FULL], out, None, 0)],"
        " ready=ready)\n"
        "torch.cuda.synchronize()\n"
        "print('finished')\n")
    env = dict(os.environ, SPAVA_COLLECTIVE_TIMEOUT_S="1")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode != 0 and "finished" not in proc.stdout, proc.stdout + proc.stderr
    assert "CUDA error" in proc.stderr or "AcceleratorError" in proc.stderr, proc.stderr[-2000:]
    assert time.perf_counter() - t0 < 100


# ------------------------------------------------------------------------------ done flags
def test_group_done_flags_and_wait_flag_cpu():
    problems = make_problems("cpu", torch.float32)
    done = torch.zeros(2 * len(problems), dtype=torch.int32)
    ops.attn_fwd_group(problems, done=done)
    assert done[1::2].tolist() == [1] * len(problems)
    ops.wait_flag(done[1:2])
    with pytest.raises(ValueError, match=r"spava::wait_flag: the flag is 0"):
        ops.wait_flag(torch.zeros(1, dtype=torch.int32))
    with pytest.raises(TypeError, match=r"spava::wait_flag: flag must be a contiguous int32"):
        ops.wait_flag(torch.ones(1))
    with pytest.raises(TypeError, match=r"done must be a contiguous int32 tensor of 2 \* 4"):
        ops.attn_fwd_group(problems, done=torch.zeros(3, dtype=torch.int32))
    torch.library.opcheck(torch.ops.spava.wait_flag.default, (done[1:2],))


def test_set_flag_cpu():
    flag = torch.zeros(3, dtype=torch.int32)
    ops.set_flag(flag[1:2])
    assert flag.tolist() == [0, 1, 0]
    ops.wait_flag(flag[1:2])
    with pytest.raises(TypeError, match=r"spava::set_flag: flag must be a contiguous int32"):
        ops.set_flag(torch.zeros(2, dtype=torch.int64))
    torch.library.opcheck(torch.ops.spava.set_flag.default, (torch.zeros(1, dtype=torch.int32),))


@cuda_only
def test_group_cuda_done_flags_follow_the_units():
    """done[2i + 1] is 1 once problem i is written: at once for problems without a wait, only
    after the finishing launch for a problem whose units were given back. A side stream that
    waits on problem 0's flag (issued before the launch) copies its finished rows."""
    problems = make_problems("cuda", torch.bfloat16, waits=(None, 0, None, None))
    ready = torch.zeros(1, dtype=torch.int32, device="cuda")
    sched = torch.zeros(ops.SCHED_INTS, dtype=torch.int32, device="cuda")
    done = torch.zeros(2 * len(problems), dtype=torch.int32, device="cuda")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    copy = torch.empty_like(problems[0].out)
    with torch.cuda.stream(side):
        ops.wait_flag(done[1:2])
        copy.copy_(problems[0].out)
    ops.attn_fwd_group(problems, ready=ready, sched=sched, done=done, spin_us=2)
    torch.cuda.synchronize()
    assert done[1].item() == 1 and done[3].item() == 0, done.tolist()
    ready.fill_(1)
    ops.attn_fwd_group(problems, ready=ready, sched=sched, finish=True, done=done)
    torch.cuda.synchronize()
    assert done[1::2].tolist() == [1, 1, 1, 1], done.tolist()
    assert torch.equal(copy, problems[0].out)
    check_against_reference(problems, "done flags")


@cuda_only
def test_wait_flag_cuda_orders_a_stream_after_a_flag():
    flag = torch.zeros(1, dtype=torch.int32, device="cuda")
    x = torch.zeros(4, device="cuda")
    waiter, setter = torch.cuda.Stream(), torch.cuda.Stream()
    with torch.cuda.stream(waiter):
        ops.wait_flag(flag)
        x.add_(1)
    with torch.cuda.stream(setter):
        torch.cuda._sleep(20_000_000)
        x.fill_(41)  # lands before the flag: the waiter's add must come after it
        flag.fill_(1)
    torch.cuda.synchronize()
    assert x.tolist() == [42.0] * 4


@cuda_only
def test_group_cuda_winds_down_after_a_give_back():
    """Once a CTA gives a unit back (its flag late), no CTA claims another unit: a long
    ungated problem queued after the gated one is left to the finishing launch instead of
    being ground through by the CTAs still running. Both launches together are exact."""
    g = torch.Generator().manual_seed(5)
    B, Hq, Hkv, D = 1, 8, 2, 128

    def rnd(*shape):
        return torch.randn(*shape, generator=g).to("cuda", torch.bfloat16)

    k, v = rnd(B, 4096, Hkv, D), rnd(B, 4096, Hkv, D)  # long units: 32 key tiles each
    problems = []
    for rows, wait in ((256, 0), (128 * 66, None)):
        q = rnd(B, rows, Hq, D)
        problems.append(ops.AttnProblem(q, [k], [v], [0], [FULL],
                                        torch.zeros_like(q), None, wait))
    ready = torch.zeros(1, dtype=torch.int32, device="cuda")
    sched = torch.zeros(ops.SCHED_INTS, dtype=torch.int32, device="cuda")
    ops.attn_fwd_group(problems, ready=ready, sched=sched, spin_us=2)
    torch.cuda.synchronize()
    claims, deferred = sched[0].item(), sched[1].item()
    total = (2 + 66) * Hq // 2  # pairs of units (CTA pairs: 2 query heads per claim)
    assert deferred > 0, sched[:4].tolist()
    assert claims < total // 2, (claims, total)  # the rest was not handed out
    ready.fill_(1)
    ops.attn_fwd_group(problems, ready=ready, sched=sched, finish=True)
    torch.cuda.synchronize()
    check_against_reference(problems, "wind-down")


@cuda_only
def test_set_flag_cuda_is_stream_ordered_and_needs_no_sm():
    """set_flag writes the flag after the work queued before it on its stream (a waiter sees
    that work's writes), and it sets a flag that a launch without give-back polls while its CTAs
    hold the SMs: the launch finishes with the waiting problem computed."""
    flag = torch.zeros(2, dtype=torch.int32, device="cuda")
    x = torch.zeros(4, device="cuda")
    waiter, setter = torch.cuda.Stream(), torch.cuda.Stream()
    with torch.cuda.stream(waiter):
        ops.wait_flag(flag[1:2])
        x.add_(1)
    with torch.cuda.stream(setter):
        torch.cuda._sleep(20_000_000)
        x.fill_(41)
        ops.set_flag(flag[1:2])
    torch.cuda.synchronize()
    assert x.tolist() == [42.0] * 4 and flag.tolist() == [0, 1]

    problems = make_problems("cuda", torch.bfloat16, waits=(None, 0, None, 0))
    ready = torch.zeros(1, dtype=torch.int32, device="cuda")
    setter.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(setter):
        torch.cuda._sleep(20_000_000)  # queued first: the launch's CTAs poll meanwhile
        ops.set_flag(ready)
    t0 = time.perf_counter()
    ops.attn_fwd_group(problems, ready=ready, timeout_s=30)  # a lost flag traps, not hangs
    torch.cuda.synchronize()
    assert time.perf_counter() - t0 < 20
    check_against_reference(problems, "set_flag")


@cuda_only
def test_group_cuda_finish_reads_no_flag():
    """The finishing launch is ordered after the data by the caller and must not wait for the
    flags: they are set by small kernels on another stream that could not get an SM while its
    CTAs spin (the W = 2 NCCL hang of 2026-11-25). Here the flags are set only after a long
    sleep on a side stream; the finish completes long before."""
    problems, ready, sched = launch_with_late_flags(torch.bfloat16)
    assert sched[1].item() > 0
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        torch.cuda._sleep(200_000_000)  # ~0.1-0.2 s
        ready.fill_(1)
    ops.attn_fwd_group(problems, ready=ready, sched=sched, finish=True)
    done = torch.cuda.Event()
    done.record()
    done.synchronize()
    assert not side.query(), "the finishing launch waited for the flags"
    check_against_reference(problems, "finish without flags")
    torch.cuda.synchronize()


@cuda_only
def test_cuda_tensor_maps_follow_geometry():
    """The host caches encoded TMA descriptors by (address, dims, strides, box): views of one
    buffer that start at the same address with other lengths or strides, and new contents at a
    reused address, must each read what they say."""
    g = torch.Generator().manual_seed(5)
    buf_k = torch.randn(1, 400, 6, 64, generator=g).cuda().bfloat16()
    buf_v = torch.randn(1, 400, 6, 64, generator=g).cuda().bfloat16()
    q = torch.randn(1, 150, 4, 64, generator=g).cuda().bfloat16()
    views = [(buf_k[:, :, :2], buf_v[:, :, :2]),  # row stride 6 heads
             (buf_k[:, :100, :2], buf_v[:, :100, :2]),  # same address, fewer rows
             (buf_k.view(1, 400, 3, 128)[..., :64][:, :, :2],  # same address, other strides
              buf_v.view(1, 400, 3, 128)[..., :64][:, :, :2])]
    for round_ in range(2):
        for i, (k, v) in enumerate(views):
            out = torch.empty_like(q)
            ops.attn_fwd(q, [k], [v], [0], [FULL], out=out)
            ref, _ = reference.attn_fwd(q, [k], [v], [0], [FULL])
            low, _ = reference.attn_fwd(q, [k], [v], [0], [FULL], upcast=False)
            assert_attn_close(f"view {i} round {round_}", out, ref, low)
        buf_k.normal_()  # new contents at the same address
        buf_v.normal_()


@cuda_only
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_cuda_aten_fallback_matches_reference(aten_fallback, dtype):
    """GPUs without the sm_90a kernels take the ATen path (forced here with
    ops.set_attn_fallback): attn_fwd and attn_fwd_group give the reference's results; a problem
    waits on the stream for a flag set later by another stream, done flags rise, and a finishing
    call changes nothing."""
    assert not ops.uses_sm90("cuda")
    problems = make_problems("cuda", dtype, D=80, seed=11, waits=(None, 0, None, 0))
    ready = torch.zeros(1, dtype=torch.int32, device="cuda")
    done = torch.zeros(2 * len(problems), dtype=torch.int32, device="cuda")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        torch.cuda._sleep(20_000_000)
        ready.fill_(1)
    sched = torch.zeros(ops.SCHED_INTS, dtype=torch.int32, device="cuda")
    ops.attn_fwd_group(problems, ready=ready, sched=sched, done=done)
    ops.attn_fwd_group(problems, ready=ready, sched=sched, finish=True, done=done)
    torch.cuda.synchronize()
    assert done[1::2].tolist() == [1, 1, 1, 1], done.tolist()
    check_against_reference(problems, f"ATen fallback {dtype}")
    pr = problems[2]
    out = torch.empty_like(pr.q)
    ops.attn_fwd(pr.q, pr.k, pr.v, pr.row_begin, pr.diag, out=out)
    ref, _ = reference.attn_fwd(pr.q, pr.k, pr.v, pr.row_begin, pr.diag)
    low, _ = reference.attn_fwd(pr.q, pr.k, pr.v, pr.row_begin, pr.diag, upcast=False)
    assert_attn_close("ATen fallback attn_fwd", out, ref, low)


@cuda_only
def test_cuda_first_launch_after_a_stream_waits_on_its_done_flag(tmp_path):
    """A stream made to wait (wait_flag) for a done flag before the process's first attn_fwd
    launch: under CUDA's lazy module loading that launch loaded its kernel, which may wait for
    the whole context, blocked stream included (the W = 2 NCCL hang: both ranks stuck in the
    launch). wait_flag loads the kernels first. Fresh process, CUDA_MODULE_LOADING=LAZY,
    bounded by a timeout."""
    script = tmp_path / "first_launch.py"
    script.write_text(
        "import torch\nfrom spava_ext import ops\n"
        "q = torch.randn(1, 300, 4, 128, device='cuda', dtype=torch.bfloat16)\n"
        "k = torch.randn(1, 300, 2, 128, device='cuda', dtype=torch.bfloat16)\n"
        "out = torch.empty_like(q)\n"
        "done = torch.zeros(2, dtype=torch.int32, device='cuda')\n"
        "x = torch.zeros(4, device='cuda')\n"
        "x.add_(1)  # the side stream's kernel, loaded before the wait\n"
        "side = torch.cuda.Stream()\n"
        "side.wait_stream(torch.cuda.current_stream())\n"
        "with torch.cuda.stream(side):\n"
        "    ops.wait_flag(done[1:2])\n"
        "    x.add_(1)\n"
        "ops.attn_fwd_group([ops.AttnProblem(q, [k], [k], [0], [0], out)], done=done)\n"
        "torch.cuda.synchronize()\n"
        "assert done[1].item() == 1 and x.tolist() == [2.0] * 4\n"
        "print('ok')\n")
    env = {**os.environ, "CUDA_MODULE_LOADING": "LAZY"}
    r = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr[-3000:]


def _plan_case(dtype, Hq, Hkv, q_len, full_len, seed):
    """Query rows over a full segment and a causal one over themselves (B = 1, D = 128)."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(1, q_len, Hq, 128, generator=g).to("cuda", dtype)
    kf = torch.randn(1, full_len, Hkv, 128, generator=g).to("cuda", dtype)
    vf = torch.randn(1, full_len, Hkv, 128, generator=g).to("cuda", dtype)
    kc = torch.randn(1, q_len, Hkv, 128, generator=g).to("cuda", dtype)
    vc = torch.randn(1, q_len, Hkv, 128, generator=g).to("cuda", dtype)
    return q, [kf, kc], [vf, vc], [0, 0], [FULL, 0]


@cuda_only
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("Hq,Hkv,q_len,full_len", [
    (16, 2, 1152, 3000),   # 144 units on 132 CTAs: a 12-unit tail, split 2-4 ways
    (16, 2, 4497, 0),      # causal only, 576 units of 1..36 tiles: the counter, no split
    (14, 2, 1300, 2999),   # 154 units, a partial last query tile, two tiles split
])
def test_cuda_plan_tail_split_and_counter(dtype, Hq, Hkv, q_len, full_len):
    """Launches of a few rounds: plan_attn_fwd may split the last query tiles (split-KV of the
    tail) and hand units out through the counter. The result equals the reference with any
    plan; with the plain plan (static rounds, no tail split: what a launch whose problem waits
    for a ready flag gets, here a flag already set) it is the same up to the merge's
    rounding: the first case's split rows differ in bits (the split ran), its other rows and
    every row of the counter-only case are equal bit for bit (a unit's arithmetic does not
    depend on which CTA runs it). The plans expected here are the model's
    (`python benchmarks/schedule_model.py --plan`, a port of attn_fwd_plan.cu)."""
    q, k, v, rb, dg = _plan_case(dtype, Hq, Hkv, q_len, full_len, seed=q_len)
    if full_len == 0:
        k, v, rb, dg = k[1:], v[1:], rb[1:], dg[1:]
    out, lse = ops.attn_fwd(q, k, v, rb, dg)
    ref, ref_lse = reference.attn_fwd(q, k, v, rb, dg)
    low, _ = reference.attn_fwd(q, k, v, rb, dg, upcast=False)
    assert_attn_close(f"auto plan {q_len} rows", out, ref, low)
    assert (lse.cpu() - ref_lse.cpu()).abs().max() < 1e-3
    out_s, lse_s = torch.empty_like(out), torch.empty_like(lse)
    ops.attn_fwd_group([ops.AttnProblem(q, k, v, rb, dg, out_s, lse_s, 0)],
                       ready=torch.ones(1, dtype=torch.int32, device="cuda"))
    assert_attn_close(f"static plan {q_len} rows", out_s, ref, low)
    if q_len == 1152:
        assert not torch.equal(out[:, :128], out_s[:, :128]), "the tail split did not run"
        assert torch.equal(out[:, 128:], out_s[:, 128:]), "only the first query tile splits"
    if q_len == 4497:
        assert torch.equal(out, out_s) and torch.equal(lse, lse_s)
