"""Argument cases for the fuzz of every op: tests/test_fuzz_ops.py draws them with hypothesis,
scripts/sanitize_case.py (mode ``fuzz``) replays a seeded corpus of them on CUDA.

A case draws its arguments from a ``Pick`` (integers in a range, an element of a list), runs
the op on ``torch.ops.spava`` directly and checks the outcome: either an error whose message
starts with ``spava::<op>:`` or a result equal to spava_ext.reference. Inputs are small
integers, so scores are exact and selections bit-identical across implementations.
"""

from __future__ import annotations

import random
from typing import Callable, Sequence

import torch

from spava_ext import reference

I64_MAX, I64_MIN = 2**63 - 1, -(2**63)
# int64 values that break naive bounds arithmetic (start + len, i + diag, sums).
EXTREMES = [I64_MAX, I64_MIN, I64_MAX - 10**6 + 1, I64_MAX - 5, 2**62, -(2**62), 2**31, -1]


class Pick:
    """The source of a case's choices."""

    def int(self, lo: int, hi: int) -> int:  # inclusive
        raise NotImplementedError

    def one(self, seq: Sequence):
        return seq[self.int(0, len(seq) - 1)]

    def flag(self) -> bool:
        return self.int(0, 1) == 1

    def rare(self) -> bool:
        """True one time in ten: the odds of each bad argument, so most cases run the op."""
        return self.int(0, 9) == 0

    def arg(self, lo: int, hi: int) -> int:
        """Mostly a value in [lo, hi], rarely an int64 extreme."""
        return self.one(EXTREMES) if self.rare() else self.int(lo, hi)

    def size(self, lo: int, hi: int) -> int:
        """A size in [lo, hi], rarely 0."""
        return 0 if self.rare() else self.int(lo, hi)


class RandomPick(Pick):
    def __init__(self, seed: int):
        self.rng = random.Random(seed)

    def int(self, lo: int, hi: int) -> int:
        return self.rng.randint(lo, hi)


def expect_error(op: str, fn: Callable[[], None]) -> bool:
    """Runs fn; True when it raised the op's own error, False when it returned."""
    try:
        fn()
    except (RuntimeError, ValueError, TypeError, IndexError) as e:
        msg = str(e)
        assert msg.startswith(f"spava::{op}:"), f"{type(e).__name__} not naming the op: {msg}"
        return True
    return False


def _ints(pick: Pick, shape, dtype, device) -> torch.Tensor:
    """Small integers in dtype; a non-contiguous view (last dim contiguous) half the time."""
    shape = list(shape)
    if pick.flag() and len(shape) >= 2:
        wide = shape[:-2] + [shape[-2] + 1, shape[-1] + 3]
        return torch.randint(-3, 4, wide, device=device).to(dtype)[..., 1:, :shape[-1]]
    return torch.randint(-3, 4, shape, device=device).to(dtype)


def _dtype(device: str):
    return torch.float32 if device == "cpu" else torch.float16


def _close(actual: torch.Tensor, expected: torch.Tensor, device: str) -> None:
    tol = 1e-5 if device == "cpu" else 1e-2  # fp16 inputs, outputs and P on CUDA
    torch.testing.assert_close(actual.float().cpu(), expected.float().cpu(), atol=tol, rtol=tol,
                               equal_nan=True)


def select_case(pick: Pick, device: str) -> None:
    dt = _dtype(device)
    B, nq, Hkv, G = pick.size(1, 2), pick.size(1, 3), pick.size(1, 2), pick.int(1, 2)
    D, Lk = pick.one([0, 3]) if pick.rare() else pick.one([8, 16]), pick.int(0, 40)
    C = pick.size(1, 3)
    starts = [pick.arg(0, Lk) for _ in range(C)]
    lens = [pick.arg(0, Lk - s + pick.rare() if 0 <= s <= Lk else Lk) for s in starts]
    passing_len = pick.arg(1, Lk + 2)
    pool_kernel = pick.one([0, 2, -1, I64_MAX]) if pick.rare() else pick.one([1, 3, 5])
    q = _ints(pick, (B, nq, Hkv * G + pick.rare() * (Hkv > 1), D), dt, device)
    k = _ints(pick, (B, Lk, Hkv, D), dt, device)
    v = _ints(pick, (B, Lk, Hkv, D), dt, device)
    fits = all(0 <= s <= Lk and 0 <= n <= Lk - s for s, n in zip(starts, lens))
    need = max((min(passing_len, n) for n in lens if fits), default=0)
    cap = max(0, need - pick.rare() + pick.int(0, 2)) if fits else pick.int(0, 3)
    indices = torch.full((C, B, Hkv, cap), -7, device=device,
                         dtype=torch.int if pick.rare() else torch.long)
    kv = torch.full((C, cap + pick.rare(), 2, B, Hkv, D), 9, dtype=dt, device=device)
    call = lambda: torch.ops.spava.select_passing(q, k, v, starts, lens, passing_len,  # noqa: E731
                                                  pool_kernel, indices, kv)
    if expect_error("select_passing", call):
        return
    assert fits, f"chunks {starts}, {lens} outside Lk = {Lk} were accepted"
    # A window wider than 2 Lk + 1 covers every chunk whole, as 2 Lk + 1 does (max_pool1d
    # would pad it).
    idx_ref, kv_ref = reference.select_passing(q, k, v, starts, lens, passing_len,
                                               min(pool_kernel, 2 * Lk + 1), capacity=cap)
    assert torch.equal(indices.cpu(), idx_ref.cpu())
    assert torch.equal(kv.cpu(), kv_ref.cpu())


def _attn_problem(pick: Pick, device: str, B: int, Hq: int, Hkv: int, D: int):
    """(q, k list, v list, row_begin, diag, out, lse or None) of one attn_fwd problem."""
    dt = _dtype(device)
    Lq, S = pick.int(0, 6), pick.int(0, 3)
    q = _ints(pick, (B, Lq, Hq, D), dt, device)
    k = [_ints(pick, (B, pick.int(0, 7), Hkv, D), dt, device) for _ in range(S)]
    v = [_ints(pick, t.shape, dt, device) for t in k]
    row_begin = [pick.arg(-2, Lq + 1) for _ in range(S)]
    diag = [pick.arg(-Lq - 1, 8) for _ in range(S)]
    out = torch.full((B, Lq + pick.rare(), Hq, D), 5.0, device=device,
                     dtype=pick.one([dt, torch.float32]))
    lse = torch.full((B, Hq, Lq), 5.0, device=device) if pick.flag() else None
    return q, k, v, row_begin, diag, out, lse


def _check_attn(problem, scale) -> None:
    q, k, v, row_begin, diag, out, lse = problem
    out_ref, lse_ref = reference.attn_fwd(q, k, v, row_begin, diag, scale)
    _close(out, out_ref, q.device.type)
    if lse is not None:
        _close(lse, lse_ref, q.device.type)


def _heads(pick: Pick):
    B, Hkv, G = pick.size(1, 2), pick.size(1, 2), pick.int(1, 2)
    return B, Hkv * G + pick.rare(), Hkv, 0 if pick.rare() else pick.one([8, 16, 64])


def _scale(pick: Pick):
    if pick.rare():
        return pick.one([0.0, -1.0, float("inf"), float("nan")])
    return pick.one([None, 0.5])


def attn_case(pick: Pick, device: str) -> None:
    problem = _attn_problem(pick, device, *_heads(pick))
    scale = _scale(pick)
    if expect_error("attn_fwd", lambda: torch.ops.spava.attn_fwd(*problem[:5], scale,
                                                                   *problem[5:])):
        return
    _check_attn(problem, scale)


def attn_group_case(pick: Pick, device: str) -> None:
    heads = _heads(pick)
    problems = [_attn_problem(pick, device, *heads) for _ in range(pick.size(1, 3))]
    P = len(problems)
    nseg = [len(p[1]) for p in problems]
    if P and pick.rare():  # miscounted segments
        nseg[pick.int(0, P - 1)] = pick.arg(-1, 4)
    ready = torch.ones(pick.size(3, 4), dtype=torch.int32, device=device)
    wait_for = [pick.arg(-1, 2) for _ in range(P)] if pick.flag() else []
    done = torch.zeros(2 * P + pick.rare(), dtype=torch.int32, device=device)
    scale = _scale(pick)
    flat = lambda i: [x for p in problems for x in p[i]]  # noqa: E731
    call = lambda: torch.ops.spava.attn_fwd_group(  # noqa: E731
        [p[0] for p in problems], nseg, flat(1), flat(2), flat(3), flat(4), scale,
        [p[5] for p in problems],
        [p[6] if p[6] is not None else torch.empty(0, device=device) for p in problems],
        ready=ready, wait_for=wait_for, done=done if pick.flag() else None,
        sm_budget=pick.arg(0, 200), spin_us=pick.arg(0, 100),
        timeout_s=pick.one([0.0, -1.0, 1e9, float("nan")]) if pick.rare() else 1.0)
    if expect_error("attn_fwd_group", call):
        return
    for p in problems:
        _check_attn(p, scale)


def merge_case(pick: Pick, device: str) -> None:
    n, B, R, H = pick.size(1, 3), pick.size(1, 2), pick.size(1, 3), pick.size(1, 2)
    D = pick.size(4, 8)
    outs = _ints(pick, (n, B, R, H, D), _dtype(device), device)
    lses = torch.randn(n, B, H, R + pick.rare(), device=device)
    lses[torch.rand_like(lses) < 0.3] = -float("inf")
    if pick.flag():  # strided lses
        lses = lses.transpose(-1, -2).contiguous().transpose(-1, -2)
    out = torch.full((B, R, H, D), 5.0, device=device, dtype=pick.one([_dtype(device),
                                                                         torch.float32]))
    lse = torch.full((B, H, R), 5.0, device=device) if pick.flag() else None
    if expect_error("merge_states", lambda: torch.ops.spava.merge_states(outs, lses, out, lse)):
        return
    out_ref, lse_ref = reference.merge_states(outs, lses)
    _close(out, out_ref, device)
    if lse is not None:
        _close(lse, lse_ref, device)


def flag_case(pick: Pick, device: str) -> None:
    n = pick.size(1, 3)
    flag = torch.ones(n, 2, dtype=torch.int64 if pick.rare() else torch.int32, device=device)
    flag = flag[:, pick.int(0, 1)] if pick.rare() else flag[:, 0].contiguous()  # strided
    if expect_error("wait_flag", lambda: torch.ops.spava.wait_flag(flag)):
        return
    flag.zero_()
    if expect_error("set_flag", lambda: torch.ops.spava.set_flag(flag)):
        raise AssertionError("set_flag refused a flag wait_flag took")
    assert flag.flatten()[0].item() == 1


CASES = {"select_passing": select_case, "attn_fwd": attn_case, "attn_fwd_group": attn_group_case,
         "merge_states": merge_case, "flags": flag_case}
